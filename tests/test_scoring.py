"""Late-interaction scoring: padded, pairwise and packed layouts against a plain loop."""

from __future__ import annotations

import pytest
import torch

from flmr_rag import scoring


def reference_score(query: torch.Tensor, document: torch.Tensor) -> float:
    """Sum over query rows of the max dot product with any document row, written as loops."""
    total = 0.0
    for query_row in query:
        total += max(float(query_row @ document_row) for document_row in document)
    return total


def random_unit(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


def test_padded_scores_match_loop() -> None:
    queries = random_unit(3, 5, 8, seed=0)
    documents = random_unit(4, 6, 8, seed=1)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 0] = False

    scores = scoring.late_interaction_scores(queries, documents, mask.unsqueeze(-1))

    for b in range(3):
        for n in range(4):
            expected = reference_score(queries[b], documents[n][mask[n]])
            assert scores[b, n].item() == pytest.approx(expected, abs=1e-5)


def test_padded_scores_masked_tokens_never_win() -> None:
    queries = random_unit(1, 4, 8, seed=2)
    documents = random_unit(1, 3, 8, seed=3)
    documents[0, 2] = queries[0, 0] * 5  # a masked token that would dominate if it counted
    mask = torch.tensor([[True, True, False]])

    scores = scoring.late_interaction_scores(queries, documents, mask)

    assert scores[0, 0].item() == pytest.approx(reference_score(queries[0], documents[0, :2]), abs=1e-5)


def test_zero_query_rows_add_nothing() -> None:
    queries = random_unit(1, 4, 8, seed=4)
    padded = torch.cat([queries, torch.zeros(1, 3, 8)], dim=1)
    documents = random_unit(5, 6, 8, seed=5)

    assert torch.allclose(
        scoring.late_interaction_scores(padded, documents),
        scoring.late_interaction_scores(queries, documents),
        atol=1e-6,
    )


def test_padded_scores_chunked_equal_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = random_unit(2, 5, 8, seed=6)
    documents = random_unit(9, 7, 8, seed=7)
    whole = scoring.late_interaction_scores(queries, documents)

    monkeypatch.setattr(scoring, "_MAX_BLOCK_ELEMENTS", 2 * 5 * 7 * 2)
    chunked = scoring.late_interaction_scores(queries, documents)

    assert torch.allclose(whole, chunked, atol=1e-6)


def test_pairwise_scores_equal_diagonal() -> None:
    queries = random_unit(4, 5, 8, seed=8)
    documents = random_unit(4, 6, 8, seed=9)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[:, 0] = True

    pairwise = scoring.pairwise_late_interaction_scores(queries, documents, mask)
    full = scoring.late_interaction_scores(queries, documents, mask)

    assert torch.allclose(pairwise, full.diagonal(), atol=1e-6)


def test_packed_scores_match_padded() -> None:
    doclens = torch.tensor([3, 0, 5, 1])
    tokens = random_unit(int(doclens.sum()), 8, seed=10)
    queries = random_unit(2, 4, 8, seed=11)
    padded = torch.zeros(4, 5, 8)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    offset = 0
    for n, length in enumerate(doclens.tolist()):
        padded[n, :length] = tokens[offset : offset + length]
        mask[n, :length] = True
        offset += length

    packed = scoring.packed_late_interaction_scores(queries, tokens, doclens)
    expected = scoring.late_interaction_scores(queries, padded, mask)

    assert packed.shape == (2, 4)
    assert torch.isinf(packed[:, 1]).all()
    for n in (0, 2, 3):
        assert torch.allclose(packed[:, n], expected[:, n], atol=1e-5)


def test_packed_single_query_and_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    doclens = torch.tensor([2, 4, 3, 1, 6])
    tokens = random_unit(int(doclens.sum()), 8, seed=12)
    query = random_unit(5, 8, seed=13)
    whole = scoring.packed_late_interaction_scores(query, tokens, doclens)

    monkeypatch.setattr(scoring, "_MAX_BLOCK_ELEMENTS", 5 * 3)
    blocked = scoring.packed_late_interaction_scores(query, tokens, doclens)

    assert whole.shape == (5,)
    assert torch.allclose(whole, blocked, atol=1e-6)


def test_packed_zero_length_documents_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    doclens = torch.tensor([0, 2, 0, 0, 3, 1, 0])
    tokens = random_unit(int(doclens.sum()), 8, seed=20)
    query = random_unit(3, 8, seed=21)
    monkeypatch.setattr(scoring, "_MAX_BLOCK_ELEMENTS", 3 * 2)

    scores = scoring.packed_late_interaction_scores(query, tokens, doclens)

    offsets = torch.cumsum(doclens, 0) - doclens
    for n, length in enumerate(doclens.tolist()):
        if length == 0:
            assert scores[n].item() == float("-inf")
        else:
            expected = reference_score(query, tokens[offsets[n] : offsets[n] + length])
            assert scores[n].item() == pytest.approx(expected, abs=1e-5)


def test_packed_rejects_wrong_doclens() -> None:
    tokens = random_unit(6, 8, seed=14)
    with pytest.raises(ValueError, match="summing to 6"):
        scoring.packed_late_interaction_scores(random_unit(2, 8, seed=15), tokens, torch.tensor([2, 2]))


def test_dim_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="dim"):
        scoring.late_interaction_scores(random_unit(1, 2, 8, seed=16), random_unit(1, 2, 4, seed=17))


def test_bfloat16_inputs_close_to_float32() -> None:
    queries = random_unit(2, 5, 16, seed=18)
    documents = random_unit(3, 7, 16, seed=19)

    full = scoring.late_interaction_scores(queries, documents)
    low = scoring.late_interaction_scores(queries.bfloat16(), documents.bfloat16())

    assert low.dtype == torch.float32
    assert torch.allclose(full, low, atol=0.1)
