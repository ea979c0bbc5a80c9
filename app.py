"""VQA Studio: ask a vision-language model about images, keep what users think of its answers.

    python app.py [--model ID|PATH|tiny-random] [--quantize auto|4bit|8bit|none] [--db PATH] ...
    python app.py export --format swift-dpo --out DIR
    python app.py evaluate [--adapter NAME=PATH ...]
    python app.py train --method sft-then-dpo --out adapters/NAME
    python app.py backup DEST

Installed with `pip install .`, the same is the `vqa-studio` command.

Every flag can also be set through an environment variable named VQA_STUDIO_<FLAG> (for
example VQA_STUDIO_MODEL=tiny-random), which is how a hosted Space configures the app. Flags
win over the environment. `main()` reads the settings, builds the engine, the store and the
page, and launches; nothing heavy happens at import.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.protocol import Engine

APP_DIR = Path(__file__).resolve().parent
ENV_PREFIX = "VQA_STUDIO_"
RETENTION_CHECK_HOURS = 6
log = logging.getLogger("vqa_studio")


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with its default. The one source of truth for flags and env."""

    model: str = "auto"
    quantize: str = "auto"
    engine: str = "local"
    base_url: str = ""
    api_key: str = ""
    adapter: tuple[str, ...] = ()
    db: str = ""
    host: str = ""
    port: int = 0
    share: bool = False
    max_new_tokens_limit: int = 4096
    max_upload_mb: int = 20
    max_queue: int = 64
    max_batch: int = 8
    max_batch_tokens: int = 32768
    max_pixels: int = 1_003_520
    in_process: bool = False
    retention_days: int = 0
    public: bool = False
    admin_password: str = ""
    password_wait_s: int = 2
    persistent_root: str = "/data"
    snapshot_minutes: int = 5
    push_repo: str = ""
    push_every_hours: int = 24
    upload_mb_per_hour: int = 200
    min_free_disk_mb: int = 1024

    @property
    def persistent(self) -> bool:
        """Whether persistent storage (a Space's /data) is mounted and writable."""
        return _writable_dir(Path(self.persistent_root))

    @property
    def data_dir(self) -> Path:
        # Always on local disk (SQLite's WAL and locks need one): beside the app, so that a
        # checkout is self-contained; an installed package keeps it in the user's data folder.
        if (APP_DIR / "pyproject.toml").exists():
            return APP_DIR / "data"
        return Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share").expanduser() / "vqa-studio"

    @property
    def snapshot_dir(self) -> Path | None:
        """Where snapshots of the database and images go: persistent storage, when mounted."""
        return Path(self.persistent_root) / "vqa-studio" if self.persistent else None

    @property
    def db_path(self) -> Path:
        return Path(self.db).expanduser() if self.db else self.data_dir / "studio.db"

    @property
    def on_space(self) -> bool:
        return bool(os.environ.get("SPACE_ID"))

    @property
    def adapters(self) -> dict[str, str]:
        """Adapter name -> where it is loaded from, as `--adapter NAME=PATH` gave them."""
        return dict(item.split("=", 1) for item in self.adapter)


