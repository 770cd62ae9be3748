"""create_visual_qa_chain: retrieve passages for a question about an image, then answer it.

The chain is ``retrieve | {answer, sources}``. Retrieval adds ``sources`` (the retriever's
Documents) to the input. The generation step is either a chat model that receives the image and
the numbered passages in one message, or an :class:`FLMRAnswerGenerator` (RA-VQA over a local
Hugging Face generator).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Optional, Union

from langchain_core.documents import Document
from langchain_core.language_models import BaseLLM
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnableParallel

from ._images import image_to_base64, load_image
from .generators import FLMRAnswerGenerator
from .retrievers import FLMRRetriever

DEFAULT_VISUAL_QA_PROMPT = (
    "Answer the question about the image, using the numbered passages below where they help. "
    "Answer briefly; say 'unknown' if neither the image nor the passages answer it.\n\n"
    "Passages:\n{context}\n\n"
    "Question: {question}"
)


def _question_and_image(input: Any) -> tuple[str, Any]:
    if not isinstance(input, dict) or not isinstance(input.get("question"), str):
        raise ValueError(
            "the visual QA chain takes a dict {'question': str, 'image': path | PIL image | bytes | base64 str}; "
            f"got {type(input).__name__}" + (f" with keys {sorted(input)}" if isinstance(input, dict) else "")
        )
    return input["question"], input.get("image")


class _AttachSources(Runnable[dict, dict]):
    """Add ``sources``, the retrieved Documents, to the input dict; ``batch`` retrieves in one call."""

    def __init__(self, retriever: BaseRetriever, k: Optional[int]) -> None:
        self.retriever = retriever
        self.options = {} if k is None else {"k": k}

    def _query(self, input: Any) -> Union[str, dict]:
        question, image = _question_and_image(input)
        if isinstance(self.retriever, FLMRRetriever):
            return {"question": question, "image": image}
        # Other retrievers take text only, but the image still reaches the generation step.
        return question

    def invoke(self, input: dict, config: Optional[RunnableConfig] = None, **kwargs: Any) -> dict:
        documents = self.retriever.invoke(self._query(input), config, **self.options)
        return {**input, "sources": documents}

    async def ainvoke(self, input: dict, config: Optional[RunnableConfig] = None, **kwargs: Any) -> dict:
        documents = await self.retriever.ainvoke(self._query(input), config, **self.options)
        return {**input, "sources": documents}

    def batch(self, inputs: list[dict], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        found = self.retriever.batch(
            [self._query(input) for input in inputs], config, return_exceptions=return_exceptions, **self.options
        )
        return [documents if isinstance(documents, Exception) else {**input, "sources": documents} for input, documents in zip(inputs, found)]

    async def abatch(self, inputs: list[dict], config: Any = None, *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        found = await self.retriever.abatch(
            [self._query(input) for input in inputs], config, return_exceptions=return_exceptions, **self.options
        )
        return [documents if isinstance(documents, Exception) else {**input, "sources": documents} for input, documents in zip(inputs, found)]


def _context(sources: list[Document]) -> str:
    passages = [f"[{number}] {document.page_content}" for number, document in enumerate(sources, 1)]
    return "\n\n".join(passages) if passages else "(no passages retrieved)"


def _chat_messages(prompt: str) -> RunnableLambda:
    def build(input: dict) -> list[BaseMessage]:
        question, image = _question_and_image(input)
        content: list[dict[str, Any]] = []
        if image is not None:
            data, mime_type = image_to_base64(load_image(image))
            content.append({"type": "image", "base64": data, "mime_type": mime_type})
        content.append({"type": "text", "text": prompt.format(context=_context(input["sources"]), question=question)})
        return [HumanMessage(content=content)]

    return RunnableLambda(build, name="visual_qa_messages")


def create_visual_qa_chain(
    retriever: BaseRetriever,
    llm: Union[Runnable, FLMRAnswerGenerator],
    *,
    k: Optional[int] = None,
    prompt: str = DEFAULT_VISUAL_QA_PROMPT,
) -> Runnable[dict, dict]:
    """Build an LCEL chain from ``{"question", "image"}`` to ``{"answer", "sources"}``.

    Args:
        retriever: an :class:`FLMRRetriever` (retrieves with the question and the image) or any
            other retriever (retrieves with the question only).
        llm: a chat model that accepts image content blocks, or an :class:`FLMRAnswerGenerator`.
            A chat model gets one human message with the image (a standard
            ``{"type": "image", "base64": ..., "mime_type": ...}`` block) and the prompt. A
            generator gets the question, the image and the retrieved Documents.
        k: passages per question; the retriever's own ``k`` when None.
        prompt: the text of the message, with ``{context}`` (numbered passages) and ``{question}``.

    The image may be a file path, a PIL image, bytes or base64 text. ``sources`` are the
    retrieved Documents. ``batch`` retrieves for all inputs with one model call.

    Raises:
        TypeError: ``llm`` is a text-completion model (it cannot receive the image) or not a Runnable.
        ValueError: ``prompt`` lacks ``{context}`` or ``{question}``.
    """
    if "{context}" not in prompt or "{question}" not in prompt:
        raise ValueError("prompt must contain the placeholders {context} and {question}")
    if isinstance(llm, BaseLLM):
        raise TypeError(
            f"{type(llm).__name__} is a text-completion model and cannot receive the image; "
            "pass a chat model that accepts images, or an FLMRAnswerGenerator"
        )
    if not isinstance(llm, Runnable):
        raise TypeError(f"llm must be a chat model or an FLMRAnswerGenerator, got {type(llm).__name__}")

    if isinstance(llm, FLMRAnswerGenerator):
        answer: Runnable = llm
    else:
        answer = _chat_messages(prompt) | llm | StrOutputParser()

    respond = RunnableParallel(answer=answer, sources=itemgetter("sources"))
    return (_AttachSources(retriever, k) | respond).with_config(run_name="flmr_visual_qa")
