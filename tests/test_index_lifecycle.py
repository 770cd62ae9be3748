"""MultiVectorIndex lifecycle: create, add, delete, compact, reopen, and the input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flmr_rag.index import DuplicateIdError, IndexClosedError, IndexExistsError, IndexNotFoundError, MultiVectorIndex

DIM = 16


def clustered_documents(seed: int, num_docs: int, doclen: int = 8, dim: int = DIM) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return packed unit token embeddings (float32), doclens and ids of ``num_docs`` clustered documents."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((max(4, num_docs // 2), dim))
    tokens = topics[rng.integers(0, len(topics), num_docs * doclen)] + 0.3 * rng.standard_normal((num_docs * doclen, dim))
    tokens = (tokens / np.linalg.norm(tokens, axis=1, keepdims=True)).astype(np.float32)
    return tokens, np.full(num_docs, doclen), [f"doc-{seed}-{i}" for i in range(num_docs)]


def query_for(tokens: np.ndarray, doclens: np.ndarray, document: int, seed: int = 0) -> np.ndarray:
    """Return a noisy 6-token query drawn from one document's tokens."""
    rng = np.random.default_rng(seed)
    start = int(np.sum(doclens[:document]))
    rows = tokens[start + rng.integers(0, doclens[document], 6)] + 0.05 * rng.standard_normal((6, tokens.shape[1]))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def index(tmp_path: Path) -> MultiVectorIndex:
    built = MultiVectorIndex.create(tmp_path / "index", dim=DIM, nbits=2)
    tokens, doclens, ids = clustered_documents(0, 30)
    built.add(tokens, doclens, ids)
    return built


def test_create_then_open_empty(tmp_path: Path) -> None:
    MultiVectorIndex.create(tmp_path / "index", dim=DIM).close()
    reopened = MultiVectorIndex.open(tmp_path / "index")
    found_ids, scores = reopened.search(np.ones((3, DIM), dtype=np.float32), k=5)[0]
    assert len(reopened) == 0
    assert found_ids == []
    assert scores.shape == (0,)


def test_create_refuses_existing_index(index: MultiVectorIndex) -> None:
    with pytest.raises(IndexExistsError):
        MultiVectorIndex.create(index.path, dim=DIM)


def test_create_keeps_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "docstore.sqlite").write_bytes(b"user data")
    index = MultiVectorIndex.create(tmp_path, dim=DIM)
    tokens, doclens, ids = clustered_documents(1, 5)
    index.add(tokens, doclens, ids)
    index.delete(ids[:2])
    index.compact()
    assert (tmp_path / "docstore.sqlite").read_bytes() == b"user data"


def test_create_rejects_bad_nbits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nbits=3"):
        MultiVectorIndex.create(tmp_path / "index", dim=DIM, nbits=3)


def test_open_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="manifest.json"):
        MultiVectorIndex.open(tmp_path)


def test_add_then_reopen_finds_documents(index: MultiVectorIndex) -> None:
    tokens, doclens, ids = clustered_documents(0, 30)
    reopened = MultiVectorIndex.open(index.path)
    found_ids, scores = reopened.search(query_for(tokens, doclens, 7), k=3)[0]
    assert len(reopened) == 30
    assert found_ids[0] == ids[7]
    assert scores.dtype == np.float32


def test_single_document(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=DIM)
    tokens, doclens, ids = clustered_documents(2, 1, doclen=5)
    index.add(tokens, doclens, ids)
    found_ids, scores = MultiVectorIndex.open(index.path).search(tokens[:2], k=10)[0]
    assert found_ids == ids
    assert scores[0] == pytest.approx(2.0, abs=1e-3)


def test_fewer_tokens_than_centroids_approximate_path(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=DIM)
    tokens, doclens, ids = clustered_documents(3, 3, doclen=2)
    index.add(tokens, doclens, ids)
    found_ids, _ = index.search(tokens[:2], k=3, exact=False)[0]
    assert index.stats()["num_centroids"] == 1
    assert sorted(found_ids) == sorted(ids)


