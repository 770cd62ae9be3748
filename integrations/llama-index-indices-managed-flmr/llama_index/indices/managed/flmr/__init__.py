"""FLMR / PreFLMR multimodal late-interaction retrieval as a LlamaIndex index.

``FLMRIndex.from_documents(documents, model=...)`` builds the index;
``index.as_retriever(similarity_top_k=5)`` returns an :class:`FLMRMultiModalRetriever`, and
:class:`FLMRVisualQAQueryEngine` answers questions about an image with a multimodal chat LLM.
"""

from llama_index.indices.managed.flmr._convert import FLMRQueryBundle
from llama_index.indices.managed.flmr.base import FLMRIndex, FLMRIndexStruct
from llama_index.indices.managed.flmr.query_engine import FLMRVisualQAQueryEngine
from llama_index.indices.managed.flmr.retriever import FLMRMultiModalRetriever

__all__ = [
    "FLMRIndex",
    "FLMRIndexStruct",
    "FLMRMultiModalRetriever",
    "FLMRQueryBundle",
    "FLMRVisualQAQueryEngine",
]
