"""Push exports (consented data only) to a Hugging Face dataset repository.

`push_exports(store, repo_id, token)` writes each requested export format (by default the TRL
DPO, KTO and SFT ones) into a temporary folder and has `upload` make it the repo's `exports/`
folder. `hub_upload`, the default, creates the repo (private) if it does not exist, replaces
what an earlier push left there, and then squashes the repo's history into one commit and
deletes the stored files no commit refers to any more: a conversation erased in the app
leaves the Hub with the next push, not only the newest files. The app pushes every
--push-every-hours, and again as soon as anything is erased (`studio.periodic.Periodic`),
when --push-repo and HF_TOKEN are both set. Exports only ever hold consented data: the export
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
FOLDER = "exports"
Uploader = Callable[[Path, str, str, str], None]


def hub_upload(folder: Path, repo_id: str, message: str, token: str) -> None:
    """Make `folder` the repo's `exports/` (and nothing of earlier pushes left anywhere)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                      path_in_repo=FOLDER, delete_patterns="*", commit_message=message)
    # Earlier commits still hold erased conversations: one commit remains, and the large
    # files only those commits referred to are deleted for good (squashing alone keeps them).
    api.super_squash_history(repo_id, repo_type="dataset", commit_message=message)
    files = [entry for entry in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)
             if hasattr(entry, "blob_id")]
    if any(entry.lfs is None and getattr(entry, "xet_hash", None) for entry in files):
        # A stored file the listing gives no sha256 for: which stored files are stale cannot
        # be told, and deleting one the push uses would break it.
        log.warning("%s: not deleting old stored files, as some current ones have no sha256 "
                    "in the listing", repo_id)
        return
    current = {entry.lfs.sha256 for entry in files if entry.lfs is not None}
    stale = [lfs for lfs in api.list_lfs_files(repo_id, repo_type="dataset")
             if lfs.file_oid not in current]
    if stale:
        api.permanently_delete_lfs_files(repo_id, stale, repo_type="dataset")


def push_exports(store: Store, repo_id: str, token: str,
                 formats: Sequence[str] = DEFAULT_FORMATS, *,
                 upload: Uploader = hub_upload, now: datetime | None = None) -> str:
    """Export each format and upload the lot; returns the commit message, which dates it."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    message = f"VQA Studio exports of {stamp}"
    with tempfile.TemporaryDirectory(prefix="vqa-push-") as tmp:
        root = Path(tmp)
        for fmt in formats:
            export(store, fmt, root / fmt)
        upload(root, repo_id, message, token)
    log.info("pushed %s to %s/%s", ", ".join(formats), repo_id, FOLDER)
    return message
