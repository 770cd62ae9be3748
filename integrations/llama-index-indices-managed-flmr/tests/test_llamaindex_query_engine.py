"""The visual-QA query engine and RetrieverQueryEngine over FLMRIndex, with llama-index-core's mock LLMs."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms.mock import MockLLM, MockLLMWithChatMemoryOfLastCall
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle
from PIL import Image

from llama_index.indices.managed.flmr import FLMRIndex, FLMRQueryBundle, FLMRVisualQAQueryEngine


def _chat_llm() -> MockLLMWithChatMemoryOfLastCall:
    return MockLLMWithChatMemoryOfLastCall(is_chat_model=True)


def test_visual_qa_sends_image_then_passages(index: FLMRIndex, fixture_images: list[Path]) -> None:
    llm = _chat_llm()
    engine = index.as_visual_qa_engine(llm=llm, similarity_top_k=2)
    response = engine.query(QueryBundle(query_str="What shape is this?", image_path=str(fixture_images[0])))
    blocks = llm.last_chat_messages[0].blocks
    assert isinstance(blocks[0], ImageBlock)
    assert isinstance(blocks[1], TextBlock)
    assert "What shape is this?" in blocks[1].text
    for hit in response.source_nodes:
        assert hit.node.get_content() in blocks[1].text


def test_visual_qa_sources_match_retriever(index: FLMRIndex, fixture_images: list[Path]) -> None:
    bundle = QueryBundle(query_str="What shape is this?", image_path=str(fixture_images[1]))
    response = index.as_visual_qa_engine(llm=_chat_llm(), similarity_top_k=3).query(bundle)
    expected = index.as_retriever(similarity_top_k=3).retrieve(bundle)
    assert [hit.node.node_id for hit in response.source_nodes] == [hit.node.node_id for hit in expected]


def test_visual_qa_response_is_llm_output(index: FLMRIndex, fixture_images: list[Path]) -> None:
    llm = _chat_llm()
    response = index.as_visual_qa_engine(llm=llm).query(QueryBundle(query_str="Which colour?", image_path=str(fixture_images[2])))
    assert "Which colour?" in response.response
    assert response.metadata["has_query_image"] is True


def test_visual_qa_pil_image_is_sent_as_png(index: FLMRIndex, fixture_images: list[Path]) -> None:
    llm = _chat_llm()
    with Image.open(fixture_images[3]) as opened:
        image = opened.convert("RGB")
    index.as_visual_qa_engine(llm=llm).query(FLMRQueryBundle(query_str="Which shape?", image=image))
    block = llm.last_chat_messages[0].blocks[0]
    assert block.image_mimetype == "image/png"


def test_visual_qa_text_only_sends_no_image(index: FLMRIndex) -> None:
    llm = _chat_llm()
    response = index.as_visual_qa_engine(llm=llm).query("Which shape has three sides?")
    assert [type(block) for block in llm.last_chat_messages[0].blocks] == [TextBlock]
    assert response.metadata["has_query_image"] is False


async def test_visual_qa_aquery_matches_query(index: FLMRIndex, fixture_images: list[Path]) -> None:
    bundle = QueryBundle(query_str="What is it?", image_path=str(fixture_images[4]))
    engine = index.as_visual_qa_engine(llm=_chat_llm(), similarity_top_k=2)
    asynchronous = await engine.aquery(bundle)
    synchronous = engine.query(bundle)
    assert asynchronous.response == synchronous.response


def test_visual_qa_rejects_completion_llm(index: FLMRIndex) -> None:
    with pytest.raises(ValueError, match="not a chat model"):
        FLMRVisualQAQueryEngine(retriever=index.as_retriever(), llm=MockLLM())


def test_visual_qa_prompt_can_be_updated(index: FLMRIndex) -> None:
    from llama_index.core.prompts import PromptTemplate

    llm = _chat_llm()
    engine = index.as_visual_qa_engine(llm=llm)
    engine.update_prompts({"visual_qa_prompt": PromptTemplate("CTX {context_str} Q {query_str}")})
    engine.query("a circle?")
    assert llm.last_chat_messages[0].blocks[-1].text.startswith("CTX [1]")


def test_retriever_query_engine_multimodal(index: FLMRIndex, fixture_images: list[Path]) -> None:
    llm = _chat_llm()
    engine = RetrieverQueryEngine.from_args(index.as_retriever(similarity_top_k=3), llm=llm, multimodal=True)
    response = engine.query(QueryBundle(query_str="What shape is this?", image_path=str(fixture_images[0])))
    assert len(response.source_nodes) == 3
    assert llm.last_chat_messages is not None


def test_as_query_engine_forwards_top_k(index: FLMRIndex) -> None:
    engine = index.as_query_engine(llm=_chat_llm(), multimodal=True, similarity_top_k=2)
    response = engine.query("Which shape has four equal sides?")
    assert len(response.source_nodes) == 2
