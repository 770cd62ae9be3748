"""FLMRMultiModalRetriever: LlamaIndex's multimodal retriever interface over an FLMRIndex.

FLMR has one query path, a question and an image encoded together, scored against every
passage by late interaction. The LlamaIndex methods map onto it as follows:

- ``retrieve`` / ``aretrieve`` (``_retrieve``): the question from ``query_str`` and the image
  from ``FLMRQueryBundle.image`` or ``image_path``, whichever the bundle has.
- ``text_retrieve``: the question only, any image in the bundle is ignored.
- ``text_to_image_retrieve``: the question only, restricted to nodes that carry an image.
- ``image_to_image_retrieve``: the image only, restricted to nodes that carry an image; a
  plain string argument is read as an image path.

Async methods run the model in a worker thread, so the event loop keeps serving other tasks.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from llama_index.core.base.base_multi_modal_retriever import MultiModalRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType

from ._convert import node_has_image, query_image

if TYPE_CHECKING:
    from .base import FLMRIndex

DEFAULT_SIMILARITY_TOP_K = 5


def _text_bundle(str_or_query_bundle: QueryType) -> QueryBundle:
    if isinstance(str_or_query_bundle, str):
        return QueryBundle(query_str=str_or_query_bundle)
    return str_or_query_bundle


def _image_bundle(str_or_query_bundle: QueryType) -> QueryBundle:
    if isinstance(str_or_query_bundle, str):
        return QueryBundle(query_str="", image_path=str_or_query_bundle)
    return str_or_query_bundle


class FLMRMultiModalRetriever(MultiModalRetriever):
    """Retrieve nodes of an :class:`FLMRIndex` for a question, an image, or both.

    Args:
        index: the index to search.
        similarity_top_k: how many nodes to return (>= 1); an index with fewer nodes returns all.
        image_similarity_top_k: how many image nodes the ``*_to_image_*`` methods return;
            ``similarity_top_k`` when omitted.
        instruction: the PreFLMR instruction for every query, overriding the FLMR index
            default; an ``FLMRQueryBundle.instruction`` overrides this per query.
        callback_manager, object_map, verbose: as in ``BaseRetriever``.

    Other keywords (for example the ones ``as_query_engine`` forwards) are ignored.

    Raises:
        ValueError: ``similarity_top_k`` or ``image_similarity_top_k`` is not a positive integer.
    """

    def __init__(
        self,
        index: "FLMRIndex",
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        image_similarity_top_k: Optional[int] = None,
        instruction: Optional[str] = None,
        callback_manager: Optional[CallbackManager] = None,
        object_map: Optional[Dict] = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        self._index = index
        self._similarity_top_k = _positive("similarity_top_k", similarity_top_k)
        self._image_similarity_top_k = _positive(
            "image_similarity_top_k", similarity_top_k if image_similarity_top_k is None else image_similarity_top_k
        )
        self._instruction = instruction
        super().__init__(callback_manager=callback_manager, object_map=object_map, verbose=verbose)

    @property
    def similarity_top_k(self) -> int:
        """How many nodes a joint or text query returns."""
        return self._similarity_top_k

    def _query(self, query_bundle: QueryBundle, use_text: bool = True, use_image: bool = True) -> Dict[str, Any]:
        question = query_bundle.query_str if use_text else ""
        image = query_image(query_bundle) if use_image else None
        if not (question and question.strip()) and image is None:
            wanted = " and ".join(part for part, used in (("text", use_text), ("an image", use_image)) if used)
            raise ValueError(
                f"the query has no {wanted}; set QueryBundle.query_str"
                + (" or image_path (or FLMRQueryBundle.image)" if use_image else "")
            )
        instruction = getattr(query_bundle, "instruction", None) or self._instruction
        return {"question": question or None, "image": image, "instruction": instruction}

    # The joint path: what every LlamaIndex engine calls.

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return self._index.search_batch([self._query(query_bundle)], self._similarity_top_k)[0]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def retrieve_batch(self, queries: Sequence[QueryType]) -> List[List[NodeWithScore]]:
        """Retrieve for several queries, encoding them in one batch.

        Strings are questions; bundles may carry images. This bypasses LlamaIndex's per-query
        retrieval events and callbacks, because ``BaseRetriever`` has no batch entry point.
        """
        bundles = [_text_bundle(query) for query in queries]
        return self._index.search_batch([self._query(bundle) for bundle in bundles], self._similarity_top_k)

    async def aretrieve_batch(self, queries: Sequence[QueryType]) -> List[List[NodeWithScore]]:
        """Async :meth:`retrieve_batch`, run in a worker thread."""
        return await asyncio.to_thread(self.retrieve_batch, queries)

    # Text only.

    def text_retrieve(self, str_or_query_bundle: QueryType) -> List[NodeWithScore]:
        """Retrieve with the question alone, ignoring any image in the bundle."""
        query = self._query(_text_bundle(str_or_query_bundle), use_image=False)
        return self._index.search_batch([query], self._similarity_top_k)[0]

    async def atext_retrieve(self, str_or_query_bundle: QueryType) -> List[NodeWithScore]:
        return await asyncio.to_thread(self.text_retrieve, str_or_query_bundle)

    # Image nodes only.

    def _image_nodes(self, query: Dict[str, Any]) -> List[NodeWithScore]:
        """Return the best ``image_similarity_top_k`` nodes that carry an image.

        FLMR scores all nodes together, so this searches for more candidates, doubling k,
        until enough image nodes are found or the whole index was searched.
        """
        wanted = self._image_similarity_top_k
        total = len(self._index)
        k = min(total, wanted * 4)
        while True:
            hits = [hit for hit in self._index.search_batch([query], k)[0] if node_has_image(hit.node)]
            if len(hits) >= wanted or k >= total:
                return hits[:wanted]
            k = min(total, k * 2)

    def _text_to_image_retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return self._image_nodes(self._query(query_bundle, use_image=False))

    def _image_to_image_retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return self._image_nodes(self._query(query_bundle, use_text=False))

    async def _atext_to_image_retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return await asyncio.to_thread(self._text_to_image_retrieve, query_bundle)

    async def _aimage_to_image_retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return await asyncio.to_thread(self._image_to_image_retrieve, query_bundle)

    def text_to_image_retrieve(self, str_or_query_bundle: QueryType) -> List[NodeWithScore]:
        """Retrieve image nodes with the question alone."""
        return self._text_to_image_retrieve(_text_bundle(str_or_query_bundle))

    def image_to_image_retrieve(self, str_or_query_bundle: QueryType) -> List[NodeWithScore]:
        """Retrieve image nodes with the query image alone; a string is an image path."""
        return self._image_to_image_retrieve(_image_bundle(str_or_query_bundle))

    async def atext_to_image_retrieve(self, str_or_query_bundle: QueryType) -> List[NodeWithScore]:
        return await self._atext_to_image_retrieve(_text_bundle(str_or_query_bundle))

    async def aimage_to_image_retrieve(self, str_or_query_bundle: QueryType) -> List[NodeWithScore]:
        return await self._aimage_to_image_retrieve(_image_bundle(str_or_query_bundle))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value

