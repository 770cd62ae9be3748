"""A reader's consistent view of one committed manifest: codec, inverted lists, segments, tombstones.

Documents have global rows: the rows of segment 0, then segment 1, and so on, in manifest order.
Rows stay stable until a compaction rewrites the segments.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr_rag.index.codec import CODEC_FILES, ResidualCodec, packed_width
from flmr_rag.index.errors import IndexCorruptedError
from flmr_rag.index.ivf import IVF_FILES, InvertedLists, ragged_ranges
from flmr_rag.index.manifest import check_file, listed_files, read_manifest
from flmr_rag.index.segment import CODES_FILE, ORIGINALS_FILE, RESIDUALS_FILE, Segment, load_array

logger = logging.getLogger(__name__)

VERIFY_MODES = ("sizes", "metadata", "full")

# Bulk token arrays are hashed only by verify="full"; every other file is hashed by "metadata".
_BULK_FILES = (CODES_FILE, RESIDUALS_FILE, ORIGINALS_FILE)

_OPEN_ATTEMPTS = 3

# IndexSnapshot.similarities converts and multiplies tokens in chunks of this many.
SIMILARITY_CHUNK_TOKENS = 2048


@dataclass(frozen=True)
class IndexSnapshot:
    """Everything search needs from one manifest; immutable and safe to share between threads.

    Attributes:
        directory: the index directory.
        manifest: the manifest this view was loaded from.
        codec: the residual codec, or None while no token has been added.
        ivf: centroid -> document rows, or None without a codec.
        segments: the committed segments in row order.
        doclens: ``[N]`` int64 tokens per document (global rows).
        doc_offsets: ``[N + 1]`` int64 global token offset of each document.
        codes: ``[T]`` centroid id of every token, in global token order.
        deleted: ``[N]`` bool tombstones.
        ids: document id of every global row.
        row_of_id: id -> global row, live documents only.
        segment_token_starts: ``[S + 1]`` int64 global token offset of each segment.
    """

    directory: Path
    manifest: dict[str, Any]
    codec: ResidualCodec | None
    ivf: InvertedLists | None
    segments: tuple[Segment, ...]
    doclens: np.ndarray
    doc_offsets: np.ndarray
    codes: np.ndarray
    deleted: np.ndarray
    ids: list[str]
    row_of_id: dict[str, int]
    segment_token_starts: np.ndarray

    @property
    def generation(self) -> int:
        """Commit counter of the manifest."""
        return int(self.manifest["generation"])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.manifest["dim"])

    @property
    def nbits(self) -> int:
        """Bits per residual component."""
        return int(self.manifest["nbits"])

    @property
    def num_rows(self) -> int:
        """Stored documents, deleted ones included."""
        return len(self.doclens)

    @property
    def num_live(self) -> int:
        """Documents not deleted (zero-length ones included)."""
        return len(self.row_of_id)

    @property
    def has_originals(self) -> bool:
        """True when every segment keeps its float16 originals."""
        return all(segment.originals is not None for segment in self.segments)

    def live_mask(self) -> np.ndarray:
        """Return ``[N]`` bool, True for documents that are neither deleted nor empty (cached; do not modify)."""
        return self._live_mask

    @cached_property
    def _live_mask(self) -> np.ndarray:
        return ~self.deleted & (self.doclens > 0)

    @cached_property
    def live_rows(self) -> np.ndarray:
        """Ascending rows of the documents in :meth:`live_mask` (cached; do not modify)."""
        return np.flatnonzero(self.live_mask())

    @cached_property
    def num_live_tokens(self) -> int:
        """Tokens of live documents (cached)."""
        return int(self.doclens[~self.deleted].sum())

    @classmethod
    def load(cls, directory: Path, verify: str = "metadata") -> IndexSnapshot:
        """Read the manifest and open everything it lists.

        Args:
            directory: the index directory.
            verify: "sizes" checks file sizes; "metadata" also the SHA-256 of every file except
                the bulk token arrays (codes, residuals, originals); "full" hashes every file.

        Raises:
            IndexNotFoundError, IndexFormatError, IndexCorruptedError: see ``read_manifest`` and ``check_file``.
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify={verify!r} is not one of {VERIFY_MODES}")
        for attempt in range(_OPEN_ATTEMPTS):
            manifest = read_manifest(directory)
            try:
                return cls.from_manifest(directory, manifest, verify)
            except IndexCorruptedError:
                # A writer may have committed and removed old files between our two reads.
                if attempt + 1 == _OPEN_ATTEMPTS or read_manifest(directory)["generation"] == manifest["generation"]:
                    raise
                logger.debug("manifest of %s changed while opening; retrying", directory)
        raise AssertionError("unreachable")

    @classmethod
    def from_manifest(cls, directory: Path, manifest: dict[str, Any], verify: str) -> IndexSnapshot:
        """Open the files of an already-read manifest (see :meth:`load`)."""
        for relative, record in listed_files(manifest).items():
            bulk = relative.rsplit("/", 1)[-1] in _BULK_FILES
            check_file(directory, relative, record, hash_contents=verify == "full" or (verify == "metadata" and not bulk))

        dim = int(manifest["dim"])
        nbits = int(manifest["nbits"])
        codec = _load_codec(directory, manifest)
        segments = tuple(Segment.open(directory, entry, dim, packed_width(dim, nbits)) for entry in manifest["segments"])

        doclens = np.concatenate([segment.doclens for segment in segments]) if segments else np.zeros(0, dtype=np.int64)
        doc_offsets = np.zeros(len(doclens) + 1, dtype=np.int64)
        np.cumsum(doclens, out=doc_offsets[1:])
        segment_token_starts = np.zeros(len(segments) + 1, dtype=np.int64)
        np.cumsum([segment.num_tokens for segment in segments], out=segment_token_starts[1:])
        if len(segments) == 1:
            codes = segments[0].codes
        elif segments:
            codes = np.concatenate([segment.codes for segment in segments])
        else:
            codes = np.zeros(0, dtype=np.uint16)

        ids = [document_id for segment in segments for document_id in segment.ids]
        deleted = np.zeros(len(doclens), dtype=bool)
        if manifest["deleted"] is not None:
            deleted_path = directory / manifest["deleted"]["file"]
            rows = load_array(deleted_path, mmap=False)
            if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(doclens))):
                raise IndexCorruptedError(deleted_path, f"tombstones are not rows in [0, {len(doclens)})")
            deleted[rows] = True
        row_of_id = {document_id: row for row, document_id in enumerate(ids) if not deleted[row]}
        if len(row_of_id) != int(len(ids) - deleted.sum()):
            raise IndexCorruptedError(directory / "manifest.json", "two live documents share an id")

        ivf = _load_ivf(directory, manifest, codec, len(doclens))
        if codec is not None and len(codes) and int(codes.max()) >= codec.num_centroids:
            raise IndexCorruptedError(directory, f"a token code exceeds the {codec.num_centroids} centroids")
        return cls(directory, manifest, codec, ivf, segments, doclens, doc_offsets, codes, deleted, ids, row_of_id, segment_token_starts)

    @cached_property
    def doc_centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Return every document's distinct centroids in CSR form: ``(offsets [N + 1] int64, centroids [nnz] int32)``.

        Row ``r`` has the ascending centroids ``centroids[offsets[r]:offsets[r + 1]]``: the transpose
        of the inverted lists, computed on first use by one stable sort of their entries and cached.
        Centroid interaction reads these instead of per-token codes, which gives the same scores
        (a maximum ignores repeats) from fewer rows. Requires a codec.
        """
        assert self.ivf is not None
        docs = self.ivf.docs
        order = np.argsort(docs, kind="stable")
        list_of_entry = np.repeat(np.arange(self.ivf.num_centroids, dtype=np.int32), np.diff(self.ivf.offsets))
        offsets = np.zeros(self.num_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(docs, minlength=self.num_rows), out=offsets[1:])
        return offsets, list_of_entry[order]

    def token_rows(self, doc_rows: np.ndarray) -> np.ndarray:
        """Return the global token rows of ``doc_rows``, document after document."""
        return ragged_ranges(self.doc_offsets[doc_rows], self.doclens[doc_rows])

    def token_range(self, segment_index: int, first: int, last: int, exact: bool) -> torch.Tensor:
        """Return the segment's local tokens ``first .. last - 1`` as ``[n, dim]`` float32 (originals when ``exact``)."""
        segment = self.segments[segment_index]
        if exact:
            return _originals(segment)[first:last].float()
        assert self.codec is not None
        return self.codec.decompress(segment.codes[first:last], segment.residuals[first:last])

    def similarities(self, token_rows: np.ndarray, queries: torch.Tensor, exact: bool) -> torch.Tensor:
        """Return ``[len(token_rows), Lq]`` float32 dot products of the tokens at ``token_rows`` with ``queries`` ``[Lq, dim]``.

        Tokens are the originals when ``exact``, else decompressed. ``token_rows`` must be int64
        and sorted by segment (ascending global rows are). Originals are gathered and converted
        ``SIMILARITY_CHUNK_TOKENS`` at a time into per-thread buffers, so each float32 chunk is
        multiplied while it is still in the CPU cache and no large temporary is allocated. For a
        query's 32k tokens this was 0.7-2.5 ms faster than converting all of them first.
        """
        result = torch.empty(len(token_rows), queries.shape[0], dtype=torch.float32)
        halves, floats = _chunk_buffers(self.dim)
        bounds = np.searchsorted(token_rows, self.segment_token_starts)
        for index, segment in enumerate(self.segments):
            lo, hi = int(bounds[index]), int(bounds[index + 1])
            local = token_rows[lo:hi] - self.segment_token_starts[index]
            for first in range(0, hi - lo, SIMILARITY_CHUNK_TOKENS):
                rows = local[first : first + SIMILARITY_CHUNK_TOKENS]
                out = result[lo + first : lo + first + len(rows)]
                if not exact:
                    assert self.codec is not None
                    torch.mm(self.codec.decompress(segment.codes[rows], segment.residuals[rows]), queries.T, out=out)
                    continue
                torch.index_select(_originals(segment), 0, torch.from_numpy(rows), out=halves[: len(rows)])
                floats[: len(rows)].copy_(halves[: len(rows)])
                torch.mm(floats[: len(rows)], queries.T, out=out)
        return result

    def gather_tokens(self, token_rows: np.ndarray, exact: bool) -> torch.Tensor:
        """Return ``[len(token_rows), dim]`` float32 tokens: originals when ``exact``, else decompressed.

        ``token_rows`` must be sorted by segment (ascending global rows are) and int64.
        """
        parts = []
        bounds = np.searchsorted(token_rows, self.segment_token_starts)
        for index, segment in enumerate(self.segments):
            lo, hi = bounds[index], bounds[index + 1]
            if lo == hi:
                continue
            local = token_rows[lo:hi] - self.segment_token_starts[index]
            if exact:
                parts.append(_originals(segment).index_select(0, torch.from_numpy(local)).float())
            else:
                assert self.codec is not None
                parts.append(self.codec.decompress(segment.codes[local], segment.residuals[local]))
        if not parts:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        return torch.cat(parts) if len(parts) > 1 else parts[0]


