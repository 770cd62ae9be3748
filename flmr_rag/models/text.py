"""BERT text encoder of FLMR (``FLMRTextModel``)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_flmr import FLMRTextConfig


class FLMRTextModel(PreTrainedModel):
    """A BERT encoder under ``bert_model`` (pooling layer kept so checkpoints load strictly).

    The pooled output is the hidden state of token 0, optionally through ``encode_proj`` when
    ``config.projection_dim > 0``; BERT's own pooler is never applied.
    """

    config_class = FLMRTextConfig
    base_model_prefix = "flmr_text_model"
    _no_split_modules = ["BertLayer"]

    def __init__(self, config: FLMRTextConfig):
        super().__init__(config)
        if config.text_encoder_base_model not in ("bert-base-uncased", "google-bert/bert-base-uncased"):
            raise ValueError(
                f"text_encoder_base_model={config.text_encoder_base_model!r} is not supported; "
                "flmr-rag builds BERT text encoders only (text_encoder_base_model='bert-base-uncased')"
            )
        self.bert_model = BertModel(config.to_bert_config(), add_pooling_layer=True)
        self.encode_proj = nn.Linear(config.hidden_size, config.projection_dim) if config.projection_dim > 0 else None
        self.post_init()

    @property
    def embeddings_size(self) -> int:
        """Width of the pooled output."""
        return self.encode_proj.out_features if self.encode_proj is not None else self.config.hidden_size

    def get_input_embeddings(self) -> nn.Module:
        return self.bert_model.embeddings.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode ``[B, L]`` token ids; returns ``last_hidden_state`` ``[B, L, H]`` and
        ``pooler_output`` ``[B, H]`` (or ``[B, projection_dim]``), plus hidden states / attentions
        when requested."""
        output = self.bert_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        sequence_output = output.last_hidden_state
        pooled_output = sequence_output[:, 0, :]
        if self.encode_proj is not None:
            pooled_output = self.encode_proj(pooled_output)
        result = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=output.hidden_states,
            attentions=output.attentions,
        )
        return result if return_dict else result.to_tuple()
