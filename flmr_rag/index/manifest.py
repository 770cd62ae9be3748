"""The manifest: one JSON file that names every array of a committed index, with sizes and SHA-256.

A commit writes the new manifest to a temporary file, fsyncs it, renames it over
``manifest.json`` (atomic on POSIX) and fsyncs the directory. Files are never modified after a
manifest lists them, so a reader holding an older manifest keeps a consistent view.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from flmr_rag.index.errors import IndexCorruptedError, IndexFormatError, IndexNotFoundError

MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "flmr-rag-multivector-index"
FORMAT_VERSION = 1
TEMP_SUFFIX = ".tmp"

_REQUIRED_KEYS = ("format", "format_version", "generation", "dim", "nbits", "keep_originals", "codec", "ivf", "segments", "deleted")
_HASH_CHUNK_BYTES = 1 << 22


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so that a rename or a new file survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """Return ``{"size": bytes, "sha256": hex}`` of a file as it is now."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def save_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as a new .npy file, fsync it and return its record."""
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return file_record(path)


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Commit ``manifest`` atomically: temporary file, fsync, rename over manifest.json, fsync the directory."""
    target = directory / MANIFEST_FILE
    temporary = directory / f"{MANIFEST_FILE}.{os.getpid()}{TEMP_SUFFIX}"
    data = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    fsync_directory(directory)


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and validate ``directory/manifest.json``.

    Raises:
        IndexNotFoundError: the directory or its manifest does not exist.
        IndexCorruptedError: the manifest is not valid JSON or lacks required keys.
        IndexFormatError: the file is not an index manifest or has a newer format version.
    """
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise IndexNotFoundError(f"no index at {directory}: the directory does not exist; create one with MultiVectorIndex.create()")
    if not path.is_file():
        raise IndexNotFoundError(f"no index at {directory}: {MANIFEST_FILE} is missing; create one with MultiVectorIndex.create()")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexCorruptedError(path, f"not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise IndexFormatError(f"{path} is not a flmr-rag index manifest (format {found!r}, expected {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise IndexCorruptedError(path, f"format_version is {version!r}, expected an integer")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format version {version}, but this flmr-rag reads versions up to {FORMAT_VERSION}; "
            "upgrade flmr-rag to open it"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise IndexCorruptedError(path, f"missing keys {missing}")
    return manifest


def listed_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return every file the manifest lists, as relative path -> record."""
    files: dict[str, dict[str, Any]] = {}
    for part in (manifest["codec"], manifest["ivf"], manifest["deleted"]):
        if part is not None:
            files.update(part["files"])
    for segment in manifest["segments"]:
        files.update(segment["files"])
    return files


def check_file(directory: Path, relative: str, record: dict[str, Any], hash_contents: bool) -> Path:
    """Check that a listed file exists with the recorded size (and SHA-256 when asked); return its path.

    Raises:
        IndexCorruptedError: naming the file and the mismatch.
    """
    path = directory / relative
    try:
        size = path.stat().st_size
    except FileNotFoundError as error:
        raise IndexCorruptedError(path, "the file is missing") from error
    if size != record["size"]:
        raise IndexCorruptedError(path, f"size is {size} bytes, the manifest records {record['size']} (truncated or overwritten)")
    if hash_contents and sha256_file(path) != record["sha256"]:
        raise IndexCorruptedError(path, "SHA-256 checksum does not match the manifest")
    return path
