"""Recall@K over positive ids and pseudo-relevance recall over answer strings."""

from __future__ import annotations

import pytest

from flmr_rag.evaluation import pseudo_recall_at_k, recall_at_k

RANKED_IDS = ["p3", "p7", "p1", "p9"]
RANKED_TEXTS = ["Surfing is a water sport.", "The Eiffel Tower is in Paris.", "Bananas are yellow."]


def test_recall_at_k_hit_at_rank_three() -> None:
    assert recall_at_k(RANKED_IDS, {"p1"}, k=3) == 1.0


def test_recall_at_k_miss_below_rank() -> None:
    assert recall_at_k(RANKED_IDS, {"p1"}, k=2) == 0.0


def test_recall_at_k_any_positive_counts() -> None:
    assert recall_at_k(RANKED_IDS, ["p0", "p7"], k=2) == 1.0


def test_recall_at_k_without_positives_is_zero() -> None:
    assert recall_at_k(RANKED_IDS, [], k=4) == 0.0


def test_recall_at_k_larger_than_ranking() -> None:
    assert recall_at_k(RANKED_IDS, ["p9"], k=100) == 1.0


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_recall_at_k_rejects_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        recall_at_k(RANKED_IDS, ["p3"], k=k)  # type: ignore[arg-type]


def test_pseudo_recall_is_case_insensitive() -> None:
    assert pseudo_recall_at_k(RANKED_TEXTS, ["PARIS"], k=2) == 1.0


def test_pseudo_recall_respects_k() -> None:
    assert pseudo_recall_at_k(RANKED_TEXTS, ["paris"], k=1) == 0.0


def test_pseudo_recall_any_answer_counts() -> None:
    assert pseudo_recall_at_k(RANKED_TEXTS, ["london", "yellow"], k=3) == 1.0


def test_pseudo_recall_matches_substrings() -> None:
    # No word boundaries: "surf" matches inside "Surfing".
    assert pseudo_recall_at_k(RANKED_TEXTS, ["surf"], k=1) == 1.0


def test_pseudo_recall_strips_answers() -> None:
    assert pseudo_recall_at_k(RANKED_TEXTS, ["  eiffel tower "], k=2) == 1.0


def test_pseudo_recall_ignores_empty_answers() -> None:
    assert pseudo_recall_at_k(RANKED_TEXTS, ["", "  "], k=3) == 0.0


def test_pseudo_recall_rejects_single_string() -> None:
    with pytest.raises(TypeError, match="wrap it as"):
        pseudo_recall_at_k(RANKED_TEXTS, "paris", k=2)
