"""Immutable segments: the compressed tokens of one batch of documents, as memory-mapped .npy files.

A segment directory contains

- ``codes.npy``      ``[T]`` uint16 or int32, the centroid of every token;
- ``residuals.npy``  ``[T, ceil(dim * nbits / 8)]`` uint8, packed residual buckets;
- ``doclens.npy``    ``[N]`` int32, tokens per document (documents are packed end to end);
- ``ids.npy``        uint8, the UTF-8 document ids joined by NUL bytes;
- ``originals.npy``  ``[T, dim]`` float16, the tokens as given (only when originals are kept).

A segment is written once, fsynced, and listed by a manifest; it is never modified afterwards.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr_rag.index.errors import IndexCorruptedError
from flmr_rag.index.manifest import file_record, fsync_file

CODES_FILE = "codes.npy"
RESIDUALS_FILE = "residuals.npy"
DOCLENS_FILE = "doclens.npy"
IDS_FILE = "ids.npy"
ORIGINALS_FILE = "originals.npy"

ID_SEPARATOR = "\x00"


def load_array(path: Path, mmap: bool) -> np.ndarray:
    """Load a .npy file (memory-mapped when ``mmap``), never unpickling.

    Raises:
        IndexCorruptedError: the file cannot be parsed as a .npy array.
    """
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as error:
        if mmap and "empty" in str(error).lower():
            return load_array(path, mmap=False)
        raise IndexCorruptedError(path, f"not a readable .npy array ({_numpy_reason(error)})") from error
    except (OSError, EOFError) as error:
        raise IndexCorruptedError(path, f"not a readable .npy array ({_numpy_reason(error)})") from error


def _numpy_reason(error: Exception) -> str:
    """Return numpy's load error on one line, without its advice to unpickle the file."""
    text = str(error)
    if "pickled" in text:
        # numpy reads any file without the .npy magic bytes as a pickle and says so.
        return "the file does not start with a .npy header"
    text = text.split("If you trust the file", 1)[0]
    return " ".join(text.split()).rstrip(" (")


def encode_ids(ids: list[str]) -> np.ndarray:
    """Return the ids joined by NUL as a uint8 array."""
    return np.frombuffer(ID_SEPARATOR.join(ids).encode("utf-8"), dtype=np.uint8)


def decode_ids(blob: np.ndarray, expected: int, path: Path) -> list[str]:
    """Split a NUL-joined uint8 blob back into ``expected`` ids."""
    try:
        ids = bytes(blob).decode("utf-8").split(ID_SEPARATOR)
    except UnicodeDecodeError as error:
        raise IndexCorruptedError(path, f"document ids are not valid UTF-8 ({error})") from error
    if expected == 0:
        ids = []
    if len(ids) != expected:
        raise IndexCorruptedError(path, f"contains {len(ids)} document ids, but the manifest records {expected}")
    return ids