def test_duplicate_ids_within_add(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=DIM)
    tokens, doclens, _ = clustered_documents(4, 3)
    with pytest.raises(DuplicateIdError, match="'a'"):
        index.add(tokens, doclens, ["a", "b", "a"])
    assert len(MultiVectorIndex.open(index.path)) == 0


def test_duplicate_ids_with_live_documents(index: MultiVectorIndex) -> None:
    tokens, doclens, ids = clustered_documents(0, 2)
    generation = index.stats()["generation"]
    with pytest.raises(DuplicateIdError, match="already in the index"):
        index.add(tokens, doclens, ids)
    assert MultiVectorIndex.open(index.path).stats()["generation"] == generation
    assert sorted(p.name for p in index.path.iterdir() if p.name.startswith("seg-")) == ["seg-000001"]


def test_delete_counts_only_known_ids(index: MultiVectorIndex) -> None:
    assert index.delete(["doc-0-1", "doc-0-2", "missing", "doc-0-1"]) == 2
    assert index.delete(["doc-0-1"]) == 0
    assert len(index) == 28


def test_deleted_documents_are_not_returned(index: MultiVectorIndex) -> None:
    tokens, doclens, ids = clustered_documents(0, 30)
    index.delete([ids[7]])
    reopened = MultiVectorIndex.open(index.path)
    for exact in (True, False):
        found_ids, _ = reopened.search(query_for(tokens, doclens, 7), k=30, exact=exact)[0]
        assert ids[7] not in found_ids
        assert len(found_ids) == 29
    assert not reopened.contains(ids[7])


def test_add_after_delete_reuses_id(index: MultiVectorIndex) -> None:
    tokens, doclens, ids = clustered_documents(0, 30)
    index.delete([ids[0]])
    new_tokens, new_doclens, _ = clustered_documents(9, 1)
    index.add(new_tokens, new_doclens, [ids[0]])
    reopened = MultiVectorIndex.open(index.path)
    assert reopened.search(query_for(new_tokens, new_doclens, 0), k=1)[0][0] == [ids[0]]
    assert len(reopened) == 30


def test_second_add_reuses_codec(index: MultiVectorIndex) -> None:
    centroids_before = index.stats()["num_centroids"]
    tokens, doclens, ids = clustered_documents(5, 10)
    index.add(tokens, doclens, ids)
    reopened = MultiVectorIndex.open(index.path)
    assert reopened.stats()["num_centroids"] == centroids_before
    assert reopened.stats()["num_segments"] == 2
    assert reopened.search(query_for(tokens, doclens, 4), k=1, exact=False)[0][0] == [ids[4]]


def test_compaction_drops_deleted_documents(index: MultiVectorIndex) -> None:
    tokens, doclens, ids = clustered_documents(0, 30)
    extra_tokens, extra_doclens, extra_ids = clustered_documents(6, 5)
    index.add(extra_tokens, extra_doclens, extra_ids)
    index.delete(ids[:10])
    before = index.search(query_for(tokens, doclens, 20), k=5)[0]

    index.compact()
    reopened = MultiVectorIndex.open(index.path)
    after = reopened.search(query_for(tokens, doclens, 20), k=5)[0]
    stats = reopened.stats()
    assert stats["num_segments"] == 1
    assert stats["num_deleted"] == 0
    assert stats["num_tokens"] == 25 * 8
    assert after[0] == before[0]
    np.testing.assert_allclose(after[1], before[1], rtol=1e-6)
    assert list(reopened.ids()) == ids[10:] + extra_ids


def test_compaction_with_retrain(index: MultiVectorIndex) -> None:
    tokens, doclens, ids = clustered_documents(0, 30)
    index.delete(ids[:3])
    index.compact(retrain=True)
    reopened = MultiVectorIndex.open(index.path)
    assert reopened.search(query_for(tokens, doclens, 12), k=1, exact=False)[0][0] == [ids[12]]
    assert len(reopened) == 27