_HELP = {
    "model": "hub id, local folder, or tiny-random[:FAMILY]; auto picks a Qwen3.5 size "
             "for this hardware",
    "quantize": "auto (4-bit on CUDA, none on CPU), 4bit, 8bit or none",
    "engine": "local (transformers on this machine) or openai (an OpenAI-compatible server)",
    "base_url": "with --engine openai: the server's URL, ending in /v1",
    "api_key": "with --engine openai: the server's API key, if it needs one",
    "adapter": "NAME=PATH of a LoRA adapter to load on top of the model (repeatable; "
               "environment: comma-separated)",
    "db": "SQLite file, on local disk (default: data/studio.db beside the app)",
    "host": "address to listen on (default 127.0.0.1, or GRADIO_SERVER_NAME)",
    "port": "port to listen on (default 7860, or GRADIO_SERVER_PORT)",
    "share": "create a public Gradio share link",
    "max_new_tokens_limit": "upper bound for max new tokens, whatever a user asks",
    "max_upload_mb": "largest accepted upload, in MB",
    "max_queue": "how many requests may wait for the model before new ones are refused",
    "max_batch": "with the local engine: how many answers are decoded together (1: one at a "
                 "time)",
    "max_batch_tokens": "with the local engine: prompt plus max new tokens, summed over the "
                        "answers decoded together (bounds the cache memory)",
    "max_pixels": "pixel budget an image is resized to before it reaches the model",
    "in_process": "with the local engine: run the model in the web server's process, not in "
                  "a process of its own (always so on ZeroGPU)",
    "retention_days": "delete stored data older than this many days (0 keeps everything)",
    "public": "serve strangers: the data tab needs --admin-password (on by default on a "
              "Space, with --share, and on an address other than this machine's)",
    "admin_password": "password that unlocks the data tab when the app is public",
    "password_wait_s": "after three wrong admin passwords, seconds a client waits before its "
                       "next guess; doubled after each further wrong one (at most 15 minutes)",
    "persistent_root": "where persistent storage is mounted (a Space mounts it at /data): "
                       "snapshots of the database and images go there when it exists, and "
                       "are restored from there onto an empty local disk",
    "snapshot_minutes": "how often to snapshot the database into persistent storage (also "
                        "done at shutdown)",
    "push_repo": "Hugging Face dataset repo to push exports of consented data to "
                 "(token from HF_TOKEN)",
    "push_every_hours": "how often to push exports to --push-repo",
    "upload_mb_per_hour": "when public: most MB one client may upload per hour (0: no limit)",
    "min_free_disk_mb": "refuse uploads that would leave less than this many MB free on the "
                        "disk holding Gradio's upload folder",
}
_CHOICES = {"quantize": ("auto", "4bit", "8bit", "none"), "engine": ("local", "openai")}
# What `build_engine` and the store are built from: the settings a command that loads the
# model (evaluate) takes as flags, so it loads the model the app serves.
ENGINE_SETTINGS = ("model", "quantize", "engine", "base_url", "api_key", "adapter",
                   "max_new_tokens_limit", "max_queue", "max_batch", "max_batch_tokens",
                   "max_pixels", "db")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
COMMANDS = {
    "export": "write stored feedback as training data (DPO, KTO, SFT) for a trainer",
    "evaluate": "score the model and its adapters against the stored feedback",
    "train": "train a LoRA adapter on the consented feedback (SFT then DPO by default)",
    "backup": "copy the database and its images consistently, while the app runs",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the setting: no usage block, no traceback."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _prog() -> str:
    name = Path(sys.argv[0]).name
    return name if name in ("app.py", "vqa-studio") else "app.py"


def _from_environment(name: str, kind: str, raw: str, parser: _Parser):
    """The value of VQA_STUDIO_<NAME>, or a one-line error naming it."""
    variable = ENV_PREFIX + name.upper()
    if kind == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        parser.error(f"{variable}={raw!r} is not a yes/no value (use 1, true, yes, on or "
                     f"0, false, no, off)")
    if kind == "int":
        try:
            return int(raw.strip())
        except ValueError:
            parser.error(f"{variable}={raw!r} is not a whole number")
    if kind.startswith("tuple"):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


_ENVIRONMENT_NOTE = (f"Every flag can also be set with an environment variable "
                     f"{ENV_PREFIX}<FLAG>,\nfor example {ENV_PREFIX}MODEL=tiny-random; flags "
                     f"win over the environment.")


def settings_from(argv: list[str] | None = None, environ: dict | None = None) -> Settings:
    """Settings from the environment, overridden by command-line flags. A bad value, in a flag
    or a variable, stops with one line that names it."""
    commands = "\n".join(f"  {name:<10} {text}" for name, text in COMMANDS.items())
    parser = _Parser(
        prog=_prog(), description="VQA Studio: serve the page (default), or run a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands (each takes --help):\n{commands}\n\n{_ENVIRONMENT_NOTE}")
    add_setting_flags(parser)
    return settings_from_args(parser.parse_args(argv), parser, environ)


def add_setting_flags(parser: argparse.ArgumentParser,
                      names: tuple[str, ...] | None = None) -> None:
    """A flag for every setting, or for those `names`, with its help and choices."""
    for f in fields(Settings):
        if names is not None and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=_HELP[f.name])
        elif f.type.startswith("tuple"):
            parser.add_argument(flag, action="append", default=None, help=_HELP[f.name])
        else:
            kind = int if f.type == "int" else str
            parser.add_argument(flag, type=kind, default=None, choices=_CHOICES.get(f.name),
                                help=_HELP[f.name])


