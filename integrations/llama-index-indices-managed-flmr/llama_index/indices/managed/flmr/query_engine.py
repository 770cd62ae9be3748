"""A visual question answering query engine: retrieved passages plus the query image to a multimodal LLM.

LlamaIndex's response synthesizers pass only ``query_str`` to the LLM, so the question image
never reaches the generator. This engine retrieves with the whole bundle (question and
image) and sends one user message to a chat LLM: an image block with the query image, then a
text block with the numbered passages and the question.
"""

from __future__ import annotations

import io
from typing import Any, Dict, List, Optional, Sequence

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import BasePromptTemplate, PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from PIL import Image

from ._convert import query_image

DEFAULT_VISUAL_QA_PROMPT = PromptTemplate(
    "Answer the question about the image, using the numbered passages below where they help. "
    "Answer briefly; say 'unknown' if neither the image nor the passages answer it.\n\n"
    "Passages:\n{context_str}\n\n"
    "Question: {query_str}\n"
    "Answer: "
)


def _image_block(image: Any) -> ImageBlock:
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return ImageBlock(image=buffer.getvalue(), image_mimetype="image/png")
    if isinstance(image, (bytes, bytearray)):
        return ImageBlock(image=bytes(image))
    return ImageBlock(path=str(image))


def _context(nodes: Sequence[NodeWithScore]) -> str:
    passages = [f"[{number}] {hit.node.get_content(metadata_mode=MetadataMode.LLM)}" for number, hit in enumerate(nodes, 1)]
    return "\n\n".join(passages) if passages else "(no passages retrieved)"


class FLMRVisualQAQueryEngine(BaseQueryEngine):
    """Answer a question about an image from retrieved passages with a multimodal chat LLM.

    Args:
        retriever: any LlamaIndex retriever; an ``FLMRMultiModalRetriever`` uses the query image
            for retrieval too.
        llm: a chat LLM that accepts ``ImageBlock`` content (``llm.metadata.is_chat_model``).
        prompt: a template with ``{context_str}`` and ``{query_str}``.
        node_postprocessors: applied to the retrieved nodes before they reach the prompt.

    Query with an ``FLMRQueryBundle`` (``image=``) or a ``QueryBundle`` with ``image_path``; a
    plain string is a question without an image. The response's ``source_nodes`` are the
    retrieved nodes, and ``metadata["has_query_image"]`` records whether an image was sent.

    Raises:
        ValueError: ``llm`` is not a chat model, so it cannot receive the image.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: LLM,
        prompt: Optional[BasePromptTemplate] = None,
        node_postprocessors: Optional[List[BaseNodePostprocessor]] = None,
        callback_manager: Optional[CallbackManager] = None,
    ) -> None:
        if not llm.metadata.is_chat_model:
            raise ValueError(
                f"{type(llm).__name__} is not a chat model (llm.metadata.is_chat_model is False), so it cannot "
                "receive the query image; use a multimodal chat LLM"
            )
        self._retriever = retriever
        self._llm = llm
        self._prompt = prompt or DEFAULT_VISUAL_QA_PROMPT
        self._node_postprocessors = list(node_postprocessors or [])
        super().__init__(callback_manager=callback_manager)

    def _get_prompts(self) -> Dict[str, Any]:
        return {"visual_qa_prompt": self._prompt}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        if "visual_qa_prompt" in prompts:
            self._prompt = prompts["visual_qa_prompt"]

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def _postprocess(self, nodes: List[NodeWithScore], query_bundle: QueryBundle) -> List[NodeWithScore]:
        for postprocessor in self._node_postprocessors:
            nodes = postprocessor.postprocess_nodes(nodes, query_bundle=query_bundle)
        return nodes

    def _messages(self, query_bundle: QueryBundle, nodes: Sequence[NodeWithScore]) -> List[ChatMessage]:
        blocks: List[Any] = []
        image = query_image(query_bundle)
        if image is not None:
            blocks.append(_image_block(image))
        text = self._prompt.format(context_str=_context(nodes), query_str=query_bundle.query_str)
        blocks.append(TextBlock(text=text))
        return [ChatMessage(role=MessageRole.USER, blocks=blocks)]

    def _response(self, answer: Any, nodes: List[NodeWithScore], query_bundle: QueryBundle) -> Response:
        return Response(
            response=str(answer.message.content or ""),
            source_nodes=nodes,
            metadata={"has_query_image": query_image(query_bundle) is not None},
        )

    def _query(self, query_bundle: QueryBundle) -> Response:
        nodes = self._postprocess(self._retriever.retrieve(query_bundle), query_bundle)
        answer = self._llm.chat(self._messages(query_bundle, nodes))
        return self._response(answer, nodes, query_bundle)

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        nodes = self._postprocess(await self._retriever.aretrieve(query_bundle), query_bundle)
        answer = await self._llm.achat(self._messages(query_bundle, nodes))
        return self._response(answer, nodes, query_bundle)
