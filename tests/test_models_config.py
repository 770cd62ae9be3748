"""Configuration classes, transformers Auto-class registration and official model sizes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, CLIPConfig

from flmr_rag.models import FLMRConfig, FLMRModelForRetrieval, FLMRTextConfig, FLMRVisionConfig, FLMRTextModel, FLMRVisionModel

# Fields shared by the config.json files of PreFLMR_ViT-B, -L and -G on the Hugging Face hub.
PREFLMR_COMMON = {
    "context_concat_output_from_text_encoder": True,
    "context_concat_output_from_vision_encoder": False,
    "dim": 128,
    "initializer_range": 0.02,
    "load_cpu_extension": False,
    "mapping_network_prefix_length": 32,
    "mask_instruction_token": ":",
    "mask_punctuation": True,
    "model_type": "flmr",
    "query_concat_output_from_text_encoder": True,
    "query_concat_output_from_vision_encoder": True,
    "separate_query_and_context_text_encoder": True,
    "separate_query_and_context_vision_encoder": False,
    "text_config": {"architectures": ["BertForMaskedLM"], "gradient_checkpointing": False, "model_type": "flmr_text_model", "use_cache": True},
    "torch_dtype": "float32",
    "transformer_mapping_config_base": "bert-base-uncased",
    "transformer_mapping_cross_attention_length": 32,
    "transformer_mapping_num_hidden_layers": 1,
    "use_transformer_mapping_network": True,
    "use_vision_encoder": True,
}
OFFICIAL_CONFIGS = {
    "PreFLMR_ViT-B": {**PREFLMR_COMMON, "vision_config": {"dropout": 0.0, "model_type": "flmr_vision_model"}, "vision_model_version": "openai/clip-vit-base-patch32"},
    "PreFLMR_ViT-L": {
        **PREFLMR_COMMON,
        "vision_config": {"dropout": 0.0, "hidden_size": 1024, "intermediate_size": 4096, "model_type": "flmr_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768},
        "vision_model_version": "openai/clip-vit-large-patch14",
    },
    "PreFLMR_ViT-G": {
        **PREFLMR_COMMON,
        "vision_config": {"dropout": 0.0, "hidden_act": "gelu", "hidden_size": 1664, "intermediate_size": 8192, "model_type": "flmr_vision_model", "num_attention_heads": 16, "num_hidden_layers": 48, "patch_size": 14, "projection_dim": 1280},
        "vision_model_version": "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
    },
    "FLMR": {
        **PREFLMR_COMMON,
        "mask_instruction_token": None,
        "separate_query_and_context_text_encoder": False,
        "transformer_mapping_config_base": None,
        "transformer_mapping_num_hidden_layers": None,
        "use_transformer_mapping_network": False,
        "text_config": {**PREFLMR_COMMON["text_config"], "vocab_size": 30531},
        "vision_config": {"dropout": 0.0, "model_type": "flmr_vision_model"},
        "vision_model_version": "openai/clip-vit-base-patch32",
    },
}
# Published totals; FLMR v1's exact count (about 207.0M published) is the one this code builds.
PARAMETER_COUNTS = {
    "PreFLMR_ViT-B": 326_725_504,
    "PreFLMR_ViT-L": 543_170_176,
    "PreFLMR_ViT-G": 2_084_569_984,
    "FLMR": 207_011_072,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_official_config_parameter_count(name):
    config = FLMRConfig.from_dict(OFFICIAL_CONFIGS[name])
    with torch.device("meta"):
        model = FLMRModelForRetrieval(config)
    assert sum(parameter.numel() for parameter in model.parameters()) == PARAMETER_COUNTS[name]


def test_official_vit_l_query_length():
    config = FLMRConfig.from_dict(OFFICIAL_CONFIGS["PreFLMR_ViT-L"])
    with torch.device("meta"):
        model = FLMRModelForRetrieval(config)
    assert 32 + model.num_query_vision_tokens() == 320


def test_flmr_config_defaults():
    config = FLMRConfig()
    assert config.dim == 128
    assert config.mapping_network_prefix_length == 32
    assert config.mask_punctuation is True
    assert config.use_vision_encoder is True
    assert config.separate_query_and_context_text_encoder is False
    assert config.separate_query_and_context_vision_encoder is False
    assert config.query_concat_output_from_vision_encoder is True
    assert config.query_concat_output_from_text_encoder is True
    assert config.context_concat_output_from_vision_encoder is False
    assert config.context_concat_output_from_text_encoder is True
    assert config.use_transformer_mapping_network is False
    assert config.transformer_mapping_config_base is None
    assert config.transformer_mapping_num_hidden_layers is None
    assert config.transformer_mapping_config_overrides is None
    assert config.load_cpu_extension is False
    assert config.mask_instruction_token is None
    assert config.transformer_mapping_cross_attention_length == 32
    assert config.vision_model_version == "openai/clip-vit-base-patch32"
    assert config.query_mask_input_ids_skip_list == []
    assert isinstance(config.text_config, FLMRTextConfig)
    assert isinstance(config.vision_config, FLMRVisionConfig)


def test_text_config_defaults():
    config = FLMRTextConfig()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (30522, 768, 12, 12)
    assert (config.intermediate_size, config.hidden_act, config.max_position_embeddings, config.type_vocab_size) == (3072, "gelu", 512, 2)
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.layer_norm_eps) == (0.1, 0.1, 1e-12)
    assert (config.pad_token_id, config.position_embedding_type, config.projection_dim) == (0, "absolute", 0)
    assert (config.text_encoder_base_model, config.query_maxlen) == ("bert-base-uncased", 32)


def test_vision_config_defaults():
    config = FLMRVisionConfig()
    assert (config.hidden_size, config.intermediate_size, config.projection_dim, config.num_hidden_layers) == (768, 3072, 512, 12)
    assert (config.num_attention_heads, config.num_channels, config.image_size, config.patch_size) == (12, 3, 224, 32)
    assert (config.hidden_act, config.layer_norm_eps, config.attention_dropout) == ("quick_gelu", 1e-5, 0.0)
    assert (config.initializer_range, config.initializer_factor) == (0.02, 1.0)


def test_config_json_round_trip(tmp_path):
    config = FLMRConfig.from_dict({**OFFICIAL_CONFIGS["PreFLMR_ViT-L"], "transformer_mapping_config_overrides": {"hidden_size": 64}})
    config.save_pretrained(tmp_path)
    reloaded = FLMRConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.vision_config.hidden_size == 1024
    assert reloaded.transformer_mapping_config_overrides == {"hidden_size": 64}


def test_config_json_string_round_trip():
    config = FLMRConfig.from_dict(OFFICIAL_CONFIGS["FLMR"])
    reloaded = FLMRConfig.from_dict(json.loads(config.to_json_string()))
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.text_config.vocab_size == 30531


def test_vision_config_from_clip_config(tmp_path):
    CLIPConfig(vision_config={"hidden_size": 48, "num_attention_heads": 3, "patch_size": 16}).save_pretrained(tmp_path)
    config = FLMRVisionConfig.from_pretrained(tmp_path)
    assert (config.hidden_size, config.num_attention_heads, config.patch_size) == (48, 3, 16)


def test_vision_config_from_flmr_config(tmp_path):
    FLMRConfig.from_dict(OFFICIAL_CONFIGS["PreFLMR_ViT-G"]).save_pretrained(tmp_path)
    config = FLMRVisionConfig.from_pretrained(tmp_path)
    assert (config.hidden_size, config.hidden_act) == (1664, "gelu")


def test_transformer_mapping_overrides_applied():
    config = FLMRConfig(transformer_mapping_num_hidden_layers=1, transformer_mapping_config_base="bert-base-uncased", transformer_mapping_config_overrides={"hidden_size": 32, "num_attention_heads": 4})
    values = config.transformer_mapping_bert_config()
    assert (values["hidden_size"], values["num_attention_heads"], values["num_hidden_layers"]) == (32, 4, 1)
    assert (values["intermediate_size"], values["hidden_act"], values["layer_norm_eps"]) == (3072, "gelu", 1e-12)


def test_transformer_mapping_unknown_override_raises():
    config = FLMRConfig(transformer_mapping_config_overrides={"hidden_width": 32})
    with pytest.raises(ValueError, match=r"unknown keys \['hidden_width'\]"):
        config.transformer_mapping_bert_config()


def test_transformer_mapping_other_base_raises():
    config = FLMRConfig(transformer_mapping_config_base="roberta-base", transformer_mapping_num_hidden_layers=1)
    with pytest.raises(ValueError, match="only bert-base-uncased's values are built in"):
        config.transformer_mapping_bert_config()


def test_transformer_mapping_without_layer_count_raises():
    with pytest.raises(ValueError, match="transformer_mapping_num_hidden_layers"):
        FLMRConfig(use_transformer_mapping_network=True)


def test_construction_needs_no_network(monkeypatch):
    import socket

    from transformers import PretrainedConfig

    def fail(*args, **kwargs):
        raise AssertionError("a configuration or the network was requested during model construction")

    monkeypatch.setattr(socket.socket, "connect", fail)
    monkeypatch.setattr(PretrainedConfig, "get_config_dict", classmethod(fail))
    with torch.device("meta"):
        model = FLMRModelForRetrieval(FLMRConfig.from_dict(OFFICIAL_CONFIGS["PreFLMR_ViT-B"]))
    assert model.transformer_mapping_network.layer[0].attention.self.query.weight.shape == (768, 768)


def test_auto_config_loads_fixture(preflmr_tiny_path):
    config = AutoConfig.from_pretrained(preflmr_tiny_path)
    assert isinstance(config, FLMRConfig)
    assert config.transformer_mapping_config_overrides == {"hidden_size": 32, "num_attention_heads": 4}


def test_auto_model_loads_fixture(preflmr_tiny_path):
    model = AutoModel.from_pretrained(preflmr_tiny_path)
    assert isinstance(model, FLMRModelForRetrieval)
    assert model.query_tokenizer is not None


def test_auto_classes_know_sub_configs():
    assert isinstance(AutoConfig.for_model("flmr_text_model"), FLMRTextConfig)
    assert isinstance(AutoConfig.for_model("flmr_vision_model"), FLMRVisionConfig)
    text_model = AutoModel.from_config(FLMRTextConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100))
    vision_model = AutoModel.from_config(FLMRVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8))
    assert isinstance(text_model, FLMRTextModel)
    assert isinstance(vision_model, FLMRVisionModel)