def settings_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                       environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags `add_setting_flags` parsed into `args` (a setting without a flag
    there comes from the environment or its default), over the environment. A bad value
    stops through `parser.error`, with one line that names it."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(Settings):
        value = getattr(args, f.name, None)
        if value is None and ENV_PREFIX + f.name.upper() in environ:
            value = _from_environment(f.name, f.type, environ[ENV_PREFIX + f.name.upper()],
                                      parser)
        if isinstance(value, list):
            value = tuple(value)
        if value is not None:
            values[f.name] = value
    # A Hugging Face Space, a share link or an address beyond this machine serves strangers:
    # public defaults (the data tab, everyone's data, behind the password) unless told
    # otherwise.
    host = values.get("host") or environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    beyond = host not in ("localhost", "::1") and not host.startswith("127.")
    if "public" not in values and (environ.get("SPACE_ID") or values.get("share") or beyond):
        values["public"] = True
    from engine.zerogpu import DEFAULT_MAX_NEW_TOKENS, on_zerogpu

    if on_zerogpu(environ):
        # Each answer borrows a GPU slice against the visitor's daily quota: shorter answers by
        # default; bf16, since a slice has 70 GB and 4-bit would only slow decoding down.
        values.setdefault("max_new_tokens_limit", DEFAULT_MAX_NEW_TOKENS)
        values.setdefault("quantize", "none")
    settings = Settings(**values)
    for name, choices in _CHOICES.items():
        if getattr(settings, name) not in choices:
            parser.error(f"--{name} ({ENV_PREFIX}{name.upper()}) must be one of "
                         f"{', '.join(choices)}, not {getattr(settings, name)!r}")
    if not 0 <= settings.port <= 65535:
        parser.error(f"--port ({ENV_PREFIX}PORT) must be between 1 and 65535")
    for name in ("max_upload_mb", "max_queue", "max_pixels", "push_every_hours",
                 "snapshot_minutes"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} ({ENV_PREFIX}{name.upper()}) must be at "
                         f"least 1")
    if settings.retention_days < 0:
        parser.error(f"--retention-days ({ENV_PREFIX}RETENTION_DAYS) cannot be negative")
    if settings.engine == "openai" and (not settings.base_url or settings.model == "auto"):
        parser.error("--engine openai needs --base-url URL and --model NAME (the served model)")
    if settings.max_new_tokens_limit < 16:
        parser.error("--max-new-tokens-limit must be at least 16")
    if settings.max_batch < 1 or settings.max_batch_tokens < 1:
        parser.error("--max-batch and --max-batch-tokens must be at least 1")
    named: set[str] = set()
    for item in settings.adapter:
        name, _, path = item.partition("=")
        if not name or not path:
            parser.error(f"--adapter takes NAME=PATH, not {item!r}")
        if name in named:  # one would silently replace the other
            parser.error(f"two adapters are named {name!r}: give each its own name")
        named.add(name)
    return settings


def build_engine(settings: Settings, *, batching: bool = True,
                 in_process: bool | None = None) -> Engine:
    """The engine the settings ask for; not loaded yet. `batching` False: one request at a time
    whatever --max-batch says. A local model runs in a process of its own (`engine.process`),
    so decoding never waits on the web server's interpreter, unless `in_process` (default:
    --in-process) keeps it here."""
    if settings.engine == "openai":
        from engine.remote import RemoteEngine

        return RemoteEngine(settings.base_url, settings.model, api_key=settings.api_key or None,
                            max_new_tokens_limit=settings.max_new_tokens_limit)
    from engine.batching import BatchLimits
    from engine.loading import default_model_id

    model = default_model_id() if settings.model == "auto" else settings.model
    kwargs = {"adapters": settings.adapters} if settings.adapters else {}
    limits = BatchLimits(max_batch_size=settings.max_batch if batching else 1,
                         max_batch_tokens=settings.max_batch_tokens)
    options = dict(quantize=settings.quantize, max_new_tokens_limit=settings.max_new_tokens_limit,
                   max_waiting=settings.max_queue, batch_limits=limits,
                   max_pixels=settings.max_pixels, **kwargs)
    if settings.in_process if in_process is None else in_process:
        from engine.local import LocalEngine

        return LocalEngine(model, **options)
    from engine.process import ProcessEngine

    return ProcessEngine(model, **options)


