"""Retrieval log-probabilities, the joint score rule and majority voting on hand-made candidates."""

from __future__ import annotations

import math

import pytest

from flmr_rag.generation import AnswerCandidate, choose_answer, retrieval_log_probs
from flmr_rag.generation.scoring import generation_score, select_by_majority


def candidate(index: int, answer: str, joint: float) -> AnswerCandidate:
    return AnswerCandidate(
        answer=answer, passage=f"passage {index}", passage_index=index, passage_id=f"p{index}",
        retrieval_score=None, retrieval_log_prob=0.0, generation_log_prob=joint, num_tokens=1,
        generation_score=joint, joint_score=joint,
    )  # fmt: skip


def test_retrieval_log_probs_is_log_softmax() -> None:
    scores = [3.0, 1.0, 0.0]
    normalizer = math.log(sum(math.exp(score) for score in scores))
    assert retrieval_log_probs(scores, 3) == pytest.approx([score - normalizer for score in scores])


def test_retrieval_log_probs_shift_invariant() -> None:
    assert retrieval_log_probs([1003.0, 1001.0], 2) == pytest.approx(retrieval_log_probs([3.0, 1.0], 2))


def test_retrieval_log_probs_uniform_without_scores() -> None:
    assert retrieval_log_probs(None, 4) == pytest.approx([math.log(0.25)] * 4)


def test_retrieval_log_probs_rejects_nan() -> None:
    with pytest.raises(ValueError, match="must be finite"):
        retrieval_log_probs([1.0, float("nan")], 2)


def test_generation_score_mean_and_sum() -> None:
    assert generation_score(-6.0, 3) == -2.0
    assert generation_score(-6.0, 3, length_normalize=False) == -6.0


def test_joint_selection_picks_highest() -> None:
    answer = choose_answer([candidate(0, "red", -2.0), candidate(1, "blue", -0.5), candidate(2, "red", -1.0)])

    assert answer.answer == "blue"
    assert answer.passage_index == 1
    assert answer.passage_id == "p1"


def test_majority_selection_picks_most_frequent() -> None:
    answer = choose_answer([candidate(0, "blue", 0.0), candidate(1, "Red", -3.0), candidate(2, "red ", -4.0)], "majority")

    assert answer.answer == "Red"
    assert answer.passage_index == 1


def test_majority_tie_goes_to_first_seen() -> None:
    candidates = [candidate(0, "a", -9.0), candidate(1, "b", 0.0), candidate(2, "b", 0.0), candidate(3, "a", 0.0)]
    assert select_by_majority(candidates) == 0


def test_choose_answer_unknown_rule_raises() -> None:
    with pytest.raises(ValueError, match="selection must be one of"):
        choose_answer([candidate(0, "a", 0.0)], "vote")


def test_choose_answer_without_candidates_raises() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        choose_answer([])
