"""create_visual_qa_chain with a fake chat model and with a local RA-VQA generator."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage

import flmr_rag
from flmr_rag.generation import AnswerGenerator
from langchain_flmr import FLMRAnswerGenerator, FLMRRetriever, create_visual_qa_chain

QUESTION = "What shape is shown?"


class ChatMessageRecorder(BaseCallbackHandler):
    """Records the messages of every chat model call."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any) -> None:
        self.calls.extend(messages)


@pytest.fixture
def retriever(flmr_core: flmr_rag.FLMRRetriever) -> FLMRRetriever:
    return FLMRRetriever(retriever=flmr_core, k=3)


def _image_bytes(block: dict[str, Any]) -> bytes:
    """Decode an image content block: the standard form, or the OpenAI form chat models receive."""
    if block["type"] == "image_url":
        header, _, data = block["image_url"]["url"].partition(",")
        assert header == "data:image/png;base64"
        return base64.b64decode(data)
    assert block["type"] == "image"
    assert block["mime_type"] == "image/png"
    return base64.b64decode(block["base64"])


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_chat_chain_returns_answer_and_sources(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["a circle"]))
    result = chain.invoke({"question": QUESTION, "image": str(fixture_images[0])})
    assert result["answer"] == "a circle"
    assert [document.id for document in result["sources"]] == [
        document.id for document in retriever.invoke(QUESTION, image=str(fixture_images[0]))
    ]


def test_chat_chain_sends_image_and_passages(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    recorder = ChatMessageRecorder()
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["a circle"]))
    result = chain.invoke({"question": QUESTION, "image": _b64(fixture_images[0])}, {"callbacks": [recorder]})
    image_block, text_block = recorder.calls[0][0].content
    assert _image_bytes(image_block) == fixture_images[0].read_bytes()
    assert QUESTION in text_block["text"]
    for document in result["sources"]:
        assert document.page_content in text_block["text"]


def test_chat_chain_without_image_sends_text_only(retriever: FLMRRetriever) -> None:
    recorder = ChatMessageRecorder()
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["three"]))
    chain.invoke({"question": "How many sides has a triangle?"}, {"callbacks": [recorder]})
    assert [block["type"] for block in recorder.calls[0][0].content] == ["text"]


def test_chat_chain_k_limits_sources(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["x"]), k=1)
    assert len(chain.invoke({"question": QUESTION, "image": str(fixture_images[2])})["sources"]) == 1


async def test_chat_chain_ainvoke(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["a star"]))
    result = await chain.ainvoke({"question": QUESTION, "image": str(fixture_images[4])})
    assert result["answer"] == "a star"
    assert all(isinstance(document, Document) for document in result["sources"])


def test_chat_chain_batch_retrieves_in_one_call(
    retriever: FLMRRetriever, flmr_core: flmr_rag.FLMRRetriever, fixture_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = flmr_core.search_batch

    def counting_search_batch(queries: Any, **kwargs: Any) -> Any:
        calls.append(len(queries))
        return original(queries, **kwargs)

    monkeypatch.setattr(flmr_core, "search_batch", counting_search_batch)
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["a", "b"]))
    results = chain.batch([{"question": QUESTION, "image": str(fixture_images[0])}, {"question": QUESTION, "image": str(fixture_images[1])}])
    assert calls == [2]
    assert sorted(result["answer"] for result in results) == ["a", "b"]


async def test_chat_chain_abatch(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["a"]))
    results = await chain.abatch([{"question": QUESTION, "image": str(fixture_images[0])}, {"question": "a square?"}])
    assert [len(result["sources"]) for result in results] == [3, 3]


def test_chain_rejects_completion_llm(retriever: FLMRRetriever) -> None:
    with pytest.raises(TypeError, match="cannot receive the image"):
        create_visual_qa_chain(retriever, FakeListLLM(responses=["x"]))


def test_chain_rejects_prompt_without_placeholders(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="placeholders"):
        create_visual_qa_chain(retriever, FakeListChatModel(responses=["x"]), prompt="Answer: {question}")


def test_chain_rejects_string_input(retriever: FLMRRetriever) -> None:
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["x"]))
    with pytest.raises(ValueError, match="'question'"):
        chain.invoke("What shape is shown?")


def test_chain_missing_image_raises(retriever: FLMRRetriever, tmp_path: Path) -> None:
    chain = create_visual_qa_chain(retriever, FakeListChatModel(responses=["x"]))
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        chain.invoke({"question": QUESTION, "image": str(tmp_path / "nowhere.png")})


def test_generator_chain_answers_from_sources(retriever: FLMRRetriever, t5_answer_generator: AnswerGenerator, fixture_images: list[Path]) -> None:
    chain = create_visual_qa_chain(retriever, FLMRAnswerGenerator(generator=t5_answer_generator))
    result = chain.invoke({"question": QUESTION, "image": str(fixture_images[3])})
    passages = [document.page_content for document in result["sources"]]
    scores = [document.metadata["score"] for document in result["sources"]]
    expected = t5_answer_generator.generate(QUESTION, passages, retrieval_scores=scores)
    assert result["answer"] == expected.answer


def test_generator_details_carry_candidates(retriever: FLMRRetriever, t5_answer_generator: AnswerGenerator) -> None:
    reader = FLMRAnswerGenerator(generator=t5_answer_generator, return_details=True)
    sources = retriever.invoke("a square")
    details = reader.invoke({"question": "Which shape?", "sources": sources})
    assert [candidate["passage_id"] for candidate in details["candidates"]] == [document.id for document in sources]


def test_generator_accepts_passage_texts(t5_answer_generator: AnswerGenerator) -> None:
    reader = FLMRAnswerGenerator(generator=t5_answer_generator)
    answer = reader.invoke({"question": "Which colour?", "passages": ["The sky is blue.", "Grass is green."], "scores": [2.0, 1.0]})
    expected = t5_answer_generator.generate("Which colour?", ["The sky is blue.", "Grass is green."], retrieval_scores=[2.0, 1.0])
    assert answer == expected.answer


async def test_generator_ainvoke_matches_invoke(t5_answer_generator: AnswerGenerator) -> None:
    reader = FLMRAnswerGenerator(generator=t5_answer_generator)
    value = {"question": "Which colour?", "passages": ["The sky is blue."]}
    assert await reader.ainvoke(value) == reader.invoke(value)


def test_generator_forced_image_on_text_model_raises(t5_answer_generator: AnswerGenerator, fixture_images: list[Path]) -> None:
    reader = FLMRAnswerGenerator(generator=t5_answer_generator, use_image=True)
    with pytest.raises(ValueError, match="text-only"):
        reader.invoke({"question": "Which colour?", "passages": ["The sky is blue."], "image": str(fixture_images[0])})


def test_generator_without_passages_raises(t5_answer_generator: AnswerGenerator) -> None:
    with pytest.raises(ValueError, match="'sources'"):
        FLMRAnswerGenerator(generator=t5_answer_generator).invoke({"question": "Which colour?"})
