"""The building blocks of the PLAID stages against plain per-document loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flmr_rag.index import MultiVectorIndex, search
from flmr_rag.index.search import _centroid_interaction, _probed_cells, _size_batches, summed_maxima


def naive_summed_maxima(table: np.ndarray, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One document at a time: sum over columns of the maximum over its rows."""
    starts = np.concatenate(([0], np.cumsum(counts)))
    return np.array([table[rows[starts[i] : starts[i + 1]]].max(axis=0).sum() for i in range(len(counts))], dtype=np.float32)


@pytest.mark.parametrize(
    "counts",
    [
        np.array([5, 7, 6, 5, 8]),  # similar sizes
        np.array([1, 1, 1, 40, 2]),  # one long group
        np.array([3]),
        np.random.default_rng(5).integers(1, 30, 1300),  # several gathers of 512 groups
        np.random.default_rng(6).integers(1, 200, 300),  # batches split by size
    ],
    ids=["similar-sizes", "one-long-group", "single", "many-groups", "spread-sizes"],
)
def test_summed_maxima_equals_per_group_loop(counts: np.ndarray) -> None:
    rng = np.random.default_rng(int(counts.sum()))
    table = rng.standard_normal((5000, 6)).astype(np.float32) - 2.0  # negative maxima must survive
    rows = rng.integers(0, len(table), int(counts.sum()))

    found = summed_maxima(torch.from_numpy(table), rows, counts)

    np.testing.assert_allclose(found, naive_summed_maxima(table, rows, counts), rtol=1e-6, atol=1e-6)


def test_summed_maxima_of_no_groups_is_empty() -> None:
    assert summed_maxima(torch.zeros(4, 3), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)).shape == (0,)


