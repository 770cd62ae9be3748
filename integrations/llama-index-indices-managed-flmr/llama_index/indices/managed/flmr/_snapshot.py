"""Copying a live FLMR index folder into a persist directory."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

# Written into every FLMR folder that ``persist`` creates, so a later persist may replace it.
SNAPSHOT_MARKER = ".llama-index-flmr-snapshot"


def snapshot_directory(source: Path, target: Path) -> None:
    """Copy the FLMR folder ``source`` to ``target``, replacing an earlier snapshot only.

    The copy is written beside ``target`` and renamed into place, and an earlier snapshot is
    removed only after the new one is in place. SQLite shared-memory files (``*-shm``) are
    skipped because SQLite rebuilds them from the write-ahead log on open.

    Images that flmr_rag stored itself live in ``images/`` and are recorded relative to the
    folder, so the copy refers to its own files.

    Raises:
        FileExistsError: ``target`` exists and was not written by ``persist``.
    """
    if target.exists() and not (target / SNAPSHOT_MARKER).is_file():
        raise FileExistsError(
            f"{target} already exists and was not written by FLMRIndex.persist; "
            "choose another persist_dir or remove that folder yourself"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("*-shm"))
    (staging / SNAPSHOT_MARKER).write_text("written by llama-index-indices-managed-flmr\n")

    if not target.exists():
        os.replace(staging, target)
        return
    previous = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
    os.replace(target, previous)
    os.replace(staging, target)
    shutil.rmtree(previous, ignore_errors=True)
