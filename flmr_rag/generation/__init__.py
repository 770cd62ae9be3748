"""RA-VQA answer generation: one answer per retrieved passage, chosen by the joint score."""

from flmr_rag.generation.answer import Answer, AnswerCandidate
from flmr_rag.generation.generator import AnswerGenerator
from flmr_rag.generation.prompts import RAVQA_V2_TEMPLATE, PromptTemplate
from flmr_rag.generation.rag import answer_question
from flmr_rag.generation.scoring import choose_answer, retrieval_log_probs

__all__ = [
    "RAVQA_V2_TEMPLATE",
    "Answer",
    "AnswerCandidate",
    "AnswerGenerator",
    "PromptTemplate",
    "answer_question",
    "choose_answer",
    "retrieval_log_probs",
]
