"""Output dataclasses of the FLMR encoders and of ``FLMRModelForRetrieval.forward``.

Notation: ``B`` queries or documents, ``Lq`` query tokens (text tokens, then 32 MLP vision
tokens per image, then PreFLMR's patch-mapping tokens), ``Ld`` document tokens (32 image tokens
first when the document has an image, then text tokens), ``dim`` the late-interaction width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class FLMRQueryEncoderOutput(ModelOutput):
    """Output of ``FLMRModelForRetrieval.query``.

    Attributes:
        pooler_output: ``[B, dim]``, the first token row of the query matrix before L2
            normalisation.
        late_interaction_output: ``[B, Lq, dim]``, the L2-normalised query token matrix in the
            model dtype. Masked instruction rows and switched-off blocks are exact zero vectors.
        text_encoder_attentions / text_encoder_hidden_states: the query text encoder's
            per-layer attentions / hidden states, when requested.
        vision_encoder_attentions / vision_encoder_hidden_states: the vision tower's, when
            requested and an image was encoded (hidden states: ``L_v + 1`` entries
            ``[B, 1 + P, H_v]``, the first after the pre-LayerNorm).
        transformer_mapping_network_attentions / transformer_mapping_network_hidden_states: the
            PreFLMR mapping transformer's, when requested.
    """

    pooler_output: torch.FloatTensor | None = None
    late_interaction_output: torch.FloatTensor | None = None
    text_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_mapping_network_attentions: tuple[torch.FloatTensor, ...] | None = None
    transformer_mapping_network_hidden_states: tuple[torch.FloatTensor, ...] | None = None


# Name used by the documentation of the upstream transformers draft for the same output.
FLMRQuestionEncoderOutput = FLMRQueryEncoderOutput


@dataclass
class FLMRContextEncoderOutput(ModelOutput):
    """Output of ``FLMRModelForRetrieval.doc``.

    Attributes:
        pooler_output: ``[B, dim]``, the first token row of the normalised document matrix.
        late_interaction_output: ``[B, Ld, dim]`` L2-normalised document token matrix in the
            model dtype (masked rows are exact zero vectors); with ``keep_dims=False`` a list of
            ``B`` tensors ``[n_i, dim]`` holding only the kept tokens.
        context_mask: ``[B, Ld, 1]`` bool, True for kept tokens (not padding, not punctuation);
            None when ``return_mask=False``.
        text_encoder_* / vision_encoder_*: per-layer attentions / hidden states, when requested.
        transformer_mapping_network_*: always None (documents use no mapping transformer).
    """

    pooler_output: torch.FloatTensor | None = None
    late_interaction_output: torch.FloatTensor | list[torch.FloatTensor] | None = None
    context_mask: torch.BoolTensor | None = None
    text_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_mapping_network_attentions: tuple[torch.FloatTensor, ...] | None = None
    transformer_mapping_network_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class FLMRModelForRetrievalOutput(ModelOutput):
    """Output of ``FLMRModelForRetrieval.forward``.

    Attributes:
        loss: scalar, cross-entropy of ``scores`` against label 0 (the positive).
        scores: ``[B, 1 + n]`` float32 late-interaction scores, positive first, then the
            ``n`` negatives of each query.
        in_batch_negative_loss: scalar cross-entropy over every query against every document
            of the batch (target: the query's own positive), or None when in-batch negatives
            are off.
        query_late_interaction_output: ``[B, Lq, dim]``.
        context_late_interaction_output: ``[B * (1 + n), Ld, dim]``.
        query_attentions / query_hidden_states / context_attentions / context_hidden_states:
            3-tuples (text encoder, vision encoder, mapping transformer), entries may be None.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    in_batch_negative_loss: torch.FloatTensor | None = None
    query_late_interaction_output: torch.FloatTensor | None = None
    context_late_interaction_output: torch.FloatTensor | None = None
    query_attentions: tuple | None = None
    query_hidden_states: tuple | None = None
    context_attentions: tuple | None = None
    context_hidden_states: tuple | None = None
