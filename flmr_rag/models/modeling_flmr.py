"""``FLMRModelForRetrieval``: FLMR v1 and PreFLMR query/document encoders and training loss.

Module names are the checkpoints' state-dict prefixes. A module shared by the query and the
document side (FLMR v1's text encoder, every released vision encoder) is registered once,
under its ``query_*`` name (the name the checkpoints store). The ``context_*`` name is a
read-only property that returns the same module, so ``state_dict()`` has no duplicates.
"""

from __future__ import annotations

import logging
import string

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from ..scoring import late_interaction_scores, pairwise_late_interaction_scores
from .configuration_flmr import FLMRConfig
from .encoding import ModalitySwitch, combine_blocks, resolve_switch
from .loading import FLMRPretrainedIO
from .mapping_network import FLMRMultiLayerPerceptron, FLMRTransformerMappingNetwork
from .outputs import FLMRContextEncoderOutput, FLMRModelForRetrievalOutput, FLMRQueryEncoderOutput
from .text import FLMRTextModel
from .tokenization_flmr import FLMRContextEncoderTokenizer, FLMRQueryEncoderTokenizer
from .vision import FLMRVisionModel

logger = logging.getLogger(__name__)


def l2_normalize(embeddings: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension; zero rows stay zero.

    float16 is normalised in float32 because the 1e-12 norm floor underflows to 0 in float16,
    which would turn zero rows into NaN. The result keeps the input dtype.
    """
    if embeddings.dtype == torch.float16:
        return F.normalize(embeddings.float(), p=2, dim=-1).to(torch.float16)
    return F.normalize(embeddings, p=2, dim=-1)


def _shared_module(query_name: str, context_name: str) -> property:
    def getter(self: nn.Module) -> nn.Module:
        module = self._modules.get(context_name)
        return module if module is not None else self._modules.get(query_name)

    return property(getter, doc=f"The document-side module: the same object as ``{query_name}`` when shared, None when absent.")


class FLMRModelForRetrieval(FLMRPretrainedIO, PreTrainedModel):
    """FLMR / PreFLMR late-interaction retriever.

    Args:
        config: the model configuration.
        query_tokenizer / context_tokenizer: needed for instruction masking (the id of
            ``config.mask_instruction_token``) and punctuation masking of documents; kept as
            attributes and written by :meth:`save_pretrained`.
    """

    config_class = FLMRConfig
    base_model_prefix = "flmr"
    _no_split_modules = ["BertLayer", "CLIPEncoderLayer"]
    _keys_to_ignore_on_load_unexpected = [r"cls\."]
    # Activation checkpointing applies to the BERT encoders (transformers' own layers).
    supports_gradient_checkpointing = True

    context_text_encoder = _shared_module("query_text_encoder", "context_text_encoder")
    context_text_encoder_linear = _shared_module("query_text_encoder_linear", "context_text_encoder_linear")
    context_vision_encoder = _shared_module("query_vision_encoder", "context_vision_encoder")
    context_vision_projection = _shared_module("query_vision_projection", "context_vision_projection")

    def __init__(
        self,
        config: FLMRConfig,
        query_tokenizer: FLMRQueryEncoderTokenizer | None = None,
        context_tokenizer: FLMRContextEncoderTokenizer | None = None,
    ):
        super().__init__(config)
        self.query_tokenizer = query_tokenizer
        self.context_tokenizer = context_tokenizer
        self.image_processor = None
        text_config, vision_config = config.text_config, config.vision_config

        self.query_text_encoder = FLMRTextModel(text_config)
        self.query_text_encoder_linear = nn.Linear(text_config.hidden_size, config.dim, bias=False)
        if config.separate_query_and_context_text_encoder:
            self.context_text_encoder = FLMRTextModel(text_config)
            self.context_text_encoder_linear = nn.Linear(text_config.hidden_size, config.dim, bias=False)

        if config.use_vision_encoder:
            prefix = config.mapping_network_prefix_length
            sizes = (vision_config.hidden_size, config.dim * prefix // 2, config.dim * prefix)
            self.query_vision_encoder = FLMRVisionModel(vision_config)
            self.query_vision_projection = FLMRMultiLayerPerceptron(sizes)
            if config.separate_query_and_context_vision_encoder:
                self.context_vision_encoder = FLMRVisionModel(vision_config)
                self.context_vision_projection = FLMRMultiLayerPerceptron(sizes)

        if config.use_vision_encoder and config.use_transformer_mapping_network:
            values = config.transformer_mapping_bert_config()
            self.transformer_mapping_input_linear = nn.Linear(vision_config.hidden_size, values["hidden_size"])
            self.transformer_mapping_network = FLMRTransformerMappingNetwork(values, text_config.hidden_size)
            self.transformer_mapping_output_linear = nn.Linear(values["hidden_size"], config.dim)
        self.post_init()

    @property
    def shared_modules(self) -> dict[str, bool]:
        """Which query/document module pairs are one shared module: ``{"text": bool, "vision": bool}``."""
        return {
            "text": not self.config.separate_query_and_context_text_encoder,
            "vision": self.config.use_vision_encoder and not self.config.separate_query_and_context_vision_encoder,
        }

    # ----------------------------------------------------------------- token masks

    def _instruction_separator_id(self) -> int:
        token = self.config.mask_instruction_token
        if self.query_tokenizer is None:
            raise ValueError(
                f"mask_instruction_token={token!r} needs the query tokenizer to find its id; "
                "pass query_tokenizer= to the model or load it with FLMRModelForRetrieval.from_pretrained"
            )
        ids = self.query_tokenizer.convert_tokens_to_ids(self.query_tokenizer.tokenize(token))
        if not ids:
            raise ValueError(f"mask_instruction_token={token!r} gives no token with the query tokenizer")
        return int(ids[0])

    def _punctuation_ids(self, device: torch.device) -> torch.Tensor:
        """Return the first token id of every ``string.punctuation`` character (the document skiplist)."""
        if not self.config.mask_punctuation:
            return torch.empty(0, dtype=torch.long, device=device)
        cached = getattr(self, "_punctuation_cache", None)
        if cached is not None and cached[0] is self.context_tokenizer:
            return cached[1].to(device)
        if self.context_tokenizer is None:
            raise ValueError(
                "mask_punctuation=True needs the context tokenizer to find the punctuation ids; "
                "pass context_tokenizer= to the model or load it with FLMRModelForRetrieval.from_pretrained"
            )
        tokenizer = self.context_tokenizer
        ids = sorted({tokenizer.convert_tokens_to_ids(tokenizer.tokenize(symbol))[0] for symbol in string.punctuation})
        skiplist = torch.tensor(ids, dtype=torch.long)
        self._punctuation_cache = (tokenizer, skiplist)
        return skiplist.to(device)

    def query_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Return the ``[B, Lq]`` bool mask of query text rows kept in the embedding.

        Padding id 0 and ``query_mask_input_ids_skip_list`` ids are dropped. With
        ``mask_instruction_token``, positions 2 up to and including its first occurrence are
        dropped too; a query without it keeps everything (a warning is logged).
        """
        keep = input_ids != 0
        if self.config.query_mask_input_ids_skip_list:
            skip = torch.tensor(self.config.query_mask_input_ids_skip_list, dtype=input_ids.dtype, device=input_ids.device)
            keep &= ~torch.isin(input_ids, skip)
        if self.config.mask_instruction_token is None:
            return keep
        is_separator = input_ids == self._instruction_separator_id()
        found = is_separator.any(dim=1)
        if not bool(found.all()):
            logger.warning(
                "%d of %d queries contain no instruction separator %r, so no instruction token is masked; "
                "write queries as 'instruction%s question'",
                int((~found).sum()), len(found), self.config.mask_instruction_token, self.config.mask_instruction_token,
            )
        separator_position = torch.where(found, is_separator.int().argmax(dim=1), torch.ones_like(found, dtype=torch.long))
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        return keep & ((positions > separator_position[:, None]) | (positions < 2))

    def context_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Return the ``[B, Ld]`` bool mask of document text rows kept: not padding (0) and not punctuation."""
        return (input_ids != 0) & ~torch.isin(input_ids, self._punctuation_ids(input_ids.device))

    # ----------------------------------------------------------------- encoders

    def _require_vision_encoder(self) -> None:
        if not self.config.use_vision_encoder:
            raise ValueError("this model has no vision encoder (use_vision_encoder=False); pass no pixel_values or image_features")

    def _encode_images(self, encoder, projection, pixel_values, image_features, batch_size, need_patches, output_attentions, output_hidden_states):
        """Return ``(mlp_tokens [B, 32R, dim], patch_states or None, vision_output or None)``."""
        if pixel_values is not None and image_features is not None:
            raise ValueError("pass either pixel_values or image_features, not both")
        vision_output = None
        if pixel_values is not None:
            if pixel_values.dim() == 5:
                if need_patches:
                    raise ValueError("region-of-interest pixel_values [B, R, C, H, W] are not supported with the transformer mapping network; pass [B, C, H, W]")
                pixel_values = pixel_values.flatten(0, 1)
            elif pixel_values.dim() != 4:
                raise ValueError(f"pixel_values must be [B, C, H, W] or [B, R, C, H, W], got shape {tuple(pixel_values.shape)}")
            vision_output = encoder(
                pixel_values.to(self.device, self.dtype),
                output_attentions=bool(output_attentions),
                output_hidden_states=bool(output_hidden_states) or need_patches,
            )
            features = vision_output.last_hidden_state[:, 0]
        else:
            if need_patches:
                raise ValueError(
                    "image_features contains only the CLS feature, but the transformer mapping network needs the ViT patch "
                    "states; pass pixel_values instead, or switch vision tokens off with concat_output_from_vision_encoder=False"
                )
            features = image_features.to(self.device, self.dtype).reshape(-1, self.config.vision_config.hidden_size)
        mlp_tokens = projection(features).view(batch_size, -1, self.config.dim)
        patches = vision_output.hidden_states[-2][:, 1:] if need_patches else None
        return mlp_tokens, patches, vision_output

    def num_query_vision_tokens(self) -> int:
        """Vision rows per single-image query: the MLP prefix plus, for PreFLMR, one per ViT patch."""
        if not self.config.use_vision_encoder:
            return 0
        count = self.config.mapping_network_prefix_length
        if self.config.use_transformer_mapping_network:
            count += self.config.vision_config.num_patches
        return count

    def query(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        concat_output_from_vision_encoder: ModalitySwitch = None,
        concat_output_from_text_encoder: ModalitySwitch = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FLMRQueryEncoderOutput:
        """Encode queries into late-interaction matrices.

        Args:
            input_ids / attention_mask: ``[B, Lq_text]`` from :class:`FLMRQueryEncoderTokenizer`.
            pixel_values: ``[B, C, H, W]`` (or FLMR v1 regions ``[B, R, C, H, W]``), or None.
            image_features: ``[B, H_v]`` pre-computed CLS features (models without the
                transformer mapping network only), or None.
            concat_output_from_vision_encoder / concat_output_from_text_encoder: a bool or one
                bool per query; None takes the config value, except that the vision block is left
                out when no image is given. A per-query False keeps the block as zero rows.

        Returns:
            :class:`FLMRQueryEncoderOutput`; ``late_interaction_output`` is ``[B, Lq, dim]`` in the
            model dtype with rows: text, then the 32 MLP tokens, then the mapping tokens.

        Raises:
            ValueError: for an explicit vision switch without an image, ``image_features`` with
                the transformer mapping network, both image inputs, or switches of wrong length.
        """
        batch_size = input_ids.shape[0]
        has_image = pixel_values is not None or image_features is not None
        text_switch = resolve_switch(concat_output_from_text_encoder, self.config.query_concat_output_from_text_encoder, batch_size, "concat_output_from_text_encoder")
        vision_default = self.config.query_concat_output_from_vision_encoder and self.config.use_vision_encoder and has_image
        vision_switch = resolve_switch(concat_output_from_vision_encoder, vision_default, batch_size, "concat_output_from_vision_encoder")

        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        text_output = self.query_text_encoder(
            input_ids=input_ids, attention_mask=attention_mask,
            output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states),
        )
        text_states = text_output.last_hidden_state
        text_mask = self.query_token_mask(input_ids)
        text_embeddings = self.query_text_encoder_linear(text_states) * text_mask[:, :, None].to(text_states.dtype)

        vision_embeddings, vision_output, mapping_states, mapping_attentions = None, None, None, None
        if vision_switch.any_on and has_image:
            need_patches = self.config.use_transformer_mapping_network
            self._require_vision_encoder()
            vision_embeddings, patches, vision_output = self._encode_images(
                self.query_vision_encoder, self.query_vision_projection, pixel_values, image_features, batch_size, need_patches, output_attentions, output_hidden_states
            )
            if need_patches:
                mapped, mapping_states, mapping_attentions = self._map_patches(patches, text_states, input_ids, output_attentions, output_hidden_states)
                vision_embeddings = torch.cat([vision_embeddings, mapped], dim=1)
        elif vision_switch.any_on:
            raise ValueError(
                "concat_output_from_vision_encoder is True but no pixel_values or image_features were given; "
                "pass an image, or concat_output_from_vision_encoder=False for text-only queries"
            )
        elif vision_switch.is_list:
            # Every query switched vision off: keep zero rows so the length matches image queries.
            vision_embeddings = text_embeddings.new_zeros(batch_size, self.num_query_vision_tokens(), self.config.dim)

        embeddings = combine_blocks([(text_embeddings, text_switch), (vision_embeddings, vision_switch)])
        return FLMRQueryEncoderOutput(
            pooler_output=embeddings[:, 0, :],
            late_interaction_output=l2_normalize(embeddings),
            text_encoder_attentions=text_output.attentions,
            text_encoder_hidden_states=text_output.hidden_states,
            vision_encoder_attentions=vision_output.attentions if vision_output is not None else None,
            vision_encoder_hidden_states=vision_output.hidden_states if vision_output is not None and output_hidden_states else None,
            transformer_mapping_network_attentions=mapping_attentions,
            transformer_mapping_network_hidden_states=mapping_states,
        )

    def _map_patches(self, patches, text_states, input_ids, output_attentions, output_hidden_states):
        """Run PreFLMR's mapping transformer: ``[B, P, H_v]`` patches -> ``[B, P, dim]`` tokens.

        The cross-attention reads the raw text states of the first
        ``transformer_mapping_cross_attention_length`` positions, all visible (instruction and
        [MASK] rows included) except ids in ``query_mask_input_ids_skip_list``.
        """
        length = self.config.transformer_mapping_cross_attention_length
        memory = text_states[:, :length]
        memory_mask = None
        if self.config.query_mask_input_ids_skip_list:
            skip = torch.tensor(self.config.query_mask_input_ids_skip_list, device=input_ids.device, dtype=input_ids.dtype)
            memory_mask = ~torch.isin(input_ids[:, :length], skip)
        hidden, states, attentions = self.transformer_mapping_network(
            self.transformer_mapping_input_linear(patches), memory, memory_mask,
            output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states),
        )
        return self.transformer_mapping_output_linear(hidden), states, attentions

    def doc(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        concat_output_from_vision_encoder: ModalitySwitch = None,
        concat_output_from_text_encoder: ModalitySwitch = None,
        keep_dims: bool = True,
        return_mask: bool = True,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FLMRContextEncoderOutput:
        """Encode documents into late-interaction matrices.

        Args:
            input_ids / attention_mask: ``[B, Ld_text]`` from :class:`FLMRContextEncoderTokenizer`.
            pixel_values / image_features: document images (``[B, C, H, W]`` / ``[B, H_v]``).
            concat_output_from_vision_encoder / concat_output_from_text_encoder: as in
                :meth:`query`, defaults from ``context_concat_output_from_*``; a per-document
                False masks that block's rows.
            keep_dims: True returns padded ``[B, Ld, dim]``; False a list of ``[n_i, dim]`` tensors
                holding only each document's kept tokens.
            return_mask: also return ``context_mask``.

        Returns:
            :class:`FLMRContextEncoderOutput`. With an image the 32 image rows come first. The
            embeddings keep the model dtype (no float16 cast on CUDA).
        """
        batch_size = input_ids.shape[0]
        has_image = pixel_values is not None or image_features is not None
        text_switch = resolve_switch(concat_output_from_text_encoder, self.config.context_concat_output_from_text_encoder, batch_size, "concat_output_from_text_encoder")
        vision_default = self.config.context_concat_output_from_vision_encoder and self.config.use_vision_encoder and has_image
        vision_switch = resolve_switch(concat_output_from_vision_encoder, vision_default, batch_size, "concat_output_from_vision_encoder")
        if vision_switch.any_on and not has_image:
            raise ValueError(
                "concat_output_from_vision_encoder is True but no pixel_values or image_features were given; "
                "pass document images, or concat_output_from_vision_encoder=False"
            )

        input_ids = input_ids.to(self.device)
        text_output = self.context_text_encoder(
            input_ids=input_ids, attention_mask=attention_mask.to(self.device),
            output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states),
        )
        text_mask = self.context_token_mask(input_ids)
        text_embeddings = self.context_text_encoder_linear(text_output.last_hidden_state)
        text_embeddings = text_embeddings * text_mask[:, :, None].to(text_embeddings.dtype)

        vision_embeddings, vision_mask, vision_output = None, None, None
        if vision_switch.any_on:
            self._require_vision_encoder()
            vision_embeddings, _, vision_output = self._encode_images(
                self.context_vision_encoder, self.context_vision_projection, pixel_values, image_features, batch_size, False, output_attentions, output_hidden_states
            )
            vision_mask = torch.ones(vision_embeddings.shape[:2], dtype=torch.bool, device=self.device)

        blocks = [(vision_embeddings, vision_switch), (text_embeddings, text_switch)]
        embeddings = l2_normalize(combine_blocks(blocks))
        mask = combine_blocks([(vision_mask, vision_switch), (text_mask, text_switch)])
        late = embeddings if keep_dims else [row[row_mask] for row, row_mask in zip(embeddings, mask)]
        return FLMRContextEncoderOutput(
            pooler_output=embeddings[:, 0, :],
            late_interaction_output=late,
            context_mask=mask[:, :, None] if return_mask else None,
            text_encoder_attentions=text_output.attentions,
            text_encoder_hidden_states=text_output.hidden_states,
            vision_encoder_attentions=vision_output.attentions if vision_output is not None else None,
            vision_encoder_hidden_states=vision_output.hidden_states if vision_output is not None and output_hidden_states else None,
        )

    # ----------------------------------------------------------------- training

    def forward(
        self,
        query_input_ids: torch.Tensor,
        query_attention_mask: torch.Tensor,
        context_input_ids: torch.Tensor,
        context_attention_mask: torch.Tensor,
        query_pixel_values: torch.Tensor | None = None,
        query_image_features: torch.Tensor | None = None,
        context_pixel_values: torch.Tensor | None = None,
        context_image_features: torch.Tensor | None = None,
        use_in_batch_negatives: bool = True,
        in_batch_negatives_from_all_gpus: bool = False,
        num_negative_examples: int = 1,
        query_concat_output_from_vision_encoder: ModalitySwitch = None,
        query_concat_output_from_text_encoder: ModalitySwitch = None,
        context_concat_output_from_vision_encoder: ModalitySwitch = None,
        context_concat_output_from_text_encoder: ModalitySwitch = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FLMRModelForRetrievalOutput | tuple:
        """Score ``B`` queries against their positive and ``n`` negatives and compute the losses.

        Contexts are ``B * (1 + n)`` in the order ``pos_1, neg_1_1 .. neg_1_n, pos_2, ...``.
        ``loss`` is the cross-entropy of ``scores`` ``[B, 1 + n]`` against label 0;
        ``in_batch_negative_loss`` (when ``use_in_batch_negatives``) scores every query against
        every context of the batch (of all processes with ``in_batch_negatives_from_all_gpus``
        under ``torch.distributed``) with the query's own positive as the target. It is returned
        separately and not added to ``loss``.

        Raises:
            ValueError: if the number of contexts is not ``B * (1 + num_negative_examples)``.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        group = num_negative_examples + 1
        if context_input_ids.shape[0] != query_input_ids.shape[0] * group:
            raise ValueError(
                f"got {context_input_ids.shape[0]} contexts for {query_input_ids.shape[0]} queries, expected "
                f"{query_input_ids.shape[0] * group} (one positive and num_negative_examples={num_negative_examples} negatives each)"
            )
        query_output = self.query(
            query_input_ids, query_attention_mask, query_pixel_values, query_image_features,
            query_concat_output_from_vision_encoder, query_concat_output_from_text_encoder,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        context_output = self.doc(
            context_input_ids, context_attention_mask, context_pixel_values, context_image_features,
            context_concat_output_from_vision_encoder, context_concat_output_from_text_encoder,
            keep_dims=True, return_mask=True, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        queries = query_output.late_interaction_output
        contexts, context_mask = context_output.late_interaction_output, context_output.context_mask

        scores = pairwise_late_interaction_scores(queries.repeat_interleave(group, dim=0), contexts, context_mask).view(-1, group)
        loss = F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))

        in_batch_loss = None
        if use_in_batch_negatives:
            if in_batch_negatives_from_all_gpus:
                queries, contexts, context_mask = gather_across_processes(queries, contexts, context_mask)
            in_batch_scores = late_interaction_scores(queries, contexts, context_mask)
            targets = torch.arange(queries.shape[0], device=in_batch_scores.device) * group
            in_batch_loss = F.cross_entropy(in_batch_scores, targets)

        query_attentions = (query_output.text_encoder_attentions, query_output.vision_encoder_attentions, query_output.transformer_mapping_network_attentions)
        query_hidden = (query_output.text_encoder_hidden_states, query_output.vision_encoder_hidden_states, query_output.transformer_mapping_network_hidden_states)
        context_attentions = (context_output.text_encoder_attentions, context_output.vision_encoder_attentions, None)
        context_hidden = (context_output.text_encoder_hidden_states, context_output.vision_encoder_hidden_states, None)
        if not return_dict:
            result = (loss, scores, in_batch_loss, query_output.late_interaction_output, contexts)
            if output_attentions:
                result += (query_attentions,)
            if output_hidden_states:
                result += (query_hidden,)
            if output_attentions:
                result += (context_attentions,)
            if output_hidden_states:
                result += (context_hidden,)
            return result
        return FLMRModelForRetrievalOutput(
            loss=loss,
            scores=scores,
            in_batch_negative_loss=in_batch_loss,
            query_late_interaction_output=query_output.late_interaction_output,
            context_late_interaction_output=contexts,
            query_attentions=query_attentions if output_attentions else None,
            query_hidden_states=query_hidden if output_hidden_states else None,
            context_attentions=context_attentions if output_attentions else None,
            context_hidden_states=context_hidden if output_hidden_states else None,
        )


def gather_across_processes(queries: torch.Tensor, contexts: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the tensors of every ``torch.distributed`` process in rank order.

    The local copy keeps its autograd graph; the others are detached. Without an initialised
    process group the tensors are returned unchanged.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return queries, contexts, mask
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered = []
    for tensor in (queries, contexts, mask):
        copies = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(copies, tensor.detach().contiguous())
        copies[rank] = tensor
        gathered.append(torch.cat(copies, dim=0))
    return gathered[0], gathered[1], gathered[2]
