"""A summary of an index directory for ``flmr-rag info DIR`` (no model is loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def describe_index(path: str | Path) -> dict[str, Any]:
    """Return a flat summary of an index directory: model, dim, nbits, document, token and
    segment counts, interrupted writes and sizes in bytes.

    Raises:
        FileNotFoundError: ``path`` is not an index directory.
        ValueError, flmr_rag.index.MultiVectorIndexError: the settings or the index are unreadable.
    """
    from flmr_rag.docstore import DocumentStore
    from flmr_rag.index import MultiVectorIndex
    from flmr_rag.index_directory import DOCSTORE_FILE, IMAGES_FOLDER, INDEX_FOLDER, read_settings

    directory = Path(path)
    settings = read_settings(directory)
    with MultiVectorIndex.open(directory / INDEX_FOLDER) as index:
        stats = index.stats()
    with DocumentStore(directory / DOCSTORE_FILE, directory / IMAGES_FOLDER) as store:
        states = store.count_by_state()
    images = directory / IMAGES_FOLDER
    return {
        "index": str(directory),
        "model": settings["model"],
        "dim": settings["dim"],
        "nbits": settings["nbits"],
        "documents": states["committed"],
        "interrupted_writes": states["pending"] + states["deleting"],
        "deleted_not_compacted": stats["num_deleted"],
        "tokens": stats["num_tokens"],
        "segments": stats["num_segments"],
        "centroids": stats["num_centroids"],
        "index_bytes": stats["index_bytes"],
        "originals_bytes": stats["originals_bytes"],
        "stored_images": sum(1 for _ in images.glob("*.png")) if images.is_dir() else 0,
        "total_bytes": _directory_bytes(directory),
        "instructions": settings.get("instructions") or "defaults",
    }