def test_zero_length_documents_are_stored_not_returned(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=DIM)
    tokens, _, _ = clustered_documents(7, 2, doclen=4)
    index.add(tokens, [4, 0, 4], ["a", "empty", "b"])
    reopened = MultiVectorIndex.open(index.path)
    found_ids, _ = reopened.search(tokens[:3], k=10)[0]
    assert len(reopened) == 3
    assert reopened.contains("empty")
    assert sorted(found_ids) == ["a", "b"]


def test_add_of_only_empty_documents_then_real_ones(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=DIM)
    index.add(np.zeros((0, DIM), dtype=np.float32), [0, 0], ["e1", "e2"])
    assert index.search(np.ones((2, DIM), dtype=np.float32), k=5)[0][0] == []
    tokens, doclens, ids = clustered_documents(8, 4)
    index.add(tokens, doclens, ids)
    reopened = MultiVectorIndex.open(index.path)
    assert reopened.search(query_for(tokens, doclens, 2), k=1, exact=False)[0][0] == [ids[2]]
    assert len(reopened) == 6


def test_empty_add_is_rejected(index: MultiVectorIndex) -> None:
    with pytest.raises(ValueError, match="no documents"):
        index.add(np.zeros((0, DIM), dtype=np.float32), [], [])


def test_wrong_dim_is_rejected(index: MultiVectorIndex) -> None:
    with pytest.raises(ValueError, match=f"\\[num_tokens, {DIM}\\]"):
        index.add(np.zeros((4, DIM + 1), dtype=np.float32), [4], ["x"])


def test_nan_is_rejected_before_writing(index: MultiVectorIndex) -> None:
    tokens, doclens, _ = clustered_documents(10, 2)
    tokens[5, 3] = np.nan
    generation = index.stats()["generation"]
    with pytest.raises(ValueError, match="NaN"):
        index.add(tokens, doclens, ["x", "y"])
    assert MultiVectorIndex.open(index.path).stats()["generation"] == generation


def test_doclens_must_match_tokens(index: MultiVectorIndex) -> None:
    with pytest.raises(ValueError, match="sum to 5"):
        index.add(np.zeros((4, DIM), dtype=np.float32), [5], ["x"])


def test_bad_id_is_rejected(index: MultiVectorIndex) -> None:
    with pytest.raises(ValueError, match="invalid"):
        index.add(np.ones((1, DIM), dtype=np.float32), [1], [""])


def test_torch_float16_input(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=DIM)
    tokens, doclens, ids = clustered_documents(11, 4)
    index.add(torch.from_numpy(tokens).half(), torch.from_numpy(doclens), ids)
    assert index.search(torch.from_numpy(query_for(tokens, doclens, 1)).half(), k=1)[0][0] == [ids[1]]


def test_stats_reports_sizes(index: MultiVectorIndex) -> None:
    stats = index.stats()
    assert stats["num_documents"] == 30
    assert stats["originals_bytes"] > 0
    assert stats["index_bytes"] == sum(stats["bytes"].values()) - stats["originals_bytes"]


def test_closed_index_raises(index: MultiVectorIndex) -> None:
    with index:
        pass
    with pytest.raises(IndexClosedError):
        len(index)


def test_without_originals(tmp_path: Path) -> None:
    index = MultiVectorIndex.create(tmp_path / "index", dim=DIM, keep_originals=False)
    tokens, doclens, ids = clustered_documents(12, 20)
    index.add(tokens, doclens, ids)
    reopened = MultiVectorIndex.open(index.path)
    assert reopened.stats()["originals_bytes"] == 0
    assert reopened.search(query_for(tokens, doclens, 3), k=1, exact=False)[0][0] == [ids[3]]
    with pytest.raises(ValueError, match="keep_originals=False"):
        reopened.search(query_for(tokens, doclens, 3), k=1, rerank=True)
