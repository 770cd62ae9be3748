"""Metrics for retrieval-augmented VQA (VQA score, EM, Recall@K, PRRecall@K) and evaluation runs."""

from flmr_rag.evaluation.retrieval import pseudo_recall_at_k, recall_at_k
from flmr_rag.evaluation.runner import DEFAULT_KS, EvaluationExample, evaluate, format_table, read_dataset
from flmr_rag.evaluation.vqa import exact_match, exact_match_at_k, normalize_answer, vqa_score

__all__ = [
    "DEFAULT_KS",
    "EvaluationExample",
    "evaluate",
    "exact_match",
    "exact_match_at_k",
    "format_table",
    "normalize_answer",
    "pseudo_recall_at_k",
    "read_dataset",
    "recall_at_k",
    "vqa_score",
]
