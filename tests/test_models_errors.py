"""Errors, fixed reference crashes and round trips of flmr_rag.models on tiny random models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from flmr_rag.models import (
    CheckpointMismatchError,
    FLMRConfig,
    FLMRContextEncoderTokenizer,
    FLMRModelForRetrieval,
    FLMRQueryEncoderTokenizer,
    load_image_processor,
)
from flmr_rag.scoring import late_interaction_scores

# bfloat16 keeps 8 mantissa bits: normalised embeddings differ from float32 by up to ~1e-2.
BFLOAT16_EMBEDDING_TOLERANCE = 3e-2
BFLOAT16_SCORE_RELATIVE_TOLERANCE = 2e-2

WORDS = (
    "what is the colour of this shape using image find documents answer question red blue green circle "
    "square paris capital france beijing china a an in on it sits middle light dark small large"
).split()
VOCABULARY = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,:;?!'-()") + WORDS

QUERIES = [
    "Using the image, find documents that answer the question: what is the colour of this shape?",
    "what is the capital of france?",
]
DOCUMENTS = [
    "Paris is the capital of France.",
    "a red circle sits in the middle; it is small!",
    "Beijing is the capital of China.",
    "a blue square, large and dark.",
]
IMAGE_SIZE = 32
TEXT_LENGTH = 16


def tiny_tokenizers(query_maxlen: int = TEXT_LENGTH, attend_to_mask_tokens: bool = False):
    vocab = {token: index for index, token in enumerate(VOCABULARY)}
    query = FLMRQueryEncoderTokenizer(vocab=dict(vocab), query_maxlen=query_maxlen, attend_to_mask_tokens=attend_to_mask_tokens)
    context = FLMRContextEncoderTokenizer(vocab=dict(vocab), doc_maxlen=64)
    return query, context


def tiny_config(**overrides) -> FLMRConfig:
    values = dict(
        text_config={"vocab_size": len(VOCABULARY), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "image_size": IMAGE_SIZE, "patch_size": 8},
        dim=16,
        mapping_network_prefix_length=4,
        use_transformer_mapping_network=True,
        transformer_mapping_config_base="bert-base-uncased",
        transformer_mapping_num_hidden_layers=1,
        transformer_mapping_config_overrides={"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64},
        mask_instruction_token=":",
        separate_query_and_context_text_encoder=True,
    )
    values.update(overrides)
    return FLMRConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> FLMRModelForRetrieval:
    torch.manual_seed(seed)
    query_tokenizer, context_tokenizer = tiny_tokenizers()
    return FLMRModelForRetrieval(tiny_config(**overrides), query_tokenizer=query_tokenizer, context_tokenizer=context_tokenizer).eval()


def flmr_v1_model(seed: int = 0) -> FLMRModelForRetrieval:
    return tiny_model(
        seed,
        use_transformer_mapping_network=False,
        transformer_mapping_config_base=None,
        transformer_mapping_num_hidden_layers=None,
        transformer_mapping_config_overrides=None,
        mask_instruction_token=None,
        separate_query_and_context_text_encoder=False,
    )


def pixels(count: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def query_batch(model):
    return model.query_tokenizer(QUERIES)


@pytest.fixture(scope="module")
def doc_batch(model):
    return model.context_tokenizer(DOCUMENTS)


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("tiny-preflmr")
    model.save_pretrained(folder)
    return folder


def copy_checkpoint(source, target):
    shutil.copytree(source, target)
    return target


# ----------------------------------------------------------------- text-only queries and switches


def test_query_text_only_to_vision_model(model, query_batch):
    with torch.inference_mode():
        output = model.query(**query_batch)
    assert output.late_interaction_output.shape == (2, TEXT_LENGTH, 16)


def test_query_vision_switch_without_image_raises(model, query_batch):
    with pytest.raises(ValueError, match="no pixel_values or image_features"):
        model.query(**query_batch, concat_output_from_vision_encoder=True)


def test_query_per_sample_switch_zeroes_vision_rows(model, query_batch):
    with torch.inference_mode():
        mixed = model.query(**query_batch, pixel_values=pixels(2), concat_output_from_vision_encoder=[True, False])
        full = model.query(**query_batch, pixel_values=pixels(2))
    vision_rows = mixed.late_interaction_output[:, TEXT_LENGTH:]
    assert vision_rows.shape[1] == model.num_query_vision_tokens() == 4 + 16
    assert torch.count_nonzero(vision_rows[1]) == 0
    assert torch.allclose(mixed.late_interaction_output[0], full.late_interaction_output[0], atol=1e-6)


def test_query_per_sample_switch_off_without_image(model, query_batch):
    with torch.inference_mode():
        output = model.query(**query_batch, concat_output_from_vision_encoder=[False, False])
        text_only = model.query(**query_batch)
    assert output.late_interaction_output.shape == (2, TEXT_LENGTH + 20, 16)
    assert torch.equal(output.late_interaction_output[:, :TEXT_LENGTH], text_only.late_interaction_output)
    assert torch.count_nonzero(output.late_interaction_output[:, TEXT_LENGTH:]) == 0


def test_query_per_sample_switch_on_without_image_raises(model, query_batch):
    with pytest.raises(ValueError, match="no pixel_values"):
        model.query(**query_batch, concat_output_from_vision_encoder=[True, False])


def test_query_per_sample_switch_wrong_length_raises(model, query_batch):
    with pytest.raises(ValueError, match="3 entries but the batch has 2"):
        model.query(**query_batch, pixel_values=pixels(2), concat_output_from_vision_encoder=[True, False, True])


def test_query_per_sample_text_switch_zeroes_text_rows(model, query_batch):
    with torch.inference_mode():
        output = model.query(**query_batch, pixel_values=pixels(2), concat_output_from_text_encoder=[False, True])
    assert torch.count_nonzero(output.late_interaction_output[0, :TEXT_LENGTH]) == 0
    assert torch.count_nonzero(output.late_interaction_output[1, :TEXT_LENGTH]) > 0


def test_query_both_switches_off_raises(model, query_batch):
    with pytest.raises(ValueError, match="switched off"):
        model.query(**query_batch, concat_output_from_text_encoder=False)


def test_query_pixel_values_and_image_features_raises(model, query_batch):
    with pytest.raises(ValueError, match="either pixel_values or image_features"):
        model.query(**query_batch, pixel_values=pixels(2), image_features=torch.zeros(2, 32))


def test_query_image_features_with_mapping_network_raises(model, query_batch):
    with pytest.raises(ValueError, match="needs the ViT patch states; pass pixel_values"):
        model.query(**query_batch, image_features=torch.zeros(2, 32))


def test_query_image_features_without_mapping_network():
    v1_model = flmr_v1_model()
    batch = v1_model.query_tokenizer(QUERIES)
    with torch.inference_mode():
        features = v1_model.query_vision_encoder(pixels(2)).last_hidden_state[:, 0]
        from_features = v1_model.query(**batch, image_features=features)
        from_pixels = v1_model.query(**batch, pixel_values=pixels(2))
    assert torch.allclose(from_features.late_interaction_output, from_pixels.late_interaction_output, atol=1e-6)


def test_query_region_pixel_values_flmr_v1():
    v1_model = flmr_v1_model()
    batch = v1_model.query_tokenizer(QUERIES)
    regions = pixels(6).view(2, 3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.inference_mode():
        output = v1_model.query(**batch, pixel_values=regions)
    assert output.late_interaction_output.shape == (2, TEXT_LENGTH + 3 * 4, 16)


def test_query_instruction_masking_without_tokenizer_raises(query_batch):
    bare = FLMRModelForRetrieval(tiny_config()).eval()
    with pytest.raises(ValueError, match="needs the query tokenizer"):
        bare.query(**query_batch)


def test_query_instruction_rows_masked_up_to_first_separator(model, query_batch):
    mask = model.query_token_mask(query_batch["input_ids"])
    separator = model.query_tokenizer.convert_tokens_to_ids(":")
    position = int((query_batch["input_ids"][0] == separator).nonzero()[0])
    assert mask[0, :2].all()
    assert not mask[0, 2 : position + 1].any()
    assert mask[0, position + 1 :].all()
    assert mask[1].all()


def test_query_without_separator_logs_warning(model, query_batch, caplog):
    with caplog.at_level("WARNING", logger="flmr_rag.models.modeling_flmr"):
        model.query_token_mask(query_batch["input_ids"][1:])
    assert "no instruction separator" in caplog.text


def test_text_only_model_encodes_without_vision(query_batch, doc_batch):
    text_model = tiny_model(use_vision_encoder=False, use_transformer_mapping_network=False)
    with torch.inference_mode():
        queries = text_model.query(**query_batch).late_interaction_output
        documents = text_model.doc(**doc_batch).late_interaction_output
    assert queries.shape == (2, TEXT_LENGTH, 16)
    assert documents.shape[0] == 4
    assert text_model.context_vision_encoder is None


def test_text_only_model_rejects_pixel_values(query_batch):
    text_model = tiny_model(use_vision_encoder=False, use_transformer_mapping_network=False)
    with pytest.raises(ValueError, match="no vision encoder"):
        text_model.query(**query_batch, pixel_values=pixels(2), concat_output_from_vision_encoder=True)


# ----------------------------------------------------------------- doc()


def test_doc_keep_dims_false_returns_kept_tokens(model, doc_batch):
    with torch.inference_mode():
        padded = model.doc(**doc_batch)
        ragged = model.doc(**doc_batch, keep_dims=False)
    assert isinstance(ragged.late_interaction_output, list)
    mask = padded.context_mask.squeeze(-1)
    for index, tokens in enumerate(ragged.late_interaction_output):
        assert tokens.shape == (int(mask[index].sum()), 16)
        assert torch.equal(tokens, padded.late_interaction_output[index][mask[index]])
    assert torch.equal(ragged.pooler_output, padded.pooler_output)


def test_doc_return_mask_false(model, doc_batch):
    with torch.inference_mode():
        output = model.doc(**doc_batch, return_mask=False)
    assert output.context_mask is None


def test_doc_mask_punctuation_false_keeps_punctuation():
    unmasked_model = tiny_model(mask_punctuation=False)
    batch = unmasked_model.context_tokenizer(DOCUMENTS)
    with torch.inference_mode():
        output = unmasked_model.doc(**batch)
    assert torch.equal(output.context_mask.squeeze(-1), batch["input_ids"] != 0)


def test_doc_punctuation_masked_by_default(model, doc_batch):
    with torch.inference_mode():
        output = model.doc(**doc_batch)
    period = model.context_tokenizer.convert_tokens_to_ids(".")
    assert not output.context_mask.squeeze(-1)[doc_batch["input_ids"] == period].any()


def test_doc_image_features_match_pixel_values(model, doc_batch):
    with torch.inference_mode():
        features = model.context_vision_encoder(pixels(4)).last_hidden_state[:, 0]
        from_features = model.doc(**doc_batch, image_features=features, concat_output_from_vision_encoder=True)
        from_pixels = model.doc(**doc_batch, pixel_values=pixels(4), concat_output_from_vision_encoder=True)
    assert torch.allclose(from_features.late_interaction_output, from_pixels.late_interaction_output, atol=1e-6)
    assert from_pixels.context_mask[:, :4].all()


def test_doc_vision_switch_without_image_raises(model, doc_batch):
    with pytest.raises(ValueError, match="no pixel_values or image_features"):
        model.doc(**doc_batch, concat_output_from_vision_encoder=True)


def test_forward_wrong_context_count_raises(model, query_batch, doc_batch):
    with pytest.raises(ValueError, match="expected 6"):
        model(
            query_input_ids=query_batch["input_ids"],
            query_attention_mask=query_batch["attention_mask"],
            context_input_ids=doc_batch["input_ids"],
            context_attention_mask=doc_batch["attention_mask"],
            num_negative_examples=2,
        )


# ----------------------------------------------------------------- shared modules


def test_shared_vision_modules_registered_once(model):
    assert model.context_vision_encoder is model.query_vision_encoder
    assert model.context_vision_projection is model.query_vision_projection
    assert not any(key.startswith("context_vision") for key in model.state_dict())
    assert any(key.startswith("context_text_encoder.") for key in model.state_dict())


def test_flmr_v1_text_encoder_shared():
    v1_model = flmr_v1_model()
    assert v1_model.context_text_encoder is v1_model.query_text_encoder
    assert not any(key.startswith("context_") for key in v1_model.state_dict())


# ----------------------------------------------------------------- checkpoints


def test_save_load_round_trip(model, saved_folder, query_batch, doc_batch):
    loaded = FLMRModelForRetrieval.from_pretrained(saved_folder)
    with torch.inference_mode():
        before = model.query(**query_batch, pixel_values=pixels(2)).late_interaction_output
        after = loaded.query(**query_batch, pixel_values=pixels(2)).late_interaction_output
        docs_before = model.doc(**doc_batch).late_interaction_output
        docs_after = loaded.doc(**doc_batch).late_interaction_output
    assert torch.equal(before, after)
    assert torch.equal(docs_before, docs_after)
    assert loaded.config.to_dict()["transformer_mapping_config_overrides"] == model.config.transformer_mapping_config_overrides


def test_save_load_round_trip_tokenizer_settings(tmp_path):
    query_tokenizer, context_tokenizer = tiny_tokenizers(query_maxlen=12, attend_to_mask_tokens=True)
    tiny = FLMRModelForRetrieval(tiny_config(), query_tokenizer=query_tokenizer, context_tokenizer=context_tokenizer)
    tiny.save_pretrained(tmp_path)
    loaded = FLMRModelForRetrieval.from_pretrained(tmp_path)
    assert loaded.query_tokenizer.query_maxlen == 12
    assert loaded.query_tokenizer.attend_to_mask_tokens is True
    assert loaded.context_tokenizer.doc_maxlen == 64
    assert torch.equal(loaded.query_tokenizer(QUERIES)["input_ids"], query_tokenizer(QUERIES)["input_ids"])
    assert (tmp_path / "query_tokenizer" / "vocab.txt").is_file()


def test_load_missing_key_raises(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    state = load_file(str(folder / "model.safetensors"))
    del state["transformer_mapping_output_linear.bias"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"1 missing keys: transformer_mapping_output_linear\.bias"):
        FLMRModelForRetrieval.from_pretrained(folder)


def test_load_unexpected_key_raises(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    state = load_file(str(folder / "model.safetensors"))
    state["extra_head.weight"] = torch.zeros(2, 2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected keys: extra_head\.weight"):
        FLMRModelForRetrieval.from_pretrained(folder)


def test_load_shape_mismatch_raises(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    state = load_file(str(folder / "model.safetensors"))
    state["query_text_encoder_linear.weight"] = torch.zeros(8, 32)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        FLMRModelForRetrieval.from_pretrained(folder)


def test_load_ignores_masked_lm_head(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    state = load_file(str(folder / "model.safetensors"))
    state["cls.predictions.bias"] = torch.zeros(len(VOCABULARY))
    save_file(state, str(folder / "model.safetensors"))
    assert isinstance(FLMRModelForRetrieval.from_pretrained(folder), FLMRModelForRetrieval)


def test_load_accepts_context_alias_of_shared_modules(model, saved_folder, tmp_path, doc_batch):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    state = load_file(str(folder / "model.safetensors"))
    renamed = {key.replace("query_vision_", "context_vision_", 1): tensor for key, tensor in state.items()}
    save_file(renamed, str(folder / "model.safetensors"))
    loaded = FLMRModelForRetrieval.from_pretrained(folder)
    assert torch.equal(loaded.query_vision_projection.model[0].weight, model.query_vision_projection.model[0].weight)


def test_load_flmr_v1_context_text_alias(tmp_path):
    v1_model = flmr_v1_model()
    v1_model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    renamed = {key.replace("query_text_encoder", "context_text_encoder", 1): tensor for key, tensor in state.items()}
    save_file(renamed, str(tmp_path / "model.safetensors"))
    loaded = FLMRModelForRetrieval.from_pretrained(tmp_path)
    assert torch.equal(loaded.query_text_encoder_linear.weight, v1_model.query_text_encoder_linear.weight)


def test_load_conflicting_aliases_raises(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    state = load_file(str(folder / "model.safetensors"))
    state["context_vision_projection.model.0.bias"] = state["query_vision_projection.model.0.bias"] + 1
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="conflicting shared tensors"):
        FLMRModelForRetrieval.from_pretrained(folder)


def test_load_sharded_checkpoint(model, saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, shard_keys in shards.items():
        save_file({key: state[key] for key in shard_keys}, str(folder / name))
    weight_map = {key: name for name, shard_keys in shards.items() for key in shard_keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = FLMRModelForRetrieval.from_pretrained(folder)
    assert torch.equal(loaded.transformer_mapping_output_linear.weight, model.transformer_mapping_output_linear.weight)


def test_load_folder_without_config_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        FLMRModelForRetrieval.from_pretrained(tmp_path)


def test_load_non_flmr_config_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    with pytest.raises(ValueError, match="not an FLMR checkpoint: its config.json has model_type 'clip'"):
        FLMRModelForRetrieval.from_pretrained(tmp_path)


def test_load_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder and not a Hugging Face hub id"):
        FLMRModelForRetrieval.from_pretrained(tmp_path / "absent" / "folder")


def test_load_pickle_only_checkpoint_raises(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle"):
        FLMRModelForRetrieval.from_pretrained(folder)


def test_load_without_tokenizer_folders_raises(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    shutil.rmtree(folder / "query_tokenizer")
    with pytest.raises(FileNotFoundError, match=r"no query_tokenizer/ folder; copy the tokenizer folders from the original checkpoint \(or pass query_tokenizer="):
        FLMRModelForRetrieval.from_pretrained(folder)


def test_load_without_tokenizer_folders_given_tokenizers(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    shutil.rmtree(folder / "query_tokenizer")
    query_tokenizer, _ = tiny_tokenizers()
    loaded = FLMRModelForRetrieval.from_pretrained(folder, query_tokenizer=query_tokenizer)
    assert loaded.query_tokenizer is query_tokenizer


def test_saved_config_has_no_remote_code_entry(preflmr_tiny_path, tmp_path):
    fixture_model = FLMRModelForRetrieval.from_pretrained(preflmr_tiny_path)
    fixture_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "auto_map" not in saved
    assert saved["transformer_mapping_config_overrides"] == {"hidden_size": 32, "num_attention_heads": 4}
    assert (tmp_path / "preprocessor_config.json").is_file()


def test_image_processor_fallback_when_hub_unreachable(monkeypatch, caplog):
    from transformers import AutoImageProcessor

    def unreachable(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(AutoImageProcessor, "from_pretrained", unreachable)
    with caplog.at_level("WARNING", logger="flmr_rag.models.image_processing"):
        processor = load_image_processor(None, tiny_config())
    assert processor.crop_size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert list(processor.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    assert "using CLIP preprocessing" in caplog.text


# ----------------------------------------------------------------- dtypes


def test_bfloat16_close_to_float32(saved_folder, query_batch, doc_batch):
    full = FLMRModelForRetrieval.from_pretrained(saved_folder)
    half = FLMRModelForRetrieval.from_pretrained(saved_folder, torch_dtype=torch.bfloat16)
    with torch.inference_mode():
        queries = full.query(**query_batch, pixel_values=pixels(2)).late_interaction_output
        queries_bf16 = half.query(**query_batch, pixel_values=pixels(2)).late_interaction_output
        documents = full.doc(**doc_batch)
        documents_bf16 = half.doc(**doc_batch)
    assert queries_bf16.dtype == torch.bfloat16
    assert documents_bf16.late_interaction_output.dtype == torch.bfloat16
    assert (queries_bf16.float() - queries).abs().max() < BFLOAT16_EMBEDDING_TOLERANCE
    assert (documents_bf16.late_interaction_output.float() - documents.late_interaction_output).abs().max() < BFLOAT16_EMBEDDING_TOLERANCE
    scores = late_interaction_scores(queries, documents.late_interaction_output, documents.context_mask)
    scores_bf16 = late_interaction_scores(queries_bf16, documents_bf16.late_interaction_output, documents_bf16.context_mask)
    assert ((scores_bf16 - scores).abs() / scores.abs().clamp_min(1.0)).max() < BFLOAT16_SCORE_RELATIVE_TOLERANCE


def test_float16_zero_rows_stay_zero(saved_folder, query_batch):
    half = FLMRModelForRetrieval.from_pretrained(saved_folder, torch_dtype=torch.float16)
    with torch.inference_mode():
        output = half.query(**query_batch, pixel_values=pixels(2)).late_interaction_output
    assert not torch.isnan(output).any()
    assert torch.count_nonzero(output[0, 2:5]) == 0


# ----------------------------------------------------------------- tokenizers


def test_query_tokenizer_str_is_one_text():
    query_tokenizer, _ = tiny_tokenizers()
    single = query_tokenizer(QUERIES[1])
    listed = query_tokenizer([QUERIES[1]])
    assert single["input_ids"].shape == (1, TEXT_LENGTH)
    assert torch.equal(single["input_ids"], listed["input_ids"])


def test_context_tokenizer_str_is_one_text():
    _, context_tokenizer = tiny_tokenizers()
    single = context_tokenizer(DOCUMENTS[0])
    assert single["input_ids"].shape[0] == 1
    assert torch.equal(single["input_ids"], context_tokenizer([DOCUMENTS[0]])["input_ids"])


def test_tokenizer_rejects_non_str_items():
    query_tokenizer, _ = tiny_tokenizers()
    with pytest.raises(TypeError, match=r"text\[1\] is a int"):
        query_tokenizer(["what", 3])


def test_query_tokenizer_markers_and_mask_padding():
    query_tokenizer, _ = tiny_tokenizers()
    encoded = query_tokenizer("red circle")
    ids, mask = encoded["input_ids"][0], encoded["attention_mask"][0]
    assert ids[1].item() == 1
    assert (ids[5:] == query_tokenizer.mask_token_id).all()
    assert (mask[5:] == 0).all()
    assert set(encoded) == {"input_ids", "attention_mask"}


def test_query_tokenizer_attend_to_mask_tokens():
    query_tokenizer, _ = tiny_tokenizers(attend_to_mask_tokens=True)
    assert query_tokenizer("red circle")["attention_mask"].all()


def test_query_tokenizer_truncates_to_query_maxlen():
    query_tokenizer, _ = tiny_tokenizers()
    encoded = query_tokenizer(" ".join(WORDS))
    assert encoded["input_ids"].shape == (1, TEXT_LENGTH)
    assert encoded["input_ids"][0, -1].item() == query_tokenizer.sep_token_id


def test_context_tokenizer_marker_and_max_length():
    _, context_tokenizer = tiny_tokenizers()
    encoded = context_tokenizer(DOCUMENTS, padding="max_length")
    assert encoded["input_ids"].shape == (4, 64)
    assert (encoded["input_ids"][:, 1] == 2).all()
    assert context_tokenizer(" ".join(WORDS * 3))["input_ids"].shape == (1, 64)


def test_load_truncated_weights_names_file(saved_folder, tmp_path):
    folder = copy_checkpoint(saved_folder, tmp_path / "checkpoint")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        FLMRModelForRetrieval.from_pretrained(folder)
    assert str(weights) in str(error.value)
    assert "re-download the checkpoint or re-save it" in str(error.value)


def test_hub_failure_message_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as error:
        FLMRModelForRetrieval.from_pretrained("flmr-rag-tests/no-such-model")
    message = str(error.value)
    assert "\n" not in message
    assert "'flmr-rag-tests/no-such-model'" in message
    assert "check the name and the network, or pass a local folder" in message
    assert error.value.__cause__ is not None


def test_hub_failure_message_joins_lines():
    from flmr_rag.models.checkpoint import hub_failure_message

    message = hub_failure_message("checkpoint", "owner/name", OSError("could not connect.\nCheck your connection."))
    assert message.count("\n") == 0
    assert "could not connect. Check your connection." in message
