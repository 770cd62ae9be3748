"""Reader prompt templates: the RA-VQA-v2 default, optional sections and custom templates."""

from __future__ import annotations

import pytest

from flmr_rag.generation import RAVQA_V2_TEMPLATE, PromptTemplate


def test_default_template_full_prompt() -> None:
    prompt = RAVQA_V2_TEMPLATE.format(
        "What is the man riding?",
        passage="Surfing is a surface water sport.",
        caption="a man riding a wave",
        objects=["white surfboard", "man"],
        ocr=["BILLABONG"],
    )

    assert prompt == (
        "Question: What is the man riding? Caption: a man riding a wave Objects: white surfboard, man BILLABONG."
        " Knowledge: Surfing is a surface water sport. Answer:"
    )


def test_default_template_question_and_passage_only() -> None:
    prompt = RAVQA_V2_TEMPLATE.format("Why?", passage="Because.")
    assert prompt == "Question: Why? Knowledge: Because. Answer:"


def test_default_template_without_passage_is_no_knowledge_prompt() -> None:
    assert RAVQA_V2_TEMPLATE.format("Why?") == "Question: Why? Answer:"


def test_empty_caption_leaves_section_out() -> None:
    assert "Caption" not in RAVQA_V2_TEMPLATE.format("Why?", caption="  ")


def test_ocr_newlines_flattened_and_duplicates_dropped() -> None:
    prompt = RAVQA_V2_TEMPLATE.format("Why?", ocr=["STOP\nsign", "STOP sign", "66"])
    assert prompt == "Question: Why? Objects: STOP sign 66. Answer:"


def test_ocr_as_single_string() -> None:
    assert RAVQA_V2_TEMPLATE.format("Why?", ocr="EXIT") == "Question: Why? Objects: EXIT. Answer:"


def test_custom_template_fields() -> None:
    template = PromptTemplate(template="{knowledge}\nQ: {question}\nA:", knowledge_section="Context: {passage}")
    assert template.format("Who?", passage="Ada wrote it.") == "Context: Ada wrote it.\nQ: Who?\nA:"


def test_template_without_question_raises() -> None:
    with pytest.raises(ValueError, match="has no {question} field"):
        PromptTemplate(template="Knowledge:{knowledge} Answer:")


def test_template_with_unknown_field_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown fields \['passage'\]"):
        PromptTemplate(template="{question} {passage}")
