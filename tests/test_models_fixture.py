"""Parity of flmr_rag.models with the reference outputs stored in the preflmr-tiny fixture.

Tolerances (from the fixture's measurements of float32 CPU noise, about 3e-7 on embeddings):
token ids and masks exact, embeddings 1e-5, scores and losses 1e-4. The float16 model is
compared with the reference float16 run at 2e-3.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from flmr_rag.models import (
    FLMRContextEncoderTokenizer,
    FLMRModelForRetrieval,
    FLMRQueryEncoderTokenizer,
    load_image_processor,
)
from flmr_rag.scoring import late_interaction_scores

EMBEDDING_TOLERANCE = 1e-5
SCORE_TOLERANCE = 1e-4
FLOAT16_TOLERANCE = 2e-3


def max_abs_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert tuple(actual.shape) == tuple(expected.shape), f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return (actual.float() - expected.float()).abs().max().item()


@pytest.fixture(scope="module")
def expected(preflmr_tiny_path):
    return load_file(str(preflmr_tiny_path / "expected.safetensors"))


@pytest.fixture(scope="module")
def cases(preflmr_tiny_path):
    return json.loads((preflmr_tiny_path / "cases.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model(preflmr_tiny_path):
    return FLMRModelForRetrieval.from_pretrained(preflmr_tiny_path)


@pytest.fixture(scope="module")
def query_output(model, expected):
    with torch.inference_mode():
        return model.query(
            expected["query_input_ids"],
            expected["query_attention_mask"],
            pixel_values=expected["query_pixel_values"],
            output_hidden_states=True,
        )


@pytest.fixture(scope="module")
def doc_output(model, expected):
    with torch.inference_mode():
        return model.doc(expected["context_input_ids"], expected["context_attention_mask"])


# ----------------------------------------------------------------- tokenizers and images


def test_query_tokenizer_matches_reference_ids(preflmr_tiny_path, cases, expected):
    tokenizer = FLMRQueryEncoderTokenizer.from_pretrained(preflmr_tiny_path, subfolder="query_tokenizer")
    encoded = tokenizer([query["text"] for query in cases["queries"]])
    assert encoded["input_ids"].dtype == torch.int64
    assert torch.equal(encoded["input_ids"], expected["query_input_ids"])
    assert torch.equal(encoded["attention_mask"], expected["query_attention_mask"])


def test_context_tokenizer_max_length_matches_reference_ids(preflmr_tiny_path, cases, expected):
    tokenizer = FLMRContextEncoderTokenizer.from_pretrained(preflmr_tiny_path, subfolder="context_tokenizer")
    encoded = tokenizer([document["text"] for document in cases["documents"]], padding="max_length")
    assert torch.equal(encoded["input_ids"], expected["context_input_ids"])
    assert torch.equal(encoded["attention_mask"], expected["context_attention_mask"])


def test_context_tokenizer_longest_is_prefix_of_max_length(preflmr_tiny_path, cases, expected):
    tokenizer = FLMRContextEncoderTokenizer.from_pretrained(preflmr_tiny_path, subfolder="context_tokenizer")
    short_documents = [cases["documents"][index]["text"] for index in (0, 1, 3)]
    encoded = tokenizer(short_documents)
    length = encoded["input_ids"].shape[1]
    assert length < 512
    assert torch.equal(encoded["input_ids"], expected["context_input_ids"][[0, 1, 3], :length])
    assert torch.equal(encoded["attention_mask"], expected["context_attention_mask"][[0, 1, 3], :length])


def test_model_tokenizers_loaded_from_subfolders(model):
    assert isinstance(model.query_tokenizer, FLMRQueryEncoderTokenizer)
    assert isinstance(model.context_tokenizer, FLMRContextEncoderTokenizer)
    assert model.query_tokenizer.query_maxlen == 32
    assert model.context_tokenizer.doc_maxlen == 512


def test_image_processor_matches_reference_pixels(preflmr_tiny_path, cases, model, expected):
    processor = load_image_processor(preflmr_tiny_path, model.config)
    images = [Image.open(preflmr_tiny_path / query["image_file"]).convert("RGB") for query in cases["queries"]]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixel_values, expected["query_pixel_values"])


def test_model_holds_image_processor_from_folder(model):
    assert model.image_processor is not None


# ----------------------------------------------------------------- query()


def test_query_late_interaction_output(query_output, expected):
    assert query_output.late_interaction_output.shape == (6, 80, 128)
    assert max_abs_difference(query_output.late_interaction_output, expected["query_late_interaction_output"]) < EMBEDDING_TOLERANCE


def test_query_pooler_output(query_output, expected):
    assert max_abs_difference(query_output.pooler_output, expected["query_pooler_output"]) < EMBEDDING_TOLERANCE


def test_query_instruction_mask(model, expected):
    assert torch.equal(model.query_token_mask(expected["query_input_ids"]), expected["query_text_mask"])


def test_query_masked_instruction_rows_are_zero(query_output, expected):
    masked = ~expected["query_text_mask"]
    rows = query_output.late_interaction_output[:, :32][masked]
    assert rows.numel() > 0
    assert torch.count_nonzero(rows) == 0


def test_query_text_encoder_states(model, query_output, expected):
    last = query_output.text_encoder_hidden_states[-1]
    assert max_abs_difference(last, expected["query_text_encoder_last_hidden_state"]) < EMBEDDING_TOLERANCE
    with torch.inference_mode():
        linear = model.query_text_encoder_linear(last)
    assert max_abs_difference(linear, expected["query_text_linear_output"]) < EMBEDDING_TOLERANCE


def test_query_vision_hidden_states(query_output, expected):
    stacked = torch.stack(query_output.vision_encoder_hidden_states)
    assert max_abs_difference(stacked, expected["query_vision_hidden_states"]) < EMBEDDING_TOLERANCE


def test_query_vision_tower_outputs(model, expected):
    with torch.inference_mode():
        output = model.query_vision_encoder(expected["query_pixel_values"], output_hidden_states=True)
        projection = model.query_vision_projection(output.last_hidden_state[:, 0])
    assert max_abs_difference(output.last_hidden_state, expected["query_vision_last_hidden_state"]) < EMBEDDING_TOLERANCE
    assert max_abs_difference(output.pooler_output, expected["query_vision_pooler_output_unused"]) < EMBEDDING_TOLERANCE
    assert max_abs_difference(output.last_hidden_state[:, 0], expected["query_vision_projection_input"]) < EMBEDDING_TOLERANCE
    assert max_abs_difference(projection, expected["query_vision_projection_output"]) < EMBEDDING_TOLERANCE


def test_query_transformer_mapping_intermediates(model, query_output, expected):
    patches = query_output.vision_encoder_hidden_states[-2][:, 1:]
    assert max_abs_difference(patches, expected["query_transformer_mapping_input"]) < EMBEDDING_TOLERANCE
    with torch.inference_mode():
        projected = model.transformer_mapping_input_linear(patches)
    assert max_abs_difference(projected, expected["query_transformer_mapping_input_linear_output"]) < EMBEDDING_TOLERANCE
    mapped = query_output.transformer_mapping_network_hidden_states[-1]
    assert max_abs_difference(mapped, expected["query_transformer_mapping_last_hidden_state"]) < EMBEDDING_TOLERANCE
    with torch.inference_mode():
        tokens = model.transformer_mapping_output_linear(mapped)
    assert max_abs_difference(tokens, expected["query_transformer_mapping_output"]) < EMBEDDING_TOLERANCE


def test_query_text_only(model, expected):
    with torch.inference_mode():
        output = model.query(expected["query_input_ids"], expected["query_attention_mask"], concat_output_from_vision_encoder=False)
    assert max_abs_difference(output.late_interaction_output, expected["query_textonly_late_interaction_output"]) < EMBEDDING_TOLERANCE


def test_query_without_image_defaults_to_text_only(model, expected):
    with torch.inference_mode():
        output = model.query(expected["query_input_ids"], expected["query_attention_mask"])
    assert max_abs_difference(output.late_interaction_output, expected["query_textonly_late_interaction_output"]) < EMBEDDING_TOLERANCE


def test_query_alone_matches_batch(model, expected):
    with torch.inference_mode():
        single = model.query(expected["query_input_ids"][3:4], expected["query_attention_mask"][3:4], pixel_values=expected["query_pixel_values"][3:4])
    assert max_abs_difference(single.late_interaction_output[0], expected["query_late_interaction_output"][3]) < EMBEDDING_TOLERANCE


# ----------------------------------------------------------------- doc() and scores


def test_doc_late_interaction_output(doc_output, expected):
    assert max_abs_difference(doc_output.late_interaction_output, expected["context_late_interaction_output"]) < EMBEDDING_TOLERANCE


def test_doc_context_mask(doc_output, expected):
    assert doc_output.context_mask.dtype == torch.bool
    assert torch.equal(doc_output.context_mask, expected["context_mask"])


def test_doc_pooler_output(doc_output, expected):
    assert max_abs_difference(doc_output.pooler_output, expected["context_pooler_output"]) < EMBEDDING_TOLERANCE


def test_doc_punctuation_skiplist_matches_reference(model, cases):
    skiplist = model._punctuation_ids(torch.device("cpu")).tolist()
    assert skiplist == cases["tokenizer_settings"]["document_skiplist_ids"]


def test_score_matrix(query_output, doc_output, expected):
    scores = late_interaction_scores(query_output.late_interaction_output, doc_output.late_interaction_output, doc_output.context_mask)
    assert max_abs_difference(scores, expected["score_matrix"]) < SCORE_TOLERANCE


def test_score_matrix_with_longest_padding(model, cases, query_output, expected):
    documents = model.context_tokenizer([document["text"] for document in cases["documents"]], padding="longest")
    with torch.inference_mode():
        output = model.doc(**documents)
    scores = late_interaction_scores(query_output.late_interaction_output, output.late_interaction_output, output.context_mask)
    assert max_abs_difference(scores, expected["score_matrix"]) < SCORE_TOLERANCE


def test_doc_with_images(model, expected):
    with torch.inference_mode():
        output = model.doc(
            expected["context_input_ids"][:6],
            expected["context_attention_mask"][:6],
            pixel_values=expected["docimg_pixel_values"],
            concat_output_from_vision_encoder=True,
        )
    assert max_abs_difference(output.late_interaction_output, expected["docimg_late_interaction_output"]) < EMBEDDING_TOLERANCE
    assert torch.equal(output.context_mask, expected["docimg_context_mask"])


# ----------------------------------------------------------------- forward()


def forward_inputs(expected) -> dict:
    return {
        "query_input_ids": expected["forward_query_input_ids"],
        "query_attention_mask": expected["forward_query_attention_mask"],
        "query_pixel_values": expected["forward_query_pixel_values"],
        "context_input_ids": expected["forward_context_input_ids"],
        "context_attention_mask": expected["forward_context_attention_mask"],
        "num_negative_examples": 1,
    }


@pytest.fixture(scope="module")
def forward_output(model, expected):
    with torch.no_grad():
        return model(**forward_inputs(expected), use_in_batch_negatives=True)


def test_forward_loss(forward_output, expected):
    assert max_abs_difference(forward_output.loss, expected["forward_loss"]) < SCORE_TOLERANCE


def test_forward_scores(forward_output, expected):
    assert max_abs_difference(forward_output.scores, expected["forward_scores"]) < SCORE_TOLERANCE


def test_forward_in_batch_negative_loss(forward_output, expected):
    assert max_abs_difference(forward_output.in_batch_negative_loss, expected["forward_in_batch_negative_loss"]) < SCORE_TOLERANCE


def test_forward_late_interaction_outputs(forward_output, expected):
    assert max_abs_difference(forward_output.query_late_interaction_output, expected["forward_query_late_interaction_output"]) < EMBEDDING_TOLERANCE
    assert max_abs_difference(forward_output.context_late_interaction_output, expected["forward_context_late_interaction_output"]) < EMBEDDING_TOLERANCE


def test_forward_in_batch_scores(model, forward_output, expected):
    scores = late_interaction_scores(
        forward_output.query_late_interaction_output,
        forward_output.context_late_interaction_output,
        model.context_token_mask(expected["forward_context_input_ids"]),
    )
    assert max_abs_difference(scores, expected["forward_in_batch_scores"]) < SCORE_TOLERANCE
    assert torch.equal(torch.arange(3) * 2, expected["forward_in_batch_labels"])


def test_forward_without_in_batch_negatives(model, expected):
    with torch.no_grad():
        output = model(**forward_inputs(expected), use_in_batch_negatives=False)
    assert max_abs_difference(output.loss, expected["forward_noib_loss"]) < SCORE_TOLERANCE
    assert max_abs_difference(output.scores, expected["forward_noib_scores"]) < SCORE_TOLERANCE
    assert output.in_batch_negative_loss is None


def test_forward_tuple_output(model, expected, forward_output):
    with torch.no_grad():
        result = model(**forward_inputs(expected), use_in_batch_negatives=True, return_dict=False)
    assert isinstance(result, tuple)
    assert len(result) == 5
    assert max_abs_difference(result[0], expected["forward_loss"]) < SCORE_TOLERANCE
    assert max_abs_difference(result[1], expected["forward_scores"]) < SCORE_TOLERANCE
    assert max_abs_difference(result[2], expected["forward_in_batch_negative_loss"]) < SCORE_TOLERANCE


def test_forward_loss_has_gradient(model, expected):
    model.train()
    try:
        output = model(**forward_inputs(expected), use_in_batch_negatives=True)
        (output.loss + output.in_batch_negative_loss).backward()
        gradient = model.query_text_encoder_linear.weight.grad
        assert gradient is not None
        assert torch.count_nonzero(gradient) > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


# ----------------------------------------------------------------- float16


def test_float16_query_within_tolerance(preflmr_tiny_path, expected):
    half_model = FLMRModelForRetrieval.from_pretrained(preflmr_tiny_path, torch_dtype=torch.float16)
    with torch.inference_mode():
        output = half_model.query(expected["query_input_ids"], expected["query_attention_mask"], pixel_values=expected["query_pixel_values"])
    assert output.late_interaction_output.dtype == torch.float16
    assert not torch.isnan(output.late_interaction_output).any()
    assert max_abs_difference(output.late_interaction_output, expected["query_fp16_late_interaction_output"]) < FLOAT16_TOLERANCE
    assert max_abs_difference(output.pooler_output, expected["query_fp16_pooler_output"]) < FLOAT16_TOLERANCE
