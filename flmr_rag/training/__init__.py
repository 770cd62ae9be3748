"""Contrastive fine-tuning of FLMR / PreFLMR retrievers: data readers, settings and the trainer."""

from flmr_rag.training.config import TrainingConfig
from flmr_rag.training.data import (
    ExampleSet,
    Passage,
    SkippedRow,
    TrainingDataError,
    TrainingExample,
    choose_contexts,
    read_examples,
    read_passages,
)
from flmr_rag.training.evaluation import recall_at_k
from flmr_rag.training.trainer import ContrastiveTrainer, TrainingResult, parameter_groups

__all__ = [
    "ContrastiveTrainer",
    "ExampleSet",
    "Passage",
    "SkippedRow",
    "TrainingConfig",
    "TrainingDataError",
    "TrainingExample",
    "TrainingResult",
    "choose_contexts",
    "parameter_groups",
    "read_examples",
    "read_passages",
    "recall_at_k",
]
