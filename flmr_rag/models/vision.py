"""CLIP vision tower of FLMR (a pre-LayerNorm ViT with CLIP's parameter names).

The module tree reproduces the transformers 4.x layout that the checkpoints were saved with:
``FLMRVisionModel.vision_model`` (CLIPVisionModel) ``.vision_model`` (CLIPVisionTransformer),
so the weights sit under ``vision_model.vision_model.*``. transformers 5 flattened
CLIPVisionModel, which is why the tower is defined here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_flmr import FLMRVisionConfig


class CLIPVisionEmbeddings(nn.Module):
    """Patch embedding (convolution without bias), a learned class token and position table."""

    def __init__(self, config: FLMRVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.class_embedding = nn.Parameter(torch.randn(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.num_positions = config.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Map ``[N, C, H, W]`` pixels to ``[N, 1 + P, H_v]`` token embeddings."""
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        if patches.shape[1] + 1 != self.num_positions:
            raise ValueError(
                f"pixel_values of size {tuple(pixel_values.shape[-2:])} give {patches.shape[1]} patches, but the "
                f"vision tower was built for {self.num_positions - 1}; resize images to the configured image_size"
            )
        class_token = self.class_embedding.expand(patches.shape[0], 1, -1)
        embeddings = torch.cat([class_token, patches], dim=1)
        return embeddings + self.position_embedding.weight[None]


class CLIPAttention(nn.Module):
    """Bidirectional multi-head self-attention with CLIP's q/k/v/out projections."""

    def __init__(self, config: FLMRVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"hidden_size {self.embed_dim} is not divisible by num_attention_heads {self.num_heads}")
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the attended ``[N, T, H_v]`` states and, if requested, ``[N, heads, T, T]`` weights."""
        batch, length, _ = hidden_states.shape
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(hidden_states))
        value = self._split_heads(self.v_proj(hidden_states))
        dropout = self.dropout if self.training else 0.0

        weights = None
        if output_attentions:
            weights = torch.softmax((query @ key.transpose(-1, -2)) * self.head_dim**-0.5, dim=-1)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, length, self.embed_dim)
        return self.out_proj(context), weights


class CLIPMLP(nn.Module):
    """Feed-forward block: fc1, activation (quick_gelu or gelu), fc2."""

    def __init__(self, config: FLMRVisionConfig):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN1(x)), then x + mlp(LN2(x))."""

    def __init__(self, config: FLMRVisionConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), output_attentions=output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, weights


class CLIPEncoder(nn.Module):
    def __init__(self, config: FLMRVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])


class CLIPVisionTransformer(nn.Module):
    """Embeddings, pre-LayerNorm, encoder layers and the (unused by FLMR) post-LayerNorm."""

    def __init__(self, config: FLMRVisionConfig):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> BaseModelOutputWithPooling:
        """Encode ``[N, C, H, W]`` pixels.

        Returns ``last_hidden_state`` ``[N, 1 + P, H_v]`` (no post-LayerNorm), ``pooler_output``
        ``[N, H_v]`` (post-LayerNorm of the CLS state, CLIP's pooled output, not used by FLMR) and,
        when requested, ``hidden_states`` (``L_v + 1`` entries: the pre-LayerNorm output, then each
        layer's output) and ``attentions``.
        """
        hidden_states = self.pre_layrnorm(self.embeddings(pixel_values))
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.encoder.layers:
            hidden_states, weights = layer(hidden_states, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(weights)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=self.post_layernorm(hidden_states[:, 0]),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


class CLIPVisionModel(nn.Module):
    """Holder that reproduces the transformers 4.x ``CLIPVisionModel.vision_model`` nesting."""

    def __init__(self, config: FLMRVisionConfig):
        super().__init__()
        self.vision_model = CLIPVisionTransformer(config)

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        return self.vision_model(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states)


class FLMRVisionModel(PreTrainedModel):
    """FLMR's vision encoder: a CLIP ViT under ``vision_model.vision_model``.

    FLMR takes ``last_hidden_state[:, 0]`` (the CLS state before post-LayerNorm) for its MLP
    mapping network, and PreFLMR ``hidden_states[-2][:, 1:]`` for its mapping transformer.
    """

    config_class = FLMRVisionConfig
    base_model_prefix = "flmr_vision_model"
    main_input_name = "pixel_values"
    _no_split_modules = ["CLIPEncoderLayer"]

    def __init__(self, config: FLMRVisionConfig):
        super().__init__(config)
        self.vision_model = CLIPVisionModel(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, CLIPVisionEmbeddings):
            nn.init.normal_(module.class_embedding, std=self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.vision_model.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode ``[N, C, H, W]`` pixels; see :meth:`CLIPVisionTransformer.forward`."""
        output = self.vision_model(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return output if return_dict else output.to_tuple()
