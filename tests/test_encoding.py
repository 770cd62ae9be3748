"""Tests of query and document encoding against the reference outputs of the tiny PreFLMR fixture."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import flmr_rag.encoding as encoding
from flmr_rag.encoding import (
    DEFAULT_INSTRUCTIONS,
    FLMREncoder,
    ImageLoadError,
    Query,
    load_image,
    resolve_device,
    resolve_dtype,
)


@pytest.fixture(scope="module")
def fixture_data(preflmr_tiny_path: Path) -> dict:
    cases = json.loads((preflmr_tiny_path / "cases.json").read_text(encoding="utf-8"))
    expected = load_file(str(preflmr_tiny_path / "expected.safetensors"))
    return {"cases": cases, "expected": expected, "path": preflmr_tiny_path}


@pytest.fixture(scope="module")
def encoder(preflmr_tiny_path: Path) -> FLMREncoder:
    from flmr_rag.models import FLMRModelForRetrieval, load_image_processor

    model = FLMRModelForRetrieval.from_pretrained(str(preflmr_tiny_path)).eval()
    return FLMREncoder(model, load_image_processor(preflmr_tiny_path, model.config), batch_size=3)


@pytest.fixture
def reset_separator_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "_warned_missing_separator", False)


def _kept_rows(matrices: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    mask = mask.reshape(mask.shape[0], mask.shape[1])
    return [matrices[row][mask[row]] for row in range(matrices.shape[0])]


def test_documents_match_reference_kept_tokens(encoder: FLMREncoder, fixture_data: dict) -> None:
    texts = [document["text"] for document in fixture_data["cases"]["documents"]]
    embeddings, doclens = encoder.encode_documents(texts)
    expected = _kept_rows(fixture_data["expected"]["context_late_interaction_output"], fixture_data["expected"]["context_mask"])
    assert doclens == [rows.shape[0] for rows in expected]
    assert embeddings.dtype == torch.float16
    torch.testing.assert_close(embeddings.float(), torch.cat(expected), atol=1e-3, rtol=0)


def test_documents_with_images_match_reference(encoder: FLMREncoder, fixture_data: dict) -> None:
    case = fixture_data["cases"]["multimodal_doc_case"]
    images = [fixture_data["cases"]["images"][index]["file"] for index in case["image_indices"]]
    texts = [fixture_data["cases"]["documents"][index]["text"] for index in case["doc_indices"]]
    # Mix in a text-only document so one call holds both kinds of batch.
    embeddings, doclens = encoder.encode_documents(
        [*texts, "Only text here."], [str(fixture_data["path"] / image) for image in images] + [None]
    )
    expected = _kept_rows(fixture_data["expected"]["docimg_late_interaction_output"], fixture_data["expected"]["docimg_context_mask"])
    assert doclens[:-1] == [rows.shape[0] for rows in expected]
    torch.testing.assert_close(embeddings[: sum(doclens[:-1])].float(), torch.cat(expected), atol=1e-3, rtol=0)


def test_document_batch_size_does_not_change_output(encoder: FLMREncoder, fixture_data: dict) -> None:
    texts = [document["text"] for document in fixture_data["cases"]["documents"]]
    one_batch = FLMREncoder(encoder.model, encoder.image_processor, batch_size=16)
    first, first_lengths = encoder.encode_documents(texts)
    second, second_lengths = one_batch.encode_documents(texts)
    assert first_lengths == second_lengths
    torch.testing.assert_close(first.float(), second.float(), atol=2e-3, rtol=0)


def test_queries_match_reference(encoder: FLMREncoder, fixture_data: dict, reset_separator_warning: None) -> None:
    cases = fixture_data["cases"]
    queries = [
        Query(question=query["text"], image=str(fixture_data["path"] / query["image_file"]), instruction="")
        for query in cases["queries"]
    ]
    embeddings = encoder.encode_queries(queries)
    torch.testing.assert_close(embeddings, fixture_data["expected"]["query_late_interaction_output"], atol=1e-5, rtol=0)


def test_text_only_queries_switch_vision_off(encoder: FLMREncoder, fixture_data: dict, reset_separator_warning: None) -> None:
    queries = [Query(question=query["text"], instruction="") for query in fixture_data["cases"]["queries"]]
    embeddings = encoder.encode_queries(queries)
    expected = fixture_data["expected"]["query_textonly_late_interaction_output"]
    assert embeddings.shape == expected.shape
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)


def test_mixed_query_batch_pads_text_queries(encoder: FLMREncoder, fixture_data: dict) -> None:
    image = str(fixture_data["path"] / "images" / "img0_red_circle.png")
    mixed = encoder.encode_queries([Query("What is red?"), Query("What is red?", image)])
    alone = encoder.encode_queries([Query("What is red?")])
    assert mixed.shape[1] == 80
    torch.testing.assert_close(mixed[0, :32], alone[0], atol=1e-5, rtol=0)
    assert torch.count_nonzero(mixed[0, 32:]) == 0


def test_image_only_query_uses_image_instruction(encoder: FLMREncoder) -> None:
    assert encoder.query_text(Query(image=b"png")) == DEFAULT_INSTRUCTIONS["image"]


def test_default_instruction_per_query_kind(encoder: FLMREncoder) -> None:
    both = encoder.query_text(Query("What is it?", image=b"png"))
    text = encoder.query_text(Query("What is it?"))
    assert both == f"{DEFAULT_INSTRUCTIONS['image_question']} What is it?"
    assert text == f"{DEFAULT_INSTRUCTIONS['text']} What is it?"
    assert all(instruction.endswith(":") for instruction in DEFAULT_INSTRUCTIONS.values())


def test_instruction_without_separator_gets_one(encoder: FLMREncoder) -> None:
    assert encoder.query_text(Query("Why?", instruction="Find passages")) == "Find passages: Why?"


def test_configured_instructions_override_defaults(encoder: FLMREncoder) -> None:
    custom = FLMREncoder(encoder.model, encoder.image_processor, instructions={"text": "Search the wiki:"})
    assert custom.query_text(Query("Why?")) == "Search the wiki: Why?"


def test_missing_separator_warns_once(
    encoder: FLMREncoder, reset_separator_warning: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flmr_rag.encoding"):
        encoder.encode_queries([Query("no separator here", instruction="")])
        encoder.encode_queries([Query("still none", instruction="")])
    warnings = [record for record in caplog.records if "separator" in record.getMessage()]
    assert len(warnings) == 1


def test_long_question_is_truncated_with_warning(encoder: FLMREncoder, caplog: pytest.LogCaptureFixture) -> None:
    question = " ".join(["word"] * 60) + "?"
    with caplog.at_level(logging.WARNING, logger="flmr_rag.encoding"):
        embeddings = encoder.encode_queries([Query(question)])
    assert "truncated" in caplog.text
    assert embeddings.shape == (1, 32, 128)


def test_query_without_question_or_image_raises(encoder: FLMREncoder) -> None:
    with pytest.raises(ValueError, match="neither a question nor an image"):
        encoder.encode_queries([Query(question="  ")])


def test_corrupt_document_image_names_file(encoder: FLMREncoder, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="corrupt.png"):
        encoder.encode_documents(["text"], [str(corrupt)])


def test_missing_query_image_names_file(encoder: FLMREncoder, tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="absent.jpg does not exist"):
        encoder.encode_queries([Query("What?", str(tmp_path / "absent.jpg"))])


def test_encoder_rejects_nonpositive_batch_size(encoder: FLMREncoder) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        FLMREncoder(encoder.model, encoder.image_processor, batch_size=0)


def test_load_image_applies_exif_orientation() -> None:
    picture = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", exif=exif)
    loaded = load_image(buffer.getvalue())
    assert loaded.size == (20, 40)


def test_load_image_converts_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(path)
    assert load_image(path).mode == "RGB"


def test_load_image_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="int"):
        load_image(3)  # type: ignore[arg-type]


def test_resolve_device_defaults_to_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected


def test_resolve_dtype_defaults_per_device() -> None:
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu")) == torch.float16


def test_resolve_dtype_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="int8"):
        resolve_dtype("int8", torch.device("cpu"))


def test_instruction_without_separator_warns(encoder: FLMREncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(encoding, "_appended_separator_warned", set())
    with caplog.at_level(logging.WARNING, logger="flmr_rag.encoding"):
        encoder.query_text(Query("Why?", instruction="Retrieve documents"))
        encoder.query_text(Query("How?", instruction="Retrieve documents"))
    warnings = [record.getMessage() for record in caplog.records if "Retrieve documents" in record.getMessage()]
    assert len(warnings) == 1
    assert "'Retrieve documents:'" in warnings[0]


class _RecordList(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_very_long_question_no_transformers_warning(encoder: FLMREncoder) -> None:
    encoder.model.query_tokenizer.deprecation_warnings.pop("sequence-length-is-longer-than-the-specified-maximum", None)
    handler = _RecordList()
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        encoder.encode_queries([Query(" ".join(["word"] * 1000) + "?")])
    finally:
        transformers_logger.removeHandler(handler)
    assert not [message for message in handler.messages if "Token indices sequence length" in message]
