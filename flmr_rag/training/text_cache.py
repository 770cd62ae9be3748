"""Reuse of frozen text-encoder outputs across training steps.

When the text encoders are frozen and in eval mode, a query or passage with the same token ids
always gets the same hidden states. Training data often repeats texts (templated questions, a
small passage set), so computing each distinct row once saves most of the text-encoder time.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

logger = logging.getLogger(__name__)


class FrozenTextEncoderCache:
    """An LRU cache from one row of token ids (and its attention mask) to its hidden states.

    Args:
        max_rows: rows kept; the least recently used row is evicted first. Each row costs
            ``L * H * 4`` bytes in float32 (32 x 384 x 4 = 48 KiB for a MiniLM query).
    """

    def __init__(self, max_rows: int = 8192) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.max_rows = max_rows
        self.rows: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def encode(self, encoder: nn.Module, original_forward, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return ``last_hidden_state`` ``[B, L, H]`` for ``input_ids`` ``[B, L]``, computing only unseen rows."""
        keys = [
            ids.cpu().numpy().tobytes() + b"|" + mask.cpu().numpy().tobytes()
            for ids, mask in zip(input_ids, attention_mask)
        ]
        missing = [position for position, key in enumerate(keys) if key not in self.rows]
        if missing and torch.is_inference_mode_enabled():
            # Inference tensors cannot enter a later autograd graph, so they are never stored.
            computed = original_forward(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return torch.stack([self.rows[key] if key in self.rows else computed[row] for row, key in enumerate(keys)])
        if missing:
            unique_positions = list({keys[position]: position for position in missing}.values())
            index = torch.tensor(unique_positions, device=input_ids.device)
            with torch.no_grad():
                states = original_forward(input_ids=input_ids[index], attention_mask=attention_mask[index]).last_hidden_state
            for row, position in enumerate(unique_positions):
                self.rows[keys[position]] = states[row].detach()
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)

        rows = []
        for key in keys:
            self.rows.move_to_end(key)
            rows.append(self.rows[key])
        while len(self.rows) > self.max_rows:
            self.rows.popitem(last=False)
        return torch.stack(rows)


@contextlib.contextmanager
def cached_text_encoders(model: nn.Module, cache: FrozenTextEncoderCache) -> Iterator[FrozenTextEncoderCache]:
    """Route the model's frozen text encoders through ``cache`` inside the ``with`` block.

    The encoders' parameters must not require gradients (the cache stores detached states).
    Calls that request attentions or hidden states bypass the cache. The original ``forward``
    methods are restored on exit, so ``state_dict`` and saving are unaffected.
    """
    encoders = []
    for name in ("query_text_encoder", "context_text_encoder"):
        encoder = getattr(model, name, None)
        if encoder is None or any(encoder is seen for seen in encoders):
            continue
        if any(parameter.requires_grad for parameter in encoder.parameters()):
            raise ValueError(f"{name} is being trained; its outputs change every step and cannot be cached")
        encoders.append(encoder)

    for encoder in encoders:
        original_forward = encoder.forward

        def cached_forward(input_ids=None, attention_mask=None, output_attentions=False, output_hidden_states=False, _original=original_forward, _encoder=encoder, **kwargs):
            if output_attentions or output_hidden_states or kwargs.get("inputs_embeds") is not None or _encoder.training:
                return _original(input_ids=input_ids, attention_mask=attention_mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states, **kwargs)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            states = cache.encode(_encoder, _original, input_ids, attention_mask)
            return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=states[:, 0])

        encoder.forward = cached_forward
    try:
        yield cache
    finally:
        for encoder in encoders:
            del encoder.forward
        logger.debug("text-encoder cache: %d hits, %d misses", cache.hits, cache.misses)