def serve(settings: Settings) -> None:
    from engine.zerogpu import ZeroGPUEngine, on_zerogpu

    zerogpu = on_zerogpu()
    if zerogpu:
        # First of all: `spaces` refuses to start once anything has touched CUDA (choosing the
        # default model reads the GPU's memory).
        from engine.zerogpu import enable

        enable()
    from engine.errors import StudioError
    from engine.images import ImagePolicy
    from storage import StorageError, Store
    from studio.turns import Studio
    from ui.common import start_queue
    from ui.page import CSS, build_page, page_uploads

    snapshots = settings.snapshot_dir
    if snapshots is not None:
        from storage.snapshots import restore

        restore(snapshots, settings.db_path)
    try:
        store = Store(settings.db_path)
    except StorageError as error:
        sys.exit(f"{_prog()}: {error}")
    snapshotting = start_snapshots(settings, store)
    if settings.retention_days:
        # Purged at start and then every few hours, so a long-running app keeps to the limit.
        from studio.periodic import Periodic

        store.purge_older_than(settings.retention_days)
        Periodic(lambda: store.purge_older_than(settings.retention_days), RETENTION_CHECK_HOURS,
                 "retention-purge").start()
    # On ZeroGPU the GPU exists only inside each request's own decorated call, in this
    # process, so requests cannot share decode steps run by a scheduler thread: one at a time
    # there, and in-process.
    engine = build_engine(settings, batching=not zerogpu, in_process=zerogpu or None)
    if zerogpu:
        engine = ZeroGPUEngine(engine, max_new_tokens_limit=settings.max_new_tokens_limit)
    start_push(settings, store)
    studio = Studio(engine, store, image_policy=ImagePolicy(
        max_bytes=settings.max_upload_mb * 1024 * 1024, max_pixels=settings.max_pixels))

    def load() -> None:
        try:
            engine.load()
        except StudioError as exc:  # the page stays up and shows the engine's load_error
            log.error("%s", exc)
        except Exception:  # a bug: the engine keeps its text for the page, the log the rest
            log.exception("unexpected failure while loading the model")

    if zerogpu:
        # ZeroGPU's CUDA emulation covers only the thread that imported `spaces`, and the
        # weights it finds at launch are the ones it prepares for the GPU workers: load here.
        load()
    else:
        # The page comes up at once; the model loads behind it and the page shows the progress.
        threading.Thread(target=load, name="load-model", daemon=True).start()
    uploads = page_uploads(settings)
    demo = build_page(studio, settings, uploads)
    log.info("storing data in %s", settings.db_path)
    start_queue(demo, settings.max_queue)
    # A stopping Space (or `kill`) sends SIGTERM: close the server as Ctrl-C does, so that the
    # last snapshot below is taken.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # No Gradio run history: it would keep every event's inputs (questions, corrections)
        # in the browser, without consent and out of reach of "Delete my data"; the studio
        # keeps its own history, with consent.
        demo.launch(server_name=settings.host or None, server_port=settings.port or None,
                    share=settings.share, run_history=False,
                    max_file_size=f"{settings.max_upload_mb}mb", show_error=False, css=CSS,
                    app_kwargs={"middleware": [upload_guard(settings),
                                               upload_tracker(uploads)]})
    except KeyboardInterrupt:  # stopped while still starting: as quiet as a stop once serving
        demo.close()
    finally:
        # Stops the engine's threads and connections before the last snapshot.
        engine.close()
        if snapshotting is not None:
            snapshotting.stop()
            from storage.snapshots import take_snapshot

            try:
                take_snapshot(store, snapshots)
            except Exception:  # the local database still has everything; say so and stop
                log.exception("the last snapshot into %s failed; the data is in %s",
                              snapshots, settings.db_path)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def start_snapshots(settings: Settings, store):
    """Snapshot the database into persistent storage every few minutes, when it is mounted."""
    if settings.snapshot_dir is None:
        return None
    from storage.snapshots import take_snapshot
    from studio.periodic import Periodic

    log.info("snapshots of %s go to %s every %d min", settings.db_path, settings.snapshot_dir,
             settings.snapshot_minutes)
    return Periodic(lambda: take_snapshot(store, settings.snapshot_dir),
                    settings.snapshot_minutes / 60, "snapshot").start()


def upload_guard(settings: Settings):
    """Uploads refused before the disk fills, and (public) beyond a volume per client."""
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    from ui.limits import UploadGuard

    per_client = settings.upload_mb_per_hour * 2**20 if settings.public else 0
    return Middleware(UploadGuard, folder=get_upload_folder(),
                      min_free_bytes=settings.min_free_disk_mb * 2**20,
                      per_client_bytes=per_client)