class SegmentWriter:
    """Writes one new segment directory; token arrays are filled chunk by chunk through memory maps."""

    def __init__(self, directory: Path, num_tokens: int, dim: int, residual_width: int, code_dtype: np.dtype, keep_originals: bool) -> None:
        directory.mkdir(parents=True, exist_ok=False)
        self.directory = directory
        self.num_tokens = num_tokens
        self._arrays: dict[str, np.ndarray] = {
            CODES_FILE: self._create(CODES_FILE, code_dtype, (num_tokens,)),
            RESIDUALS_FILE: self._create(RESIDUALS_FILE, np.dtype(np.uint8), (num_tokens, residual_width)),
        }
        if keep_originals:
            self._arrays[ORIGINALS_FILE] = self._create(ORIGINALS_FILE, np.dtype(np.float16), (num_tokens, dim))

    def write_tokens(self, start: int, codes: np.ndarray, residuals: np.ndarray, originals: np.ndarray | None) -> None:
        """Store the rows ``start .. start + len(codes) - 1``."""
        stop = start + len(codes)
        if len(codes):
            self._arrays[CODES_FILE][start:stop] = codes
            self._arrays[RESIDUALS_FILE][start:stop] = residuals
            if ORIGINALS_FILE in self._arrays and originals is not None:
                self._arrays[ORIGINALS_FILE][start:stop] = originals

    def finish(self, doclens: np.ndarray, ids: list[str], name: str) -> dict[str, Any]:
        """Write doclens and ids, fsync everything and return the segment's manifest entry."""
        names = list(self._arrays)
        for array in self._arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        self._arrays.clear()
        np.save(self.directory / DOCLENS_FILE, np.asarray(doclens, dtype=np.int32))
        np.save(self.directory / IDS_FILE, encode_ids(ids))
        files = {}
        for file_name in [*names, DOCLENS_FILE, IDS_FILE]:
            path = self.directory / file_name
            fsync_file(path)
            files[f"{name}/{file_name}"] = file_record(path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return {
            "dir": name,
            "num_documents": len(ids),
            "num_tokens": self.num_tokens,
            "has_originals": ORIGINALS_FILE in names,
            "files": files,
        }

    def _create(self, file_name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        path = self.directory / file_name
        if int(np.prod(shape)) == 0:
            empty = np.zeros(shape, dtype=dtype)
            np.save(path, empty)
            return empty
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


@dataclass(frozen=True)
class Segment:
    """A committed segment, opened read-only.

    Attributes:
        name: directory name inside the index.
        codes: ``[T]`` memory-mapped centroid ids.
        residuals: ``[T, width]`` memory-mapped packed residuals.
        originals: ``[T, dim]`` memory-mapped float16 tokens, or None when not kept.
        doclens: ``[N]`` int64 token counts (in memory).
        ids: the N document ids.
        originals_tensor: a torch view of ``originals`` sharing its memory map (read-only by
            contract: nothing may write to it), or None. ``index_select`` on it gathers rows
            several times faster than numpy's fancy indexing of the memory map.
    """

    name: str
    codes: np.ndarray
    residuals: np.ndarray
    originals: np.ndarray | None
    doclens: np.ndarray
    ids: list[str]
    originals_tensor: torch.Tensor | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "originals_tensor", None if self.originals is None else _shared_tensor(self.originals))

    @property
    def num_documents(self) -> int:
        """Documents stored in the segment, deleted ones included."""
        return len(self.doclens)

    @property
    def num_tokens(self) -> int:
        """Tokens stored in the segment."""
        return len(self.codes)

    @classmethod
    def open(cls, index_dir: Path, entry: dict[str, Any], dim: int, residual_width: int) -> Segment:
        """Open a segment listed in the manifest and check its shapes against the entry.

        Raises:
            IndexCorruptedError: a file is unreadable or its shape disagrees with the manifest.
        """
        directory = index_dir / entry["dir"]
        num_tokens = int(entry["num_tokens"])
        num_documents = int(entry["num_documents"])
        codes = load_array(directory / CODES_FILE, mmap=True)
        residuals = load_array(directory / RESIDUALS_FILE, mmap=True)
        doclens = load_array(directory / DOCLENS_FILE, mmap=False).astype(np.int64)
        blob = load_array(directory / IDS_FILE, mmap=False)
        originals = load_array(directory / ORIGINALS_FILE, mmap=True) if entry.get("has_originals") else None

        _expect_shape(directory / CODES_FILE, codes, (num_tokens,))
        _expect_shape(directory / RESIDUALS_FILE, residuals, (num_tokens, residual_width))
        _expect_shape(directory / DOCLENS_FILE, doclens, (num_documents,))
        if originals is not None:
            _expect_shape(directory / ORIGINALS_FILE, originals, (num_tokens, dim))
        if int(doclens.sum()) != num_tokens or (doclens < 0).any():
            raise IndexCorruptedError(directory / DOCLENS_FILE, f"document lengths sum to {int(doclens.sum())}, expected {num_tokens} tokens")
        ids = decode_ids(blob, num_documents, directory / IDS_FILE)
        return cls(entry["dir"], codes, residuals, originals, doclens, ids)


def _shared_tensor(array: np.ndarray) -> torch.Tensor:
    """Return a tensor sharing ``array``'s memory, also when the array is a read-only memory map.

    NOTE: ``warnings.catch_warnings`` swaps the process-wide filters, so a warning raised by another
    thread while a segment opens may be hidden.
    """
    with warnings.catch_warnings():
        # torch warns that it cannot protect read-only memory. The segment never writes to it.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _expect_shape(path: Path, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(array.shape) != shape:
        raise IndexCorruptedError(path, f"array shape is {tuple(array.shape)}, the manifest implies {shape}")
