"""PreFLMR's mapping networks from the ViT to late-interaction tokens.

- :class:`FLMRMultiLayerPerceptron`: Linear, Tanh, Linear on the CLS state (keys ``model.0``,
  ``model.2``), giving ``mapping_network_prefix_length`` tokens per image.
- :class:`FLMRTransformerMappingNetwork`: post-LayerNorm BERT layers whose self-attention over
  the patch tokens is bidirectional (no mask) and whose cross-attention reads the query text
  encoder's hidden states. Parameter names follow transformers' ``BertEncoder``
  (``layer.N.attention.self.query`` and so on), so the checkpoints load. The layer is written
  here because BERT's decoder mode in recent transformers makes the self-attention causal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN


class FLMRMultiLayerPerceptron(nn.Module):
    """Two Linear layers with a Tanh between them; ``sizes = (in, hidden, out)``."""

    def __init__(self, sizes: tuple[int, int, int]):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.Tanh(), nn.Linear(sizes[1], sizes[2]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)


class MappingSelfAttention(nn.Module):
    """Multi-head attention with BERT's ``query``/``key``/``value`` projections and no mask by default."""

    def __init__(self, hidden_size: int, num_heads: int, key_value_size: int, dropout: float):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"mapping transformer hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(key_value_size, hidden_size)
        self.value = nn.Linear(key_value_size, hidden_size)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``hidden_states`` ``[B, T, H]`` to itself or to ``key_value_states`` ``[B, S, K]``.

        ``key_mask`` is ``[B, S]`` bool (True = visible) or None (every key visible).
        """
        source = hidden_states if key_value_states is None else key_value_states
        query = self._split_heads(self.query(hidden_states))
        key = self._split_heads(self.key(source))
        value = self._split_heads(self.value(source))
        attn_mask = None if key_mask is None else key_mask[:, None, None, :].to(torch.bool)
        dropout = self.dropout if self.training else 0.0

        weights = None
        if output_attentions:
            logits = (query @ key.transpose(-1, -2)) * self.head_dim**-0.5
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, torch.finfo(logits.dtype).min)
            weights = torch.softmax(logits, dim=-1)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout)
        batch, _, length, _ = context.shape
        return context.transpose(1, 2).reshape(batch, length, -1), weights


class MappingResidualOutput(nn.Module):
    """Dense projection, dropout, then LayerNorm of the residual sum (BERT's post-LN output)."""

    def __init__(self, in_size: int, hidden_size: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(states)) + residual)


class MappingAttentionBlock(nn.Module):
    """Attention (``self``) followed by the residual output (``output``)."""

    def __init__(self, values: dict[str, Any], key_value_size: int):
        super().__init__()
        hidden = values["hidden_size"]
        self.self = MappingSelfAttention(hidden, values["num_attention_heads"], key_value_size, values["attention_probs_dropout_prob"])
        self.output = MappingResidualOutput(hidden, hidden, values["layer_norm_eps"], values["hidden_dropout_prob"])

    def forward(self, hidden_states, key_value_states=None, key_mask=None, output_attentions=False):
        context, weights = self.self(hidden_states, key_value_states, key_mask, output_attentions)
        return self.output(context, hidden_states), weights


class MappingIntermediate(nn.Module):
    def __init__(self, values: dict[str, Any]):
        super().__init__()
        self.dense = nn.Linear(values["hidden_size"], values["intermediate_size"])
        self.intermediate_act_fn = ACT2FN[values["hidden_act"]]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class FLMRTransformerMappingLayer(nn.Module):
    """Post-LN block: self-attention, cross-attention to the text states, feed-forward."""

    def __init__(self, values: dict[str, Any], encoder_hidden_size: int):
        super().__init__()
        self.attention = MappingAttentionBlock(values, values["hidden_size"])
        self.crossattention = MappingAttentionBlock(values, encoder_hidden_size)
        self.intermediate = MappingIntermediate(values)
        self.output = MappingResidualOutput(values["intermediate_size"], values["hidden_size"], values["layer_norm_eps"], values["hidden_dropout_prob"])

    def forward(self, hidden_states, encoder_hidden_states, encoder_mask=None, output_attentions=False):
        hidden_states, self_weights = self.attention(hidden_states, output_attentions=output_attentions)
        hidden_states, cross_weights = self.crossattention(hidden_states, encoder_hidden_states, encoder_mask, output_attentions)
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states)
        return hidden_states, self_weights, cross_weights


class FLMRTransformerMappingNetwork(nn.Module):
    """Stack of :class:`FLMRTransformerMappingLayer` under ``layer.N``.

    Args:
        values: BERT hyper-parameters (``FLMRConfig.transformer_mapping_bert_config()``).
        encoder_hidden_size: width of the text hidden states that the cross-attention reads.
    """

    def __init__(self, values: dict[str, Any], encoder_hidden_size: int):
        super().__init__()
        self.layer = nn.ModuleList(
            [FLMRTransformerMappingLayer(values, encoder_hidden_size) for _ in range(values["num_hidden_layers"])]
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """Map ``[B, P, H]`` patch states; returns ``(last_hidden_state [B, P, H], hidden_states,
        attentions)`` where the last two are tuples when requested (attentions contains
        ``(self, cross)`` weight pairs per layer)."""
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layer:
            hidden_states, self_weights, cross_weights = layer(hidden_states, encoder_hidden_states, encoder_mask, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append((self_weights, cross_weights))
        return (
            hidden_states,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )
