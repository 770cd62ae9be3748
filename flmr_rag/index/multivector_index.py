"""MultiVectorIndex: the public entry point of the PLAID-style late-interaction index."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr_rag.index.codec import check_nbits
from flmr_rag.index.errors import DuplicateIdError, IndexClosedError, IndexExistsError
from flmr_rag.index.manifest import FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE, read_manifest, write_manifest
from flmr_rag.index.search import SearchParameters, default_parameters, exact_search, plaid_search
from flmr_rag.index.snapshot import IndexSnapshot
from flmr_rag.index.writer import remove_unreferenced, write_add, write_compaction, write_delete, writer_lock

logger = logging.getLogger(__name__)

# Collections with at most this many live tokens are searched exhaustively when ``exact=None``.
# Exhaustive search over the float16 originals measured about 1.1-1.4 microseconds per token per
# query on a busy 2-core machine (benchmarks/RESULTS.md), so this bound keeps it near 40 ms.
EXACT_SEARCH_MAX_TOKENS = 32_768

SearchResults = list[tuple[list[str], np.ndarray]]


class MultiVectorIndex:
    """A persistent late-interaction index over documents given as packed token embeddings.

    Documents are stored compressed (centroid + residual codes, PLAID style) in immutable
    segments, optionally beside their float16 originals for exact re-scoring. ``add`` writes a
    segment and ``delete`` tombstones; each commits by atomically replacing ``manifest.json``.
    Search is thread-safe; an open index keeps the view it loaded until :meth:`reload` or its
    own writes.

    Scores are late-interaction (MaxSim) sums: for every non-zero query row, the maximum dot
    product with the document's tokens (the true maximum; no clipping at 0). Zero-length
    documents occupy an id and count in ``len()`` but are never returned by search.

    Example:
        >>> index = MultiVectorIndex.create("my-index", dim=128, nbits=2)
        >>> index.add(tokens, doclens=[64, 80], ids=["a", "b"])    # tokens: [144, 128]
        >>> [(ids, scores)] = index.search(query_tokens, k=10)     # query_tokens: [32, 128]
    """

    def __init__(self, snapshot: IndexSnapshot) -> None:
        """Wrap an opened snapshot; use :meth:`create` or :meth:`open` instead."""
        self._snapshot: IndexSnapshot | None = snapshot
        self._path = snapshot.directory
        self._write_lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        nbits: int = 2,
        *,
        keep_originals: bool = True,
        kmeans_niter: int = 4,
        seed: int = 0,
    ) -> MultiVectorIndex:
        """Create an empty index directory.

        Args:
            path: directory to create (or an existing directory without an index; other files in it are left alone).
            dim: embedding dimension of every token.
            nbits: bits per residual component, one of 1, 2, 4, 8 (more: larger, more accurate approximate scores).
            keep_originals: also store the float16 tokens (2 * dim bytes per token), which enables exact
                re-ranking of the final candidates and exact exhaustive search.
            kmeans_niter: k-means iterations when the codec is trained.
            seed: seed of sampling and k-means.

        Raises:
            IndexExistsError: ``path`` already contains an index.
            ValueError: invalid ``dim`` or ``nbits``.
        """
        path = Path(path)
        nbits = check_nbits(nbits)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim={dim!r} must be a positive integer")
        if (path / MANIFEST_FILE).exists():
            raise IndexExistsError(f"an index already exists at {path}; open it with MultiVectorIndex.open() or choose another path")
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "generation": 0,
            "dim": int(dim),
            "nbits": nbits,
            "keep_originals": bool(keep_originals),
            "settings": {"kmeans_niter": int(kmeans_niter), "seed": int(seed)},
            "codec": None,
            "ivf": None,
            "segments": [],
            "deleted": None,
        }
        with writer_lock(path):
            if (path / MANIFEST_FILE).exists():
                raise IndexExistsError(f"an index already exists at {path}; open it with MultiVectorIndex.open() or choose another path")
            write_manifest(path, manifest)
        return cls(IndexSnapshot.from_manifest(path, manifest, verify="sizes"))

    @classmethod
    def open(cls, path: str | Path, *, verify: str = "metadata") -> MultiVectorIndex:
        """Open an existing index.

        Args:
            path: the index directory.
            verify: "sizes" checks every file's size; "metadata" (default) also checks the SHA-256
                of every file except the bulk token arrays; "full" checks every SHA-256 (reads the whole index).

        Raises:
            IndexNotFoundError: no manifest at ``path``.
            IndexFormatError: not an index manifest, or written by a newer format version.
            IndexCorruptedError: a listed file is missing, truncated, unreadable or fails its checksum.
        """
        return cls(IndexSnapshot.load(Path(path), verify=verify))

    def reload(self) -> bool:
        """Switch to the latest committed state (e.g. after another process wrote); return True if it changed."""
        snapshot = self._current()
        latest = IndexSnapshot.load(self._path)
        if latest.generation == snapshot.generation:
            return False
        self._snapshot = latest
        return True

    def close(self) -> None:
        """Release the memory maps; later calls raise IndexClosedError."""
        self._snapshot = None

    def __enter__(self) -> MultiVectorIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        """The index directory."""
        return self._path

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._current().dim

    @property
    def nbits(self) -> int:
        """Bits per residual component."""
        return self._current().nbits

    def __len__(self) -> int:
        """Number of live documents (zero-length ones included)."""
        return self._current().num_live

    def ids(self) -> Iterator[str]:
        """Iterate over the ids of live documents in insertion order."""
        snapshot = self._current()
        return (snapshot.ids[row] for row in np.flatnonzero(~snapshot.deleted))

    def contains(self, document_id: str) -> bool:
        """Return True if ``document_id`` is a live document."""
        return document_id in self._current().row_of_id

    __contains__ = contains

    def stats(self) -> dict[str, Any]:
        """Return counts and on-disk sizes.

        Keys: ``num_documents`` (live), ``num_deleted``, ``num_tokens`` (stored), ``num_segments``,
        ``num_centroids``, ``dim``, ``nbits``, ``generation``, ``format_version``,
        ``keep_originals``, ``bytes`` (per file kind: codes, residuals, originals, doclens, ids,
        ivf, codec, tombstones), ``index_bytes`` (everything except originals), ``originals_bytes``,
        ``index_bytes_per_token``.
        """
        snapshot = self._current()
        manifest = snapshot.manifest
        by_kind: dict[str, int] = {}
        for kind, key in (("codec", "codec"), ("ivf", "ivf"), ("tombstones", "deleted")):
            if manifest[key] is not None:
                by_kind[kind] = sum(record["size"] for record in manifest[key]["files"].values())
        for segment in manifest["segments"]:
            for relative, record in segment["files"].items():
                kind = relative.rsplit("/", 1)[-1].removesuffix(".npy")
                by_kind[kind] = by_kind.get(kind, 0) + record["size"]
        originals = by_kind.get("originals", 0)
        index_bytes = sum(by_kind.values()) - originals
        num_tokens = int(snapshot.doclens.sum())
        return {
            "num_documents": snapshot.num_live,
            "num_deleted": int(snapshot.deleted.sum()),
            "num_tokens": num_tokens,
            "num_segments": len(snapshot.segments),
            "num_centroids": snapshot.codec.num_centroids if snapshot.codec is not None else 0,
            "dim": snapshot.dim,
            "nbits": snapshot.nbits,
            "generation": snapshot.generation,
            "format_version": manifest["format_version"],
            "keep_originals": bool(manifest["keep_originals"]),
            "bytes": by_kind,
            "index_bytes": index_bytes,
            "originals_bytes": originals,
            "index_bytes_per_token": index_bytes / num_tokens if num_tokens else 0.0,
        }

    # ----------------------------------------------------------------- writes

    def add(self, embeddings: np.ndarray | torch.Tensor, doclens: Sequence[int] | np.ndarray | torch.Tensor, ids: Sequence[str]) -> None:
        """Add documents given as packed token embeddings and commit.

        The first add that brings tokens trains the codec (k-means centroids and residual
        buckets) on them; later adds reuse it (see :meth:`compact` with ``retrain=True``).

        Args:
            embeddings: ``[T, dim]`` float16 or float32, the tokens of document 0, then document 1, ...
            doclens: ``[N]`` non-negative token counts summing to ``T``; 0 stores an empty document.
            ids: ``N`` distinct non-empty strings without NUL characters, none of them a live id.

        Raises:
            ValueError: bad shapes or dtypes, wrong dim, NaN or infinite values, bad ids (nothing is written).
            DuplicateIdError: an id repeats within ``ids`` or is already live (nothing is written).
        """
        snapshot = self._current()
        tokens, lengths, id_list = _validate_documents(embeddings, doclens, ids, snapshot.dim)
        started = time.perf_counter()

        def operation(current: IndexSnapshot) -> dict[str, Any]:
            existing = [document_id for document_id in id_list if document_id in current.row_of_id]
            if existing:
                raise DuplicateIdError(f"{len(existing)} ids are already in the index (first: {existing[0]!r}); delete them first or use new ids")
            return write_add(current, tokens, lengths, id_list)

        self._commit(operation)
        logger.info("added %d documents (%d tokens) to %s in %.2f s", len(id_list), len(tokens), self._path, time.perf_counter() - started)

    def delete(self, ids: Iterable[str]) -> int:
        """Tombstone the live documents among ``ids`` and commit; return how many were deleted.

        Unknown (or already deleted) ids are ignored; their count is logged.
        """
        requested = list(dict.fromkeys(ids))
        deleted_count = 0

        def operation(current: IndexSnapshot) -> dict[str, Any] | None:
            nonlocal deleted_count
            rows = np.array([current.row_of_id[i] for i in requested if i in current.row_of_id], dtype=np.int64)
            deleted_count = len(rows)
            if len(rows) < len(requested):
                logger.info("delete: %d of %d ids are not in the index and were ignored", len(requested) - len(rows), len(requested))
            if len(rows) == 0:
                return None
            return write_delete(current, rows)

        self._commit(operation)
        return deleted_count

    def compact(self, retrain: bool = False) -> None:
        """Rewrite the live documents into one segment, dropping deleted ones, and commit.

        Args:
            retrain: also retrain the centroids and buckets on the live tokens (from the float16
                originals when kept, else from the decompressed tokens) and re-encode everything.
                Useful after the collection grew far beyond the first batch the codec was trained on.
        """
        started = time.perf_counter()
        self._commit(lambda current: write_compaction(current, retrain))
        logger.info("compacted %s in %.2f s (retrain=%s)", self._path, time.perf_counter() - started, retrain)

    # ----------------------------------------------------------------- search

    def search(
        self,
        queries: np.ndarray | torch.Tensor,
        k: int = 10,
        mask: np.ndarray | torch.Tensor | None = None,
        exact: bool | None = None,
        ncells: int | None = None,
        centroid_score_threshold: float | None = None,
        ndocs: int | None = None,
        rerank: bool | None = None,
        pool: int | None = None,
    ) -> SearchResults:
        """Return the ``k`` best live documents for each query.

        Args:
            queries: ``[Lq, dim]`` (one query) or ``[B, Lq, dim]``, float16/float32. All-zero rows are ignored.
            k: results per query; fewer come back when fewer non-empty live documents exist.
            mask: ``[Lq]`` or ``[B, Lq]`` bool, True for rows to use (None uses all).
            exact: True scores every document exhaustively; False always uses the PLAID pipeline;
                None (default) is exhaustive when the index contains at most 32,768 live tokens.
            ncells, centroid_score_threshold, ndocs, pool: PLAID parameters (see ``SearchParameters``;
                ``pool`` candidates reach exact scoring); None takes the defaults for ``k``, except that
                ``pool`` is ``ndocs // 4`` when only ``ndocs`` is given
                (k <= 10: 3 / 0.45 / 2048 / 512; k <= 100: 4 / 0.4 / 4096 / 1024;
                else 4 / 0.4 / max(4k, 4096) / ndocs // 4).
            rerank: score the final candidates with the float16 originals (default: when kept).

        Returns:
            One ``(ids, scores)`` pair per query, best first; scores are float32. A query with no
            non-zero row gets ``([], empty array)``. A 2-D ``queries`` also returns a list of one pair.

        Raises:
            ValueError: bad shapes, wrong dim, non-finite values, ``k < 1``, ``ncells``, ``ndocs`` or
                ``pool`` below 1, or ``rerank=True`` on an index without originals.
        """
        snapshot = self._current()
        query_list = _validate_queries(queries, mask, snapshot.dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r} must be a positive integer")
        k = int(k)
        for name, value in (("ncells", ncells), ("ndocs", ndocs), ("pool", pool)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer or None (the default for k)")
        if rerank is None:
            rerank = snapshot.has_originals
        elif rerank and not snapshot.has_originals:
            raise ValueError(f"rerank=True needs float16 originals, but the index at {self._path} was created with keep_originals=False")

        results: SearchResults = [([], np.zeros(0, dtype=np.float32)) for _ in query_list]
        active = [position for position, query in enumerate(query_list) if query.shape[0] > 0]
        if not active or snapshot.codec is None or len(snapshot.live_rows) == 0:
            return results

        use_exact = exact if exact is not None else snapshot.num_live_tokens <= EXACT_SEARCH_MAX_TOKENS
        if use_exact:
            found = exact_search(snapshot, [query_list[position] for position in active], k, use_originals=snapshot.has_originals)
        else:
            defaults = default_parameters(k)
            parameters = SearchParameters(
                ncells=defaults.ncells if ncells is None else ncells,
                centroid_score_threshold=defaults.centroid_score_threshold if centroid_score_threshold is None else centroid_score_threshold,
                ndocs=defaults.ndocs if ndocs is None else ndocs,
                pool=defaults.pool if pool is None and ndocs is None else pool,
            )
            found = [plaid_search(snapshot, query_list[position], k, parameters, rerank) for position in active]

        for position, (rows, scores) in zip(active, found):
            results[position] = ([snapshot.ids[row] for row in rows], scores)
        return results

    # ----------------------------------------------------------------- internals

    def _current(self) -> IndexSnapshot:
        if self._snapshot is None:
            raise IndexClosedError(f"the index at {self._path} is closed; open it again with MultiVectorIndex.open()")
        return self._snapshot

    def _commit(self, operation: Any) -> None:
        """Run a write operation on the latest committed state under both locks, then commit its manifest."""
        self._current()
        with self._write_lock, writer_lock(self._path):
            current = self._current()
            if read_manifest(self._path)["generation"] != current.generation:
                current = IndexSnapshot.load(self._path, verify="sizes")
            remove_unreferenced(self._path, current.manifest)
            try:
                manifest = operation(current)
            except BaseException:
                remove_unreferenced(self._path, current.manifest)
                raise
            if manifest is None:
                self._snapshot = current
                return
            write_manifest(self._path, manifest)
            self._snapshot = IndexSnapshot.from_manifest(self._path, manifest, verify="sizes")
            remove_unreferenced(self._path, manifest)


def _to_numpy(array: Any, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype == torch.bfloat16:
            array = array.float()
        return array.numpy()
    return np.asarray(array)


def _validate_documents(embeddings: Any, doclens: Any, ids: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    tokens = _to_numpy(embeddings, "embeddings")
    if tokens.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"embeddings must be float16 or float32, got dtype {tokens.dtype}")
    if tokens.ndim != 2 or tokens.shape[1] != dim:
        raise ValueError(f"embeddings must have shape [num_tokens, {dim}] for this index, got {tuple(tokens.shape)}")
    tokens = np.ascontiguousarray(tokens, dtype=np.float32)
    if not np.isfinite(tokens).all():
        bad = int(np.flatnonzero(~np.isfinite(tokens).all(axis=1))[0])
        raise ValueError(f"embeddings contain NaN or infinite values (first in token row {bad}); nothing was added")

    lengths = _to_numpy(doclens, "doclens")
    if lengths.ndim != 1 or (lengths.size and not np.issubdtype(lengths.dtype, np.integer)):
        raise ValueError(f"doclens must be a 1-D sequence of integers, got shape {lengths.shape} and dtype {lengths.dtype}")
    lengths = lengths.astype(np.int64)
    if (lengths < 0).any():
        raise ValueError(f"doclens must be non-negative, got {int(lengths.min())}")
    if int(lengths.sum()) != len(tokens):
        raise ValueError(f"doclens sum to {int(lengths.sum())} but embeddings hold {len(tokens)} tokens")
    if len(lengths) == 0:
        raise ValueError("no documents to add: doclens and ids are empty")

    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, got a single string")
    id_list = list(ids)
    if len(id_list) != len(lengths):
        raise ValueError(f"got {len(id_list)} ids for {len(lengths)} documents")
    for document_id in id_list:
        if not isinstance(document_id, str) or not document_id or "\x00" in document_id:
            raise ValueError(f"document id {document_id!r} is invalid: ids must be non-empty strings without NUL characters")
    seen: set[str] = set()
    for document_id in id_list:
        if document_id in seen:
            raise DuplicateIdError(f"id {document_id!r} appears more than once in this add; ids must be unique")
        seen.add(document_id)
    return tokens, lengths, id_list


def _validate_queries(queries: Any, mask: Any, dim: int) -> list[torch.Tensor]:
    """Return one ``[Lq_i, dim]`` float32 tensor per query with masked and all-zero rows removed."""
    array = _to_numpy(queries, "queries")
    if array.ndim not in (2, 3) or array.shape[-1] != dim:
        raise ValueError(f"queries must have shape [Lq, {dim}] or [B, Lq, {dim}], got {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"queries must be float16 or float32, got dtype {array.dtype}")
    batch = np.ascontiguousarray(array if array.ndim == 3 else array[None], dtype=np.float32)
    if not np.isfinite(batch).all():
        raise ValueError("queries contain NaN or infinite values")

    keep = batch.any(axis=2)
    if mask is not None:
        mask_array = _to_numpy(mask, "mask").astype(bool)
        if mask_array.ndim == 1 and array.ndim == 2:
            mask_array = mask_array[None]
        if mask_array.shape != keep.shape:
            raise ValueError(f"mask must have shape {keep.shape if array.ndim == 3 else keep.shape[1:]}, got {mask_array.shape}")
        keep &= mask_array
    return [torch.from_numpy(batch[index][keep[index]]) for index in range(len(batch))]
