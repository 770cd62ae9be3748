"""Search over an :class:`IndexSnapshot`: exhaustive late interaction, and PLAID's staged pipeline.

Score convention: the late-interaction (MaxSim) score of a query against a document is the sum,
over the query's token vectors, of the maximum dot product with any token of the document. The
maximum is the true one (negative similarities count; nothing is clipped at 0). Query rows that
are all zero are dropped before scoring. Zero-length documents have no maximum and are never
returned.

PLAID pipeline for one query ``Q`` ``[Lq, dim]`` over centroids ``C`` ``[K, dim]``:

1. ``S = C @ Q.T`` ``[K, Lq]``; the top ``ncells`` centroids of each query token select inverted
   lists, whose documents are the candidates.
2. Pruned centroid interaction: each candidate scores ``sum_q max S[code, q]`` over its tokens
   whose centroid has ``max_q S[code, q] >= centroid_score_threshold``; the best ``ndocs`` stay.
3. Full centroid interaction (all codes) on those; the best ``max(pool, k)`` stay (``pool``
   defaults to ``ndocs // 4``).
4. Exact late interaction on the survivors' tokens: float16 originals when re-ranking, else the
   decompressed tokens.

Stages 2 and 3 read each document's distinct centroids (``IndexSnapshot.doc_centroids``) rather
than one code per token: a maximum ignores repeats, so the scores are the same from fewer rows.
All products and gathers run in torch on CPU; see ``centroid_score_table`` and ``summed_maxima``
for the measurements behind the choices.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flmr_rag.index.codec import ResidualCodec
from flmr_rag.index.ivf import ragged_ranges
from flmr_rag.index.snapshot import IndexSnapshot

# Exhaustive scoring reads documents in groups of about this many tokens.
_EXACT_CHUNK_TOKENS = 1 << 16

# From this many centroids on, S is computed in bfloat16 where the CPU supports it natively.
BFLOAT16_MIN_CENTROIDS = 1 << 14

# summed_maxima pads and gathers this many groups (documents) at a time.
_GROUPS_PER_GATHER = 512

# _probed_cells finds each query token's best centroids among the best blocks of this many.
_PROBE_BLOCK = 64


@dataclass(frozen=True)
class SearchParameters:
    """PLAID's knobs for one search.

    Attributes:
        ncells: inverted lists probed per query token (more: higher recall, slower).
        centroid_score_threshold: centroids whose best query similarity is below this value are
            ignored by the pruned stage (lower: higher recall, slower).
        ndocs: candidates kept after the pruned stage.
        pool: candidates kept after the full centroid interaction, which reach exact scoring;
            None means ``ndocs // 4``. At least ``k`` always reach it.
    """

    ncells: int
    centroid_score_threshold: float
    ndocs: int
    pool: int | None = None

    def final_pool(self, k: int) -> int:
        """Return how many candidates reach exact scoring for ``k`` results: ``max(pool, k)``."""
        return max(self.ndocs // 4 if self.pool is None else self.pool, k)


def default_parameters(k: int) -> SearchParameters:
    """Return the defaults for ``k`` as (ncells, centroid_score_threshold, ndocs, pool).

    k <= 10: (3, 0.45, 2048, 512); k <= 100: (4, 0.4, 4096, 1024); else (4, 0.4, max(4k, 4096), ndocs // 4).

    ColBERT's PLAID presets are (1, 0.5, 256, 64) and (2, 0.45, 1024, 256). They were raised after
    measuring Recall against exhaustive search on benchmarks/index_bench.py (10k clustered
    synthetic documents and 3,000 MiniLM-encoded docstrings, 2-bit residuals, re-ranking with the
    float16 originals): at k=10, (1, 0.5, 1024, 256) gave 0.989 / 0.925 (the MiniLM misses come
    from probing one cell), (4, 0.45, 1024, 256) gave 0.942 / 0.995 (more candidates ranked by
    coarse centroid scores push true neighbours out of a small pool), and (3, 0.45, 2048, 512)
    gave 0.991 / 0.995. At k=100, Recall@100 went from 0.50 / 0.85 with ColBERT's preset to
    0.67 / 0.999 with (4, 0.4, 4096, 1024).
    """
    if k <= 10:
        return SearchParameters(3, 0.45, 2048, 512)
    if k <= 100:
        return SearchParameters(4, 0.4, 4096, 1024)
    return SearchParameters(4, 0.4, max(4 * k, 4096))


def top_k(rows: np.ndarray, scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``k`` best ``(rows, scores)`` by descending score, ties by ascending row; -inf scores are dropped."""
    scores_np = scores.numpy().astype(np.float32, copy=False)
    finite = np.isfinite(scores_np)
    rows, scores_np = rows[finite], scores_np[finite]
    order = np.lexsort((rows, -scores_np))[:k]
    return rows[order], scores_np[order]


def exact_search(snapshot: IndexSnapshot, queries: list[torch.Tensor], k: int, use_originals: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Score every live document against every query exactly; return the top ``k`` rows and scores per query.

    Args:
        snapshot: the index view.
        queries: ``[Lq_i, dim]`` float32 tensors without zero rows, each non-empty.
        k: results per query.
        use_originals: read float16 originals (exact) instead of decompressing the codes.
    """
    if not queries:
        return []
    longest = max(query.shape[0] for query in queries)
    batch = torch.zeros(len(queries), longest, snapshot.dim, dtype=torch.float32)
    for index, query in enumerate(queries):
        batch[index, : query.shape[0]] = query

    flat_queries = batch.reshape(-1, snapshot.dim)
    scores = torch.full((len(queries), snapshot.num_rows), float("-inf"), dtype=torch.float32)
    live = snapshot.live_mask()
    row_start = 0
    for segment_index, segment in enumerate(snapshot.segments):
        segment_rows = np.arange(row_start, row_start + segment.num_documents)
        row_start += segment.num_documents
        for rows in _document_chunks(segment_rows, snapshot.doclens):
            if not live[rows].any():
                continue
            # Score the chunk's contiguous token range (deleted documents included, dropped below)
            # because a slice of the memory map is much cheaper than gathering rows.
            nonempty = rows[snapshot.doclens[rows] > 0]
            first = int(snapshot.doc_offsets[rows[0]] - snapshot.segment_token_starts[segment_index])
            last = int(snapshot.doc_offsets[rows[-1] + 1] - snapshot.segment_token_starts[segment_index])
            tokens = snapshot.token_range(segment_index, first, last, exact=use_originals)
            best = segment_maxima(flat_queries @ tokens.T, snapshot.doclens[nonempty])
            scores[:, nonempty] = torch.from_numpy(best.reshape(len(queries), longest, len(nonempty)).sum(axis=1))
    scores[:, torch.from_numpy(~live)] = float("-inf")

    all_rows = np.arange(snapshot.num_rows)
    return [top_k(all_rows, scores[index], k) for index in range(len(queries))]


def plaid_search(
    snapshot: IndexSnapshot,
    query: torch.Tensor,
    k: int,
    parameters: SearchParameters,
    rerank: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the PLAID pipeline for one query ``[Lq, dim]`` (no zero rows); return the top ``k`` rows and scores."""
    codec, ivf = snapshot.codec, snapshot.ivf
    assert codec is not None and ivf is not None
    query = query.contiguous()
    centroid_scores = centroid_score_table(codec, query)
    live = snapshot.live_mask()
    live_rows = snapshot.live_rows
    needed = min(k, len(live_rows))

    # Stage 1: candidates from the probed lists, probing more while they hold fewer than k live
    # documents. A collection no larger than the stage-2 budget is taken whole.
    pool = parameters.final_pool(k)
    budget = max(parameters.ndocs, pool)
    if len(live_rows) <= budget:
        candidates = live_rows
    else:
        ncells = max(1, parameters.ncells)
        while True:
            cells = _probed_cells(centroid_scores, ncells)
            candidates = np.unique(ivf.lookup(cells))
            candidates = candidates[live[candidates]]
            if len(candidates) >= needed or ncells >= codec.num_centroids:
                break
            ncells = min(codec.num_centroids, ncells * 2)

    # Stage 2: pruned centroid interaction.
    if len(candidates) > budget:
        kept_centroids = (centroid_scores.amax(dim=1) >= parameters.centroid_score_threshold).numpy()
        approximate = _centroid_interaction(snapshot, candidates, centroid_scores, kept_centroids)
        candidates = _best_rows(candidates, approximate, budget)

    # Stage 3: full centroid interaction.
    if len(candidates) > pool:
        approximate = _centroid_interaction(snapshot, candidates, centroid_scores, None)
        candidates = _best_rows(candidates, approximate, pool)

    # Stage 4: exact late interaction on the survivors.
    candidates = np.sort(candidates)
    lengths = snapshot.doclens[candidates]
    similarities = snapshot.similarities(snapshot.token_rows(candidates), query, exact=rerank)
    scores = summed_maxima(similarities, None, lengths)
    return top_k(candidates, torch.from_numpy(scores), k)


def centroid_score_table(codec: ResidualCodec, query: torch.Tensor) -> torch.Tensor:
    """Return ``S = C @ Q.T`` as ``[K, Lq]`` float32 (rows by centroid, so a document's centroids gather contiguous rows).

    With at least ``BFLOAT16_MIN_CENTROIDS`` centroids on a CPU that multiplies bfloat16 in
    hardware, the product runs in bfloat16: 3.5x faster at K = 32,768 on a 2-core AVX-512 CPU.
    S only steers the approximate stages, and Recall@10 was unchanged on the benchmark workloads.

    Every product of a search runs in torch: mixing numpy's BLAS threads with torch's OpenMP
    threads in one query made them spin against each other and tripled the latency on 2 cores.
    """
    if codec.num_centroids >= BFLOAT16_MIN_CENTROIDS and native_bfloat16():
        return (codec.centroids_bfloat16 @ query.bfloat16().T).float()
    return codec.centroids_torch @ query.T


@functools.cache
def native_bfloat16() -> bool:
    """Return True when this CPU multiplies bfloat16 in hardware (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _probed_cells(centroid_scores: torch.Tensor, ncells: int) -> np.ndarray:
    """Return the unique ids of the ``ncells`` best centroids of each query token (``centroid_scores`` is ``[K, Lq]``).

    ``topk`` along the centroid axis of a ``[K, Lq]`` table is slow in torch (about 1 ms at
    K = 32,768), while ``amax`` over blocks of consecutive centroids is cheap. A query token's
    ``ncells`` best centroids lie in its ``ncells`` blocks with the highest maxima, because a block
    holding one of them has a maximum at least that high. So ``topk`` runs on the block maxima,
    then on the centroids of the chosen blocks only. Ties may resolve differently from a plain ``topk``.
    """
    num_centroids, num_tokens = centroid_scores.shape
    if ncells >= num_centroids:
        return np.arange(num_centroids)
    num_blocks = num_centroids // _PROBE_BLOCK
    if num_blocks <= 4 * ncells:
        best = torch.topk(centroid_scores, ncells, dim=0, sorted=False).indices
        return np.unique(best.numpy())

    blocked = num_blocks * _PROBE_BLOCK
    block_maxima = centroid_scores[:blocked].view(num_blocks, _PROBE_BLOCK, num_tokens).amax(dim=1)
    best_blocks = torch.topk(block_maxima, ncells, dim=0, sorted=False).indices
    rows = (best_blocks[:, None, :] * _PROBE_BLOCK + torch.arange(_PROBE_BLOCK)[None, :, None]).reshape(-1, num_tokens)
    if blocked < num_centroids:
        # The centroids after the last whole block are always considered.
        rows = torch.cat([rows, torch.arange(blocked, num_centroids)[:, None].expand(-1, num_tokens)])
    best = torch.topk(centroid_scores.gather(0, rows), ncells, dim=0, sorted=False).indices
    return np.unique(rows.gather(0, best).numpy())


def _centroid_interaction(snapshot: IndexSnapshot, doc_rows: np.ndarray, centroid_scores: torch.Tensor, kept_centroids: np.ndarray | None) -> np.ndarray:
    """Return ``[len(doc_rows)]`` approximate scores ``sum_q max_c S[c, q]`` over each document's distinct centroids.

    ``centroid_scores`` is ``S`` ``[K, Lq]``. With ``kept_centroids`` (``[K]`` bool), only kept
    centroids count, and a document with none of them scores -inf. Every document must have tokens.
    """
    offsets, doc_centroids = snapshot.doc_centroids
    counts = offsets[doc_rows + 1] - offsets[doc_rows]
    centroids = doc_centroids[ragged_ranges(offsets[doc_rows], counts)]
    if kept_centroids is None:
        return summed_maxima(centroid_scores, centroids, counts)

    # Drop pruned centroids before gathering score rows, the costly step.
    selected = kept_centroids[centroids]
    counts = np.add.reduceat(selected, np.concatenate(([0], np.cumsum(counts[:-1]))), dtype=np.int64)
    scores = np.full(len(doc_rows), -np.inf, dtype=np.float32)
    present = counts > 0
    if present.any():
        scores[present] = summed_maxima(centroid_scores, centroids[selected], counts[present])
    return scores


def summed_maxima(table: torch.Tensor, rows: np.ndarray | None, counts: np.ndarray) -> np.ndarray:
    """Return, per group, the sum over ``table``'s columns of the maximum over the group's rows.

    Args:
        table: ``[R, Lq]`` float32 (token-by-query similarities, or centroid scores).
        rows: ``[sum(counts)]`` row indices into ``table``, grouped: group ``i`` owns the next
            ``counts[i]``. None means ``arange(R)``: the groups are consecutive rows of ``table``.
        counts: ``[G]`` group sizes, all positive.

    Returns:
        ``[G]`` float32: the late-interaction score of each group.

    Groups are taken in order of size, at most ``_GROUPS_PER_GATHER`` at a time. Each batch is
    padded to its largest group by repeating a group's last row, which leaves a maximum unchanged.
    One ``index_select`` gathers the batch and ``amax`` reduces it: on CPU this was several times
    faster than a segmented reduction. A batch whose padding would more than double its rows is
    split where the group size crosses a power of two.
    """
    if len(counts) == 0:
        return np.zeros(0, dtype=np.float32)
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    order = np.argsort(counts, kind="stable")
    result = np.empty(len(counts), dtype=np.float32)
    for groups in _size_batches(order, counts[order]):
        sizes = counts[groups]
        longest = int(sizes[-1])
        padded = starts[groups, None] + np.minimum(np.arange(longest), sizes[:, None] - 1)
        padded = padded.reshape(-1) if rows is None else np.asarray(rows, dtype=np.int64)[padded.reshape(-1)]
        gathered = table.index_select(0, torch.from_numpy(padded))
        result[groups] = gathered.view(len(groups), longest, -1).amax(dim=1).sum(dim=1).numpy()
    return result


def _size_batches(order: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Split groups sorted by ascending ``sizes`` into batches of at most ``_GROUPS_PER_GATHER`` with bounded padding."""
    batches = []
    for first in range(0, len(order), _GROUPS_PER_GATHER):
        chunk, chunk_sizes = order[first : first + _GROUPS_PER_GATHER], sizes[first : first + _GROUPS_PER_GATHER]
        if len(chunk) * int(chunk_sizes[-1]) <= 2 * int(chunk_sizes.sum()):
            batches.append(chunk)
            continue
        powers = 1 << np.arange(1, int(chunk_sizes[-1]).bit_length())
        batches.extend(part for part in np.split(chunk, np.searchsorted(chunk_sizes, powers)) if len(part))
    return batches


def segment_maxima(similarity: torch.Tensor | np.ndarray, lengths: np.ndarray, axis: int = 1) -> np.ndarray:
    """Return the maxima of ``similarity`` over consecutive groups of ``lengths`` entries along ``axis``.

    ``similarity`` is ``[R, sum(lengths)]`` for ``axis=1`` (result ``[R, len(lengths)]``) or
    ``[sum(lengths), R]`` for ``axis=0`` (result ``[len(lengths), R]``). Every length must be
    positive. ``np.maximum.reduceat`` is several times faster on CPU than a scatter-based reduction.
    """
    values = similarity.numpy() if isinstance(similarity, torch.Tensor) else similarity
    values = np.asarray(values, dtype=np.float32)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.maximum.reduceat(values, starts, axis=axis)


def _best_rows(rows: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """Return the ``count`` rows with the highest scores (all of them when there are fewer)."""
    if len(rows) <= count:
        return rows
    return rows[np.argpartition(-scores, count - 1)[:count]]


def _document_chunks(rows: np.ndarray, doclens: np.ndarray) -> list[np.ndarray]:
    """Split consecutive document rows into groups of about ``_EXACT_CHUNK_TOKENS`` tokens."""
    if len(rows) == 0:
        return []
    ends = np.cumsum(doclens[rows])
    boundaries = np.searchsorted(ends, np.arange(_EXACT_CHUNK_TOKENS, int(ends[-1]) + 1, _EXACT_CHUNK_TOKENS), side="left") + 1
    return [chunk for chunk in np.split(rows, np.unique(np.minimum(boundaries, len(rows)))) if len(chunk)]
