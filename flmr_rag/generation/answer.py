"""The records a reader returns: one candidate answer per passage and the chosen answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class AnswerCandidate:
    """The answer generated from one retrieved passage, with its scores (natural-log units).

    Attributes:
        answer: decoded answer text, special tokens removed and whitespace stripped.
        passage: the passage text the answer was generated from.
        passage_index: position of the passage in the retrieved list (0 = best retrieved).
        passage_id: the passage's id when the caller supplied ids, else None.
        retrieval_score: the retriever's raw score (higher is better); None when not supplied.
        retrieval_log_prob: log p(passage | query), a log-softmax over the retrieved scores
            (uniform, -log K, when no scores were supplied).
        generation_log_prob: log p(answer | query, passage), summed over the answer tokens
            including the end-of-sequence token when one was generated.
        num_tokens: the number of answer tokens in that sum.
        generation_score: ``generation_log_prob / num_tokens`` when length-normalised (the
            default), else equal to ``generation_log_prob``.
        joint_score: ``retrieval_log_prob + generation_score``; the highest wins.
        token_ids: the answer's token ids as generated (decoder start and prompt excluded, the
            end-of-sequence token included when generated).
    """

    answer: str
    passage: str
    passage_index: int
    passage_id: str | None
    retrieval_score: float | None
    retrieval_log_prob: float
    generation_log_prob: float
    num_tokens: int
    generation_score: float
    joint_score: float
    token_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the candidate as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class Answer:
    """The chosen answer, the passage that supports it and every candidate.

    Attributes:
        answer: the final answer text.
        passage_index: index into ``candidates`` (and the retrieved list) of the supporting passage.
        passage: text of the supporting passage.
        passage_id: id of the supporting passage when known.
        selection: "joint" (best joint score) or "majority" (most frequent answer).
        candidates: one per passage, in retrieval order.
    """

    answer: str
    passage_index: int
    passage: str
    passage_id: str | None
    selection: str
    candidates: list[AnswerCandidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the answer and its candidates as a JSON-serialisable dict."""
        return asdict(self)
