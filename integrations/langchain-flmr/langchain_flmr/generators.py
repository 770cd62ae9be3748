"""FLMRAnswerGenerator: flmr-rag's RA-VQA reader as a LangChain Runnable."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, PrivateAttr

from flmr_rag.generation import Answer, AnswerGenerator

from ._images import load_image


def _passages(input: dict[str, Any]) -> tuple[list[str], Optional[list[float]], Optional[list[str]]]:
    """Return passage texts, retrieval scores and ids from ``sources`` Documents or ``passages`` texts."""
    if "sources" in input:
        sources: Sequence[Document] = input["sources"]
        texts = [document.page_content for document in sources]
        scores = [document.metadata.get("score") for document in sources]
        ids = [document.id for document in sources]
        return (
            texts,
            None if any(score is None for score in scores) else [float(score) for score in scores],
            None if any(doc_id is None for doc_id in ids) else [str(doc_id) for doc_id in ids],
        )
    if "passages" in input:
        scores = input.get("scores")
        return list(input["passages"]), None if scores is None else [float(score) for score in scores], None
    raise ValueError(
        f"the generator input needs 'sources' (retrieved Documents) or 'passages' (texts); got keys {sorted(input)}"
    )


class FLMRAnswerGenerator(RunnableSerializable[dict, Union[str, dict]]):
    """Answer a question from retrieved passages with an ``flmr_rag`` RA-VQA ``AnswerGenerator``.

    Input: a dict with ``question``, optional ``image`` (path, PIL image, bytes or base64 text)
    and either ``sources`` or ``passages``. ``sources`` are the retriever's Documents, and their
    ``metadata["score"]`` values become the retrieval term of the joint score. ``passages`` are
    texts with optional ``scores``.

    Output: the answer text, or with ``return_details=True`` the ``Answer.to_dict()`` dict
    (answer, supporting passage and every candidate with its scores).

    ``use_image``: None passes the image only to generators that accept images
    (``AnswerGenerator.accepts_images``) and drops it for text-only ones, True always passes it
    (a text-only generator then raises), False never does.

    Example:
        >>> reader = FLMRAnswerGenerator.from_pretrained("google/flan-t5-base")
        >>> reader.invoke({"question": "What colour is the bus?", "passages": ["The bus is red."]})
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    use_image: Optional[bool] = None
    return_details: bool = False

    _generator: AnswerGenerator = PrivateAttr()

    def __init__(self, *, generator: AnswerGenerator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._generator = generator

    @classmethod
    def from_pretrained(
        cls, model_id_or_folder: Union[str, os.PathLike], device: Optional[str] = None, dtype: Any = None, **kwargs: Any
    ) -> "FLMRAnswerGenerator":
        """Load a Hugging Face generator by hub id or folder; ``kwargs`` go to ``AnswerGenerator``."""
        return cls(generator=AnswerGenerator.from_pretrained(model_id_or_folder, device=device, dtype=dtype, **kwargs))

    @property
    def generator(self) -> AnswerGenerator:
        """The wrapped ``flmr_rag.generation.AnswerGenerator``."""
        return self._generator

    def _answer(self, input: dict[str, Any]) -> Union[str, dict]:
        if not isinstance(input, dict):
            raise TypeError(f"FLMRAnswerGenerator takes a dict with 'question' and 'sources' or 'passages', got {type(input).__name__}")
        passages, scores, ids = _passages(input)
        image = input.get("image")
        send_image = self._generator.accepts_images if self.use_image is None else self.use_image
        loaded = load_image(image) if image is not None and send_image else None

        answer: Answer = self._generator.generate(
            input.get("question") or "", passages, image=loaded, retrieval_scores=scores, passage_ids=ids
        )
        return answer.to_dict() if self.return_details else answer.answer

    def invoke(self, input: dict[str, Any], config: Optional[RunnableConfig] = None, **kwargs: Any) -> Union[str, dict]:
        """Generate the final answer for one input dict."""
        return self._call_with_config(self._answer, input, config)

    async def ainvoke(self, input: dict[str, Any], config: Optional[RunnableConfig] = None, **kwargs: Any) -> Union[str, dict]:
        """Async :meth:`invoke`; generation runs in a worker thread."""

        async def answer_in_thread(value: dict[str, Any]) -> Union[str, dict]:
            return await run_in_executor(None, self._answer, value)

        return await self._acall_with_config(answer_in_thread, input, config)
