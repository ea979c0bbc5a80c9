"""`pip install .` gives a working `vqa-studio` command.

The package is built from a copy of the sources and installed into a fresh virtual environment
whose only other packages are this test environment's (through a .pth file), with no package
index: the dependencies pyproject.toml declares must all be satisfied there, and nothing, torch
least of all, is downloaded again.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import tomllib
import urllib.request
import venv
from pathlib import Path

import pytest

from testing.app import ROOT, start_app


def sources() -> list[str]:
    """What the package is built from: the files pyproject.toml names, and nothing else of the
    checkout, so a module it forgets to declare fails here rather than after install."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return ["pyproject.toml", "README.md", "requirements.txt",
            *(f"{module}.py" for module in setuptools["py-modules"]),
            *top_level(setuptools["packages"])]


def top_level(packages: list[str]) -> list[str]:
    """The folders that hold `packages`: a subpackage travels with its parent's folder."""
    return list(dict.fromkeys(package.split(".")[0] for package in packages))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh environment with the package installed from its sources."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    source.mkdir()
    for name in sources():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    fresh = work / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    fresh_site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    (Path(fresh_site) / "test-environment.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
         "--no-build-isolation", str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    return fresh / "bin"


@pytest.mark.slow
def test_pip_install_gives_a_vqa_studio_command_that_serves_the_page(installed, tmp_path):
    # Run from an empty folder, so the checkout cannot be what is imported.
    where = subprocess.run([installed / "python", "-c", "import app; print(app.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent)

    app = start_app(tmp_path, program=[installed / "vqa-studio"], cwd=tmp_path)
    try:
        with urllib.request.urlopen(app.url + "config", timeout=10) as response:
            assert json.load(response)["title"] == "VQA Studio"
    finally:
        app.stop()
    assert app.db_path.exists()


@pytest.mark.slow
def test_the_installed_command_has_the_apps_commands(installed, tmp_path):
    shown = subprocess.run([installed / "vqa-studio", "--help"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: vqa-studio")
    for command in ("export", "evaluate", "backup"):
        helped = subprocess.run([installed / "vqa-studio", command, "--help"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr
