"""FLMR / PreFLMR multimodal late-interaction retrieval for LangChain.

:class:`FLMRRetriever` is a ``BaseRetriever`` over an ``flmr_rag.FLMRRetriever``;
:func:`create_visual_qa_chain` builds a chain from ``{"question", "image"}`` to
``{"answer", "sources"}``; :class:`FLMRAnswerGenerator` runs flmr-rag's RA-VQA reader as a
Runnable.
"""

from langchain_flmr.chains import create_visual_qa_chain
from langchain_flmr.generators import FLMRAnswerGenerator
from langchain_flmr.retrievers import FLMRQuery, FLMRRetriever

__all__ = ["FLMRAnswerGenerator", "FLMRQuery", "FLMRRetriever", "create_visual_qa_chain"]
