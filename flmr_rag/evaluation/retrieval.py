"""Retrieval metrics per query: Recall@K over positive ids and pseudo-relevance recall (PRRecall@K).

Each function scores one query with 0.0 or 1.0; the mean over queries is the reported metric.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def recall_at_k(retrieved_ids: Sequence[str], positive_ids: Collection[str], k: int) -> float:
    """Return 1.0 when any of the first ``k`` retrieved ids is a positive id, else 0.0.

    ``retrieved_ids`` is ranked best first. A query without positive ids scores 0.0; callers
    that want to skip such queries must filter them out before averaging.

    Raises:
        ValueError: ``k`` is not a positive integer.
    """
    _check_k(k)
    positives = set(positive_ids)
    return float(any(passage_id in positives for passage_id in retrieved_ids[:k]))


def pseudo_recall_at_k(retrieved_texts: Sequence[str], answers: Sequence[str], k: int) -> float:
    """Return 1.0 when any of the first ``k`` passages contains any answer, else 0.0.

    Matching is a case-insensitive substring test of the stripped answer in the passage text,
    with no word boundaries, so short answers such as "yes" or "red" match easily and inflate
    the metric. Empty answers are ignored.

    Raises:
        TypeError: ``answers`` is a single string.
        ValueError: ``k`` is not a positive integer.
    """
    _check_k(k)
    if isinstance(answers, str):
        raise TypeError(f"answers must be a list of strings, got the string {answers!r}; wrap it as [{answers!r}]")

    needles = [answer.strip().lower() for answer in answers if answer.strip()]
    for text in retrieved_texts[:k]:
        haystack = text.lower()
        if any(needle in haystack for needle in needles):
            return 1.0
    return 0.0