_THREAD_BUFFERS = threading.local()


def _chunk_buffers(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return this thread's ``[SIMILARITY_CHUNK_TOKENS, dim]`` float16 and float32 buffers, made on first use."""
    buffers = getattr(_THREAD_BUFFERS, "by_dim", None)
    if buffers is None:
        buffers = _THREAD_BUFFERS.by_dim = {}
    if dim not in buffers:
        buffers[dim] = (
            torch.empty(SIMILARITY_CHUNK_TOKENS, dim, dtype=torch.float16),
            torch.empty(SIMILARITY_CHUNK_TOKENS, dim, dtype=torch.float32),
        )
    return buffers[dim]


def _originals(segment: Segment) -> torch.Tensor:
    """Return the segment's float16 originals as a tensor; raise ValueError when the segment keeps none."""
    if segment.originals_tensor is None:
        raise ValueError(
            f"segment {segment.name} keeps no float16 originals, so exact scoring is unavailable. "
            "Create the index with keep_originals=True, or search with rerank=False."
        )
    return segment.originals_tensor


def _load_codec(directory: Path, manifest: dict[str, Any]) -> ResidualCodec | None:
    entry = manifest["codec"]
    if entry is None:
        return None
    arrays = {name: load_array(directory / entry["dir"] / name, mmap=False) for name in CODEC_FILES}
    centroids = arrays[CODEC_FILES[0]]
    if centroids.shape != (entry["num_centroids"], manifest["dim"]):
        raise IndexCorruptedError(directory / entry["dir"] / CODEC_FILES[0], f"shape {centroids.shape}, expected ({entry['num_centroids']}, {manifest['dim']})")
    try:
        return ResidualCodec.load(arrays, int(manifest["nbits"]), bool(entry["normalize"]))
    except ValueError as error:
        raise IndexCorruptedError(directory / entry["dir"], str(error)) from error


def _load_ivf(directory: Path, manifest: dict[str, Any], codec: ResidualCodec | None, num_rows: int) -> InvertedLists | None:
    entry = manifest["ivf"]
    if entry is None or codec is None:
        return None
    offsets_path, docs_path = (directory / entry["dir"] / name for name in IVF_FILES)
    offsets = load_array(offsets_path, mmap=False)
    docs = load_array(docs_path, mmap=False)
    if offsets.shape != (codec.num_centroids + 1,) or offsets[0] != 0 or offsets[-1] != len(docs) or (np.diff(offsets) < 0).any():
        raise IndexCorruptedError(offsets_path, f"not a valid offsets array for {codec.num_centroids} lists over {len(docs)} entries")
    if len(docs) and (docs.min() < 0 or docs.max() >= num_rows):
        raise IndexCorruptedError(docs_path, f"document rows outside [0, {num_rows})")
    return InvertedLists(offsets.astype(np.int64), docs.astype(np.int32))
