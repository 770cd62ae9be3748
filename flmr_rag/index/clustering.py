"""Centroid training: faiss k-means on a token sample, with PLAID's centroid count clamped to the sample."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from flmr_rag.index.codec import ResidualCodec, looks_unit_norm

logger = logging.getLogger(__name__)

# Training tokens sampled per centroid (faiss itself would sub-sample to 256).
MAX_POINTS_PER_CENTROID = 64

# From this many centroids on, k-means runs in two levels (see hierarchical_kmeans).
HIERARCHICAL_MIN_CENTROIDS = 2048

# Every centroid gets at least this many training tokens, so tiny collections get fewer centroids.
MIN_POINTS_PER_CENTROID = 4

# Held-out tokens used to fit the residual buckets.
MAX_HELDOUT_TOKENS = 50_000


def plaid_num_centroids(num_tokens: int) -> int:
    """Return PLAID's centroid count ``2 ** floor(log2(16 * sqrt(num_tokens)))`` (1 for no tokens)."""
    if num_tokens <= 0:
        return 1
    return 2 ** int(math.floor(math.log2(16 * math.sqrt(num_tokens))))


def choose_num_centroids(num_tokens: int) -> int:
    """Return PLAID's count clamped so that every centroid has 4 or more training tokens (at least 1)."""
    return max(1, min(plaid_num_centroids(num_tokens), num_tokens // MIN_POINTS_PER_CENTROID))


def sample_training_rows(num_tokens: int, num_centroids: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Choose token rows for k-means and for fitting the buckets.

    Returns:
        ``(train_rows, heldout_rows)``, both sorted int64. k-means gets up to 64 tokens per
        centroid. The held-out rows (up to 50,000) come from the remaining tokens, or from all
        tokens when k-means uses every one of them.
    """
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(num_tokens)
    train_count = min(num_tokens, num_centroids * MAX_POINTS_PER_CENTROID)
    train_rows = permutation[:train_count]
    rest = permutation[train_count:]
    if len(rest) == 0:
        rest = permutation
    heldout_rows = rest[:MAX_HELDOUT_TOKENS]
    return np.sort(train_rows), np.sort(heldout_rows)


def kmeans_centroids(sample: np.ndarray, num_centroids: int, niter: int, seed: int, normalize: bool) -> np.ndarray:
    """Run faiss k-means on ``sample`` ``[n, dim]``; return ``[num_centroids, dim]`` float32 centroids.

    Centroids of unit-vector data are renormalised to unit length, so that the most similar
    centroid (max dot product) is also the nearest one.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if num_centroids > len(sample):
        raise ValueError(f"cannot train {num_centroids} centroids on {len(sample)} tokens")
    if num_centroids >= HIERARCHICAL_MIN_CENTROIDS:
        centroids = hierarchical_kmeans(sample, num_centroids, niter, seed)
    else:
        centroids = flat_kmeans(sample, num_centroids, niter, seed)
    if normalize:
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        centroids = centroids / np.maximum(norms, 1e-12)
    return centroids


def flat_kmeans(sample: np.ndarray, num_centroids: int, niter: int, seed: int) -> np.ndarray:
    """Run one faiss k-means over ``sample`` ``[n, dim]`` float32; return ``[num_centroids, dim]``."""
    if num_centroids == 1:
        return sample.mean(axis=0, keepdims=True)
    kmeans = faiss.Kmeans(
        sample.shape[1],
        num_centroids,
        niter=niter,
        seed=seed,
        max_points_per_centroid=1 << 30,
        min_points_per_centroid=1,
        verbose=False,
    )
    kmeans.train(sample)
    return np.array(kmeans.centroids, dtype=np.float32).reshape(num_centroids, sample.shape[1])


def hierarchical_kmeans(sample: np.ndarray, num_centroids: int, niter: int, seed: int) -> np.ndarray:
    """Two-level k-means: about sqrt(K) coarse groups, then k-means inside each group.

    Each group gets a share of the K centroids proportional to its sample tokens (largest
    remainder, at least 1 per non-empty group, at most a quarter of its tokens). The cost per
    iteration is ``n * (G + K / G)`` distance computations instead of ``n * K``, which is what
    makes tens of thousands of centroids trainable on a CPU.
    """
    num_groups = 2 ** round(math.log2(math.sqrt(num_centroids)))
    with single_faiss_thread():
        coarse = flat_kmeans(sample, num_groups, niter, seed)
        index = faiss.IndexFlatL2(sample.shape[1])
        index.add(coarse)
        _, assignment = index.search(sample, 1)
        assignment = assignment[:, 0]
        sizes = np.bincount(assignment, minlength=num_groups)
        shares = _allocate(sizes, num_centroids)

        order = np.argsort(assignment, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        parts = []
        for group in np.flatnonzero(shares):
            members = sample[order[bounds[group] : bounds[group + 1]]]
            parts.append(flat_kmeans(members, int(shares[group]), niter, seed + int(group)))
    return np.concatenate(parts)


@contextmanager
def single_faiss_thread() -> Iterator[None]:
    """Run faiss single-threaded inside the block, then restore its thread count.

    faiss' OpenMP threads spin while they wait. When other processes shared the cores of a 2-core
    machine, this made two-level k-means 13x slower with 2 threads than with 1.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _allocate(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` centroids over groups proportionally to ``sizes`` (largest remainder).

    Every non-empty group gets at least one centroid and at most ``max(1, size // 4)``.
    """
    capacity = np.maximum(sizes // MIN_POINTS_PER_CENTROID, (sizes > 0).astype(np.int64))
    total = min(total, int(capacity.sum()))
    exact = sizes / max(1, sizes.sum()) * total
    shares = np.minimum(np.maximum(np.floor(exact).astype(np.int64), (sizes > 0).astype(np.int64)), capacity)
    # Hand out (or take back) the difference, largest remainder first, within capacity.
    remainder_order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while shares.sum() < total:
        room = remainder_order[shares[remainder_order] < capacity[remainder_order]]
        step = room[: total - int(shares.sum())]
        shares[step] += 1
    while shares.sum() > total:
        surplus = np.argsort(-(shares - exact), kind="stable")
        surplus = surplus[shares[surplus] > 1][: int(shares.sum()) - total]
        shares[surplus] -= 1
    return shares


def train_codec(
    train_tokens: np.ndarray,
    heldout_tokens: np.ndarray,
    num_centroids: int,
    nbits: int,
    niter: int = 4,
    seed: int = 0,
) -> ResidualCodec:
    """Train centroids on ``train_tokens`` and fit the residual buckets on ``heldout_tokens``.

    Args:
        train_tokens: ``[n, dim]`` float16/float32 sample, ``n >= num_centroids``.
        heldout_tokens: ``[m, dim]`` tokens for the bucket quantiles.
        num_centroids: K, e.g. from :func:`choose_num_centroids`.
        nbits: bits per residual component.
        niter: k-means iterations.
        seed: seed of k-means and of the quantile sample.
    """
    train_tokens = np.asarray(train_tokens, dtype=np.float32)
    normalize = looks_unit_norm(train_tokens)
    logger.info("training %d centroids on %d tokens (%d k-means iterations)", num_centroids, len(train_tokens), niter)
    centroids = kmeans_centroids(train_tokens, num_centroids, niter, seed, normalize)
    return ResidualCodec.fit(centroids, heldout_tokens, nbits, normalize, seed=seed)
