"""Errors raised by the multi-vector index; each message names the file or value at fault."""

from __future__ import annotations

from pathlib import Path


class MultiVectorIndexError(Exception):
    """Base class of every error the index raises on its own."""


class IndexNotFoundError(MultiVectorIndexError, FileNotFoundError):
    """No index exists at the requested path (``manifest.json`` is missing)."""


class IndexExistsError(MultiVectorIndexError, FileExistsError):
    """``create`` was asked to write where an index already exists."""


class IndexFormatError(MultiVectorIndexError):
    """The manifest is not an index manifest, or it has a format version this code cannot read."""


class IndexCorruptedError(MultiVectorIndexError):
    """A file listed in the manifest is missing, truncated, unreadable or fails its checksum."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(
            f"index file {self.path} is corrupted: {problem}; restore the index directory from a backup "
            "or rebuild it from the source documents"
        )


class DuplicateIdError(MultiVectorIndexError, ValueError):
    """Document ids repeat within one ``add`` call or collide with ids already in the index."""


class IndexClosedError(MultiVectorIndexError, RuntimeError):
    """The index was used after ``close()``."""
