"""Push exports (consented data only) to a Hugging Face dataset repository.

`push_exports(store, repo_id, token)` writes each requested export format (by default the TRL
DPO, KTO and SFT ones) into a temporary folder and uploads it under `exports/<UTC timestamp>/`
in the dataset repo, so earlier pushes stay as they were; `hub_upload` creates the repo,
private, if it does not exist. The repository and the token are arguments: deciding when to
push is the caller's (the app pushes every --push-every-hours with `studio.periodic.Periodic`
when --push-repo and HF_TOKEN are both set). Exports only ever hold consented data: the export
itself keeps only conversations with a recorded consent.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from exports.formats import export
from storage.store import Store

log = logging.getLogger(__name__)

DEFAULT_FORMATS = ("trl-dpo", "trl-kto", "trl-sft")
Uploader = Callable[[Path, str, str, str], None]


def hub_upload(folder: Path, repo_id: str, path_in_repo: str, token: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                      path_in_repo=path_in_repo,
                      commit_message=f"VQA Studio export {path_in_repo}")


def push_exports(store: Store, repo_id: str, token: str,
                 formats: Sequence[str] = DEFAULT_FORMATS, *,
                 upload: Uploader = hub_upload, now: datetime | None = None) -> str:
    """Export each format and upload the lot; returns the folder path used in the repo."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    path_in_repo = f"exports/{stamp}"
    with tempfile.TemporaryDirectory(prefix="vqa-push-") as tmp:
        root = Path(tmp)
        for fmt in formats:
            export(store, fmt, root / fmt)
        upload(root, repo_id, path_in_repo, token)
    log.info("pushed %s to %s/%s", ", ".join(formats), repo_id, path_in_repo)
    return path_in_repo