def documents(seed: int, count: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    doclens = rng.integers(1, 20, count)
    tokens = rng.standard_normal((int(doclens.sum()), dim)).astype(np.float32)
    return tokens, doclens


def test_doc_centroids_are_distinct_codes(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=16, nbits=2)
    first, first_lens = documents(1, 80)
    second, second_lens = documents(2, 50)
    index.add(first, first_lens, [f"a{i}" for i in range(80)])
    index.add(second, second_lens, [f"b{i}" for i in range(50)])
    index.delete([f"a{i}" for i in range(0, 80, 3)])

    for stage in ("two segments and tombstones", "after compaction"):
        snapshot = MultiVectorIndex.open(tmp_path / "index")._current()
        offsets, centroids = snapshot.doc_centroids
        assert len(offsets) == snapshot.num_rows + 1, stage
        for row in range(snapshot.num_rows):
            codes = snapshot.codes[snapshot.doc_offsets[row] : snapshot.doc_offsets[row + 1]]
            assert centroids[offsets[row] : offsets[row + 1]].tolist() == np.unique(codes).tolist(), (stage, row)
        index.compact()


@pytest.mark.parametrize("pruned", [False, True])
def test_centroid_interaction_equals_token_scores(tmp_path: Path, pruned: bool) -> None:
    tokens, doclens = documents(3, 120)
    index = MultiVectorIndex.create(tmp_path / "index", dim=16, nbits=2)
    index.add(tokens, doclens, [f"d{i}" for i in range(120)])
    snapshot = index._current()
    assert snapshot.codec is not None
    query = torch.from_numpy(np.random.default_rng(4).standard_normal((5, 16)).astype(np.float32))
    scores = snapshot.codec.centroids_torch @ query.T
    above_threshold = (scores.amax(dim=1) >= 0.5).numpy() if pruned else None
    rows = np.arange(0, 120, 2)

    found = _centroid_interaction(snapshot, rows, scores, above_threshold)

    expected = []
    for row in rows:
        codes = snapshot.codes[snapshot.doc_offsets[row] : snapshot.doc_offsets[row + 1]].astype(np.int64)
        if above_threshold is not None:
            codes = codes[above_threshold[codes]]
        expected.append(scores.numpy()[codes].max(axis=0).sum() if len(codes) else -np.inf)
    np.testing.assert_allclose(found, np.array(expected, dtype=np.float32), rtol=1e-6, atol=1e-6)
    if pruned:
        assert np.isinf(found).any()
        assert np.isfinite(found).any()


@pytest.mark.parametrize("num_centroids", [100, 4096, 5000, 32768 + 17])
@pytest.mark.parametrize("ncells", [1, 3, 8])
def test_probed_cells_equal_plain_topk(num_centroids: int, ncells: int) -> None:
    scores = torch.from_numpy(np.random.default_rng(num_centroids + ncells).standard_normal((num_centroids, 12)).astype(np.float32))

    found = _probed_cells(scores, ncells)

    expected = np.unique(torch.topk(scores, ncells, dim=0).indices.numpy())
    assert found.tolist() == expected.tolist()


def test_bfloat16_scores_keep_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    topics = rng.standard_normal((40, 16))
    doclens = rng.integers(4, 16, 300)
    tokens = topics[rng.integers(0, 40, int(doclens.sum()))] + 0.3 * rng.standard_normal((int(doclens.sum()), 16))
    tokens = (tokens / np.linalg.norm(tokens, axis=1, keepdims=True)).astype(np.float32)
    index = MultiVectorIndex.create(tmp_path / "index", dim=16, nbits=2)
    index.add(tokens, doclens, [f"d{i}" for i in range(300)])
    queries = tokens[rng.integers(0, len(tokens), (8, 6))]
    options = {"k": 5, "exact": False, "ncells": 2, "ndocs": 64, "pool": 32}
    expected = index.search(queries, **options)

    monkeypatch.setattr(search, "BFLOAT16_MIN_CENTROIDS", 0)
    monkeypatch.setattr(search, "native_bfloat16", lambda: True)
    codec = index._current().codec
    assert codec is not None
    query = torch.from_numpy(queries[0])
    table = search.centroid_score_table(codec, query)
    assert table.dtype == torch.float32
    np.testing.assert_allclose(table.numpy(), (codec.centroids_torch @ query.T).numpy(), atol=2e-2)

    # Rounded centroid scores may swap documents at the edge of a small pool. The final scores
    # come from the float16 originals, so a document found by both paths has one score.
    found = index.search(queries, **options)
    overlap = [len(set(ids) & set(reference_ids)) / 5 for (ids, _), (reference_ids, _) in zip(found, expected)]
    assert np.mean(overlap) >= 0.9
    for (ids, scores), (reference_ids, reference) in zip(found, expected):
        shared = set(ids) & set(reference_ids)
        np.testing.assert_allclose([scores[ids.index(i)] for i in shared], [reference[reference_ids.index(i)] for i in shared], rtol=1e-6)


def test_size_batches_bound_padding() -> None:
    sizes = np.sort(np.random.default_rng(7).integers(1, 300, 1000))

    batches = _size_batches(np.arange(len(sizes)), sizes)

    assert np.concatenate(batches).tolist() == list(range(len(sizes)))
    for batch in batches:
        assert len(batch) <= 512
        assert len(batch) * sizes[batch].max() <= 2 * sizes[batch].sum()


@pytest.mark.parametrize("exact", [True, False])
def test_chunked_similarities_equal_one_product(tmp_path: Path, exact: bool) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=16, nbits=4)
    first, first_lens = documents(8, 300)
    second, second_lens = documents(9, 200)
    index.add(first, first_lens, [f"a{i}" for i in range(300)])
    index.add(second, second_lens, [f"b{i}" for i in range(200)])
    snapshot = index._current()
    token_rows = np.sort(np.random.default_rng(10).choice(snapshot.doc_offsets[-1], 5000, replace=False))
    assert token_rows[0] < snapshot.segment_token_starts[1] < token_rows[-1]
    queries = torch.from_numpy(np.random.default_rng(11).standard_normal((7, 16)).astype(np.float32))

    found = snapshot.similarities(token_rows, queries, exact=exact)

    expected = snapshot.gather_tokens(token_rows, exact=exact) @ queries.T
    np.testing.assert_allclose(found.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