def upload_tracker(uploads):
    """Each upload counted, so that a file two visitors uploaded stays until both sent it."""
    from starlette.middleware import Middleware

    from ui.uploads import UploadTracker

    return Middleware(UploadTracker, uploads=uploads)


def start_push(settings: Settings, store):
    """Push exports to a dataset repo every few hours and after each erasure, when a repo and a
    token are given; returns the pushing chore (None when there is none)."""
    token = os.environ.get("HF_TOKEN", "")
    if not settings.push_repo:
        return
    if not token:
        log.warning("--push-repo is set but HF_TOKEN is not: exports will not be pushed")
        return
    from exports.push import push_exports
    from studio.periodic import Periodic

    pushing = Periodic(lambda: push_exports(store, settings.push_repo, token),
                       settings.push_every_hours, "push-exports").start()
    # Each push replaces the last one, so erased data leaves the repo with the next push:
    # push at once rather than hours later.
    store.on_erasure(pushing.wake)
    log.info("pushing exports to %s every %d h, and after each erasure", settings.push_repo,
             settings.push_every_hours)
    return pushing


def backup(argv: list[str]) -> None:
    from storage import Store

    parser = _Parser(prog=f"{_prog()} backup", description=COMMANDS["backup"])
    parser.add_argument("dest", help="path of the copy to write")
    parser.add_argument("--db", default=None, help="database to copy")
    args = parser.parse_args(argv)
    settings = settings_from(["--db", args.db] if args.db else [])
    from storage.errors import InvalidRequest, StorageError

    # recover=False: answers still streaming in the running app are not cut off.
    try:
        with Store.existing(settings.db_path, recover=False) as store:
            store.backup(Path(args.dest))
    except InvalidRequest as exc:  # refused before anything was written
        parser.error(str(exc))
    except StorageError as exc:
        parser.exit(1, f"{parser.prog}: incomplete: {exc}\n")
    except OSError as exc:
        parser.exit(1, f"{parser.prog}: cannot write {args.dest}: {exc.strerror}\n")
    print(f"backed up {settings.db_path} to {args.dest}")


def evaluate(argv: list[str]) -> None:
    """Score the model and its adapters against the stored feedback, or with --vqa on a VQA
    dataset; see docs/evaluation.md. The engine is the one the app would serve: built from
    the same settings, flags and environment."""
    if "--vqa" in argv or any(item.startswith("--vqa=") for item in argv):
        from training.vqa import main as vqa_main

        return vqa_main(argv)
    from engine.errors import StudioError
    from evaluation.command import add_arguments, options_from, run

    parser = _Parser(prog=f"{_prog()} evaluate", description=COMMANDS["evaluate"],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=_ENVIRONMENT_NOTE)
    add_arguments(parser)
    add_setting_flags(parser, ENGINE_SETTINGS)
    args = parser.parse_args(argv)
    settings = settings_from_args(args, parser)
    options = options_from(args, parser)
    from storage import InvalidRequest

    # A command line with no web server beside it: the model runs in this process.
    engine = build_engine(settings, in_process=True)
    try:
        run(engine, settings.db_path, options, settings.adapters)
    except InvalidRequest as error:  # the database, before the model was loaded
        parser.error(str(error))
    except StudioError as error:
        parser.exit(1, f"{parser.prog}: {error}\n")
    finally:
        engine.close()


def train(argv: list[str]) -> None:
    """Train a LoRA adapter on the stored feedback; see docs/training.md."""
    from training.train import main as train_main

    train_main(argv, default_db=settings_from([]).db_path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("GRADIO_WATCH_DIRS"):
        # Gradio's hot reload re-runs this module after each edit and expects a page built at
        # import, which would load the model again every time.
        sys.exit("`gradio app.py` (hot reload) is not supported: it would load the model again "
                 "after every edit. Run `python app.py` (or `vqa-studio`) with the same flags "
                 "and restart it after an edit.")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv and argv[0] == "backup":
        return backup(argv[1:])
    if argv and argv[0] == "export":
        from exports.formats import main as export_main

        return export_main(argv[1:], default_db=settings_from([]).db_path)
    if argv and argv[0] == "evaluate":
        return evaluate(argv[1:])
    if argv and argv[0] == "train":
        return train(argv[1:])
    serve(settings_from(argv))
    # Stopped, and everything is saved: leave now. Finalising the interpreter after a served
    # model takes seconds more, and a stopping Space does not wait long before killing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
