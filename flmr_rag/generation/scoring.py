"""Choosing one answer among per-passage candidates: the RA-VQA joint score or majority voting.

Joint score of passage k (RA-VQA-v2):
``log p(z_k | x) + log p(y_k | x, z_k)``, where ``log p(z_k | x)`` is a log-softmax over the K
retrieved scores only, and the generation term is the mean token log-probability of the answer
(length-normalised, the default) or its sum (the RA-VQA v1 rule, which favours short answers).
Each candidate is scored against the passage that produced it; there is no sum over passages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flmr_rag.generation.answer import Answer, AnswerCandidate

SELECTIONS = ("joint", "majority")


def retrieval_log_probs(scores: Sequence[float] | None, num_passages: int) -> list[float]:
    """Return log p(passage | query) for each passage: a log-softmax over ``scores``.

    ``None`` gives the uniform distribution, -log(num_passages) each.

    Raises:
        ValueError: the number of scores differs from ``num_passages`` or a score is not finite.
    """
    if scores is None:
        return [-math.log(num_passages)] * num_passages

    values = [float(score) for score in scores]
    if len(values) != num_passages:
        raise ValueError(
            f"retrieval_scores has {len(values)} values but there are {num_passages} passages; give one score per passage"
        )
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"retrieval_scores must be finite numbers, got {values}")

    top = max(values)
    log_normalizer = top + math.log(sum(math.exp(value - top) for value in values))
    return [value - log_normalizer for value in values]


def generation_score(log_prob_sum: float, num_tokens: int, length_normalize: bool = True) -> float:
    """Return the generation term: the mean token log-probability, or the sum when not normalising."""
    if not length_normalize:
        return log_prob_sum
    return log_prob_sum / max(num_tokens, 1)


def select_by_joint_score(candidates: Sequence[AnswerCandidate]) -> int:
    """Return the index of the candidate with the highest joint score (the first one on ties)."""
    if not candidates:
        raise ValueError("there are no candidates to choose from; retrieve at least one passage")
    return max(range(len(candidates)), key=lambda index: (candidates[index].joint_score, -index))


def select_by_majority(candidates: Sequence[AnswerCandidate]) -> int:
    """Return the index of the first candidate whose answer is the most frequent one.

    Answers are compared after stripping and lower-casing. On a tie in frequency the answer that
    appears first in retrieval order wins (the tie rule of ``collections.Counter.most_common``).
    """
    if not candidates:
        raise ValueError("there are no candidates to choose from; retrieve at least one passage")

    counts: dict[str, int] = {}
    first_index: dict[str, int] = {}
    for index, candidate in enumerate(candidates):
        key = candidate.answer.strip().lower()
        counts[key] = counts.get(key, 0) + 1
        first_index.setdefault(key, index)

    best_key = max(counts, key=lambda key: (counts[key], -first_index[key]))
    return first_index[best_key]


def choose_answer(candidates: list[AnswerCandidate], selection: str = "joint") -> Answer:
    """Build the ``Answer`` from ``candidates`` with the ``selection`` rule ("joint" or "majority").

    Raises:
        ValueError: ``selection`` is unknown or ``candidates`` is empty.
    """
    if selection == "joint":
        index = select_by_joint_score(candidates)
    elif selection == "majority":
        index = select_by_majority(candidates)
    else:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")

    chosen = candidates[index]
    return Answer(
        answer=chosen.answer,
        passage_index=index,
        passage=chosen.passage,
        passage_id=chosen.passage_id,
        selection=selection,
        candidates=list(candidates),
    )
