"""Unit tests of the index building blocks: residual codec, centroid training, inverted lists."""

from __future__ import annotations

import numpy as np
import pytest

from flmr_rag.index.clustering import _allocate, choose_num_centroids, hierarchical_kmeans, plaid_num_centroids, sample_training_rows, train_codec
from flmr_rag.index.codec import ResidualCodec, packed_width
from flmr_rag.index.ivf import InvertedLists, ragged_ranges


def unit_rows(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_codec_decodes_bucket_weights_exactly(nbits: int) -> None:
    rng = np.random.default_rng(nbits)
    dim = 12  # not a multiple of 8 // nbits for nbits=1, so padding is exercised
    centroids = unit_rows(rng, 4, dim)
    codec = ResidualCodec.fit(centroids, unit_rows(rng, 500, dim), nbits, normalize=False)
    tokens = unit_rows(rng, 50, dim)

    codes, packed = codec.compress(tokens)
    decoded = codec.decompress(codes, packed).numpy()

    expected_buckets = np.searchsorted(codec.bucket_cutoffs, tokens - codec.centroids[codes.astype(np.int64)], side="right")
    assert packed.shape == (50, packed_width(dim, nbits))
    np.testing.assert_allclose(decoded - codec.centroids[codes.astype(np.int64)], codec.bucket_weights[expected_buckets], atol=1e-6)


def test_codec_error_shrinks_with_more_bits() -> None:
    rng = np.random.default_rng(0)
    centroids = unit_rows(rng, 16, 32)
    tokens = unit_rows(rng, 400, 32)
    errors = []
    for nbits in (1, 2, 4, 8):
        codec = ResidualCodec.fit(centroids, tokens, nbits, normalize=True)
        decoded = codec.decompress(*codec.compress(tokens)).numpy()
        errors.append(float(np.linalg.norm(decoded - tokens, axis=1).mean()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.05


def test_codec_assigns_nearest_centroid() -> None:
    rng = np.random.default_rng(1)
    centroids = unit_rows(rng, 8, 16)
    codec = ResidualCodec.fit(centroids, centroids, 2, normalize=True)
    noisy = codec.centroids + 0.01 * rng.standard_normal(codec.centroids.shape).astype(np.float32)
    assert codec.assign(noisy).tolist() == list(range(8))


def test_plaid_num_centroids_rule() -> None:
    assert [plaid_num_centroids(n) for n in (15, 100_000, 640_000)] == [32, 4096, 8192]


def test_choose_num_centroids_clamps_to_sample() -> None:
    assert [choose_num_centroids(n) for n in (1, 7, 15, 640_000)] == [1, 1, 3, 8192]


def test_train_codec_single_token() -> None:
    token = unit_rows(np.random.default_rng(2), 1, 16)
    codec = train_codec(token, token, num_centroids=1, nbits=2)
    decoded = codec.decompress(*codec.compress(token)).numpy()
    np.testing.assert_allclose(decoded, token, atol=1e-3)


def test_sample_training_rows_disjoint_when_possible() -> None:
    train, heldout = sample_training_rows(10_000, 16, seed=0)
    assert len(train) == 16 * 64
    assert len(np.intersect1d(train, heldout)) == 0


def test_hierarchical_kmeans_returns_requested_count() -> None:
    sample = unit_rows(np.random.default_rng(3), 4000, 16)
    assert hierarchical_kmeans(sample, 256, niter=2, seed=0).shape == (256, 16)


def test_allocate_respects_total_and_capacity() -> None:
    shares = _allocate(np.array([100, 8, 0, 40]), 30)
    assert int(shares.sum()) == 30
    assert shares[2] == 0
    assert shares[1] <= 2


def test_ragged_ranges_concatenates() -> None:
    assert ragged_ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]


def test_inverted_lists_match_naive_build() -> None:
    rng = np.random.default_rng(4)
    doclens = rng.integers(0, 6, 40)
    codes = rng.integers(0, 7, int(doclens.sum()))
    lists = InvertedLists.build(codes, doclens, first_doc=10, num_centroids=7)

    owners = np.repeat(np.arange(10, 50), doclens)
    for centroid in range(7):
        expected = sorted(set(owners[codes == centroid].tolist()))
        assert lists.docs[lists.offsets[centroid] : lists.offsets[centroid + 1]].tolist() == expected


def test_inverted_lists_merge_equals_joint_build() -> None:
    rng = np.random.default_rng(5)
    first_lens, second_lens = rng.integers(1, 5, 30), rng.integers(1, 5, 20)
    first_codes = rng.integers(0, 9, int(first_lens.sum()))
    second_codes = rng.integers(0, 9, int(second_lens.sum()))

    merged = InvertedLists.build(first_codes, first_lens, 0, 9).merge(InvertedLists.build(second_codes, second_lens, 30, 9))
    joint = InvertedLists.build(np.concatenate([first_codes, second_codes]), np.concatenate([first_lens, second_lens]), 0, 9)

    assert merged.offsets.tolist() == joint.offsets.tolist()
    assert merged.docs.tolist() == joint.docs.tolist()


def test_inverted_lists_lookup() -> None:
    lists = InvertedLists.build(np.array([0, 1, 1, 2]), np.array([2, 2]), 0, 3)
    assert lists.lookup(np.array([1, 2])).tolist() == [0, 1, 1]
