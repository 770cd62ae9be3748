"""Configuration classes of FLMR and PreFLMR.

The field names and defaults follow the configuration files that ship with the official
checkpoints (``LinWeizheDragon/FLMR`` and ``LinWeizheDragon/PreFLMR_ViT-{B,L,G}``), so their
``config.json`` files load unchanged. Nothing here touches the network: the mapping
transformer's BERT-base hyper-parameters are built in (see :data:`BERT_BASE_UNCASED`).
"""

from __future__ import annotations

import logging
from dataclasses import field
from typing import Any

from transformers import BertConfig, CLIPVisionConfig, PretrainedConfig

logger = logging.getLogger(__name__)

# Published hyper-parameters of bert-base-uncased. The PreFLMR checkpoints name this model as
# the base of their mapping transformer; building the values in keeps construction offline.
BERT_BASE_UNCASED: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


class FLMRVisionConfig(PretrainedConfig):
    """Configuration of the CLIP vision tower (same fields and defaults as ``CLIPVisionConfig``).

    ``projection_dim`` is kept for compatibility with CLIP files; FLMR builds no visual
    projection. ``from_pretrained`` also accepts a full CLIP ``config.json`` (or an FLMR one)
    and reads its ``vision_config`` part.
    """

    model_type = "flmr_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0

    def to_clip_vision_config(self) -> CLIPVisionConfig:
        """Build the transformers ``CLIPVisionConfig`` with the same architecture."""
        return CLIPVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            projection_dim=self.projection_dim,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_channels=self.num_channels,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            attention_dropout=self.attention_dropout,
            initializer_range=self.initializer_range,
            initializer_factor=self.initializer_factor,
        )

    @property
    def num_patches(self) -> int:
        """Number of patch tokens, ``(image_size // patch_size) ** 2`` (the CLS token excluded)."""
        return (self.image_size // self.patch_size) ** 2


class FLMRTextConfig(PretrainedConfig):
    """Configuration of a BERT text encoder (defaults of bert-base-uncased / ColBERTv2).

    ``projection_dim > 0`` adds a Linear ``encode_proj`` on the pooled output (no released
    checkpoint uses it). ``text_encoder_base_model`` other than ``"bert-base-uncased"`` selects a
    non-BERT encoder in the upstream code; that variant is not supported here.
    """

    model_type = "flmr_text_model"
    base_config_key = "text_config"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    projection_dim: int = 0
    text_encoder_base_model: str = "bert-base-uncased"
    query_maxlen: int = 32

    def to_bert_config(self) -> BertConfig:
        """Build the transformers ``BertConfig`` with the same architecture."""
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"position_embedding_type={self.position_embedding_type!r} is not supported; "
                "FLMR text encoders use 'absolute' position embeddings"
            )
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            initializer_range=self.initializer_range,
            layer_norm_eps=self.layer_norm_eps,
            pad_token_id=self.pad_token_id,
        )


class FLMRConfig(PretrainedConfig):
    """Configuration of :class:`~flmr_rag.models.FLMRModelForRetrieval` (FLMR v1 and PreFLMR).

    Main switches:

    - ``dim``: width of every late-interaction token vector (128 in all checkpoints).
    - ``mapping_network_prefix_length``: number of tokens the MLP makes from the ViT CLS state.
    - ``separate_query_and_context_text_encoder``: two BERTs (PreFLMR) or one shared (FLMR v1).
    - ``use_transformer_mapping_network``: PreFLMR's cross-attention mapping transformer over the
      ViT patch states. Its size is bert-base-uncased's (``transformer_mapping_config_base``)
      with ``transformer_mapping_num_hidden_layers`` layers, and
      ``transformer_mapping_config_overrides`` (a dict, for example ``{"hidden_size": 32,
      "num_attention_heads": 4}``) applied on top.
    - ``mask_instruction_token``: query tokens from position 2 up to and including the first
      occurrence of this token are zeroed (PreFLMR: ``":"``).
    - ``{query,context}_concat_output_from_{vision,text}_encoder``: which token blocks make up
      query and document embeddings.
    """

    model_type = "flmr"
    sub_configs_defaults = {"text_config": FLMRTextConfig, "vision_config": FLMRVisionConfig}

    text_config: dict | FLMRTextConfig | None = None
    vision_config: dict | FLMRVisionConfig | None = None
    mask_punctuation: bool = True
    mapping_network_prefix_length: int = 32
    dim: int = 128
    use_vision_encoder: bool = True
    initializer_range: float = 0.02
    separate_query_and_context_text_encoder: bool = False
    separate_query_and_context_vision_encoder: bool = False
    query_concat_output_from_vision_encoder: bool = True
    query_concat_output_from_text_encoder: bool = True
    context_concat_output_from_vision_encoder: bool = False
    context_concat_output_from_text_encoder: bool = True
    use_transformer_mapping_network: bool = False
    transformer_mapping_config_base: str | None = None
    transformer_mapping_num_hidden_layers: int | None = None
    transformer_mapping_config_overrides: dict | None = None
    load_cpu_extension: bool = False
    mask_instruction_token: str | None = None
    transformer_mapping_cross_attention_length: int = 32
    vision_model_version: str = "openai/clip-vit-base-patch32"
    query_mask_input_ids_skip_list: list = field(default_factory=list)

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.use_transformer_mapping_network and self.transformer_mapping_num_hidden_layers is None:
            raise ValueError(
                "use_transformer_mapping_network=True needs transformer_mapping_num_hidden_layers "
                "(the PreFLMR checkpoints use 1)"
            )

    @classmethod
    def from_text_vision_configs(
        cls, text_config: FLMRTextConfig, vision_config: FLMRVisionConfig, **kwargs: Any
    ) -> FLMRConfig:
        """Build an ``FLMRConfig`` from a text and a vision configuration plus other fields."""
        return cls(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), **kwargs)

    def transformer_mapping_bert_config(self) -> dict[str, Any]:
        """Return the mapping transformer's BERT hyper-parameters as a dict.

        bert-base-uncased's values, the layer count from ``transformer_mapping_num_hidden_layers``,
        then ``transformer_mapping_config_overrides`` on top. Raises ``ValueError`` when
        ``transformer_mapping_config_base`` names another model (its values are not built in).
        """
        base = self.transformer_mapping_config_base
        if base not in (None, "bert-base-uncased", "google-bert/bert-base-uncased"):
            raise ValueError(
                f"transformer_mapping_config_base={base!r} is not supported: only bert-base-uncased's "
                "values are built in. Set it to 'bert-base-uncased' and give the differing values in "
                "transformer_mapping_config_overrides"
            )
        values = dict(BERT_BASE_UNCASED)
        if self.transformer_mapping_num_hidden_layers is not None:
            values["num_hidden_layers"] = self.transformer_mapping_num_hidden_layers
        overrides = self.transformer_mapping_config_overrides or {}
        unknown = sorted(set(overrides) - set(BERT_BASE_UNCASED))
        if unknown:
            raise ValueError(
                f"transformer_mapping_config_overrides has unknown keys {unknown}; "
                f"valid keys are {sorted(BERT_BASE_UNCASED)}"
            )
        values.update(overrides)
        return values
