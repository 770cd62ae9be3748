"""FLMR / PreFLMR models: configurations, tokenizers, encoders and checkpoint loading.

Importing this package registers the configurations and ``FLMRModelForRetrieval`` with the
transformers Auto classes, so ``AutoConfig.from_pretrained(folder)`` and
``AutoModel.from_pretrained(folder)`` load FLMR checkpoints without ``trust_remote_code``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel

from .checkpoint import CheckpointMismatchError
from .configuration_flmr import FLMRConfig, FLMRTextConfig, FLMRVisionConfig
from .image_processing import load_image_processor
from .modeling_flmr import FLMRModelForRetrieval
from .outputs import (
    FLMRContextEncoderOutput,
    FLMRModelForRetrievalOutput,
    FLMRQueryEncoderOutput,
    FLMRQuestionEncoderOutput,
)
from .text import FLMRTextModel
from .tokenization_flmr import (
    FLMRContextEncoderTokenizer,
    FLMRContextEncoderTokenizerFast,
    FLMRQueryEncoderTokenizer,
    FLMRQueryEncoderTokenizerFast,
)
from .vision import FLMRVisionModel


def _register_auto_classes() -> None:
    for config_class, model_class in (
        (FLMRConfig, FLMRModelForRetrieval),
        (FLMRTextConfig, FLMRTextModel),
        (FLMRVisionConfig, FLMRVisionModel),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)


_register_auto_classes()

__all__ = [
    "CheckpointMismatchError",
    "FLMRConfig",
    "FLMRContextEncoderOutput",
    "FLMRContextEncoderTokenizer",
    "FLMRContextEncoderTokenizerFast",
    "FLMRModelForRetrieval",
    "FLMRModelForRetrievalOutput",
    "FLMRQueryEncoderOutput",
    "FLMRQueryEncoderTokenizer",
    "FLMRQueryEncoderTokenizerFast",
    "FLMRQuestionEncoderOutput",
    "FLMRTextConfig",
    "FLMRTextModel",
    "FLMRVisionConfig",
    "FLMRVisionModel",
    "load_image_processor",
]
