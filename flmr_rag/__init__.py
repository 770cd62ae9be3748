"""flmr-rag: FLMR / PreFLMR late-interaction multimodal retrieval for RAG.

Public names are imported on first use (PEP 562), so ``import flmr_rag`` stays fast and the
command line starts without loading torch until a command needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "FLMRConfig": "flmr_rag.models",
    "FLMRTextConfig": "flmr_rag.models",
    "FLMRVisionConfig": "flmr_rag.models",
    "FLMRQueryEncoderTokenizer": "flmr_rag.models",
    "FLMRQueryEncoderTokenizerFast": "flmr_rag.models",
    "FLMRContextEncoderTokenizer": "flmr_rag.models",
    "FLMRContextEncoderTokenizerFast": "flmr_rag.models",
    "FLMRTextModel": "flmr_rag.models",
    "FLMRVisionModel": "flmr_rag.models",
    "FLMRModelForRetrieval": "flmr_rag.models",
    "FLMRContextEncoderOutput": "flmr_rag.models",
    "FLMRQueryEncoderOutput": "flmr_rag.models",
    "FLMRQuestionEncoderOutput": "flmr_rag.models",
    "FLMRModelForRetrievalOutput": "flmr_rag.models",
    "MultiVectorIndex": "flmr_rag.index",
    "Document": "flmr_rag.types",
    "SearchResult": "flmr_rag.types",
    "FLMRRetriever": "flmr_rag.retriever",
    "AnswerGenerator": "flmr_rag.generation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'flmr_rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
