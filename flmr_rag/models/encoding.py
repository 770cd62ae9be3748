"""Per-call and per-sample modality switches and the assembly of token blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# A bool for the whole batch, one bool per sample, or None for the configured default.
ModalitySwitch = bool | Sequence[bool] | torch.Tensor | None


@dataclass(frozen=True)
class ResolvedSwitch:
    """A modality switch after defaults: ``enabled`` for a batch-wide bool, or ``per_sample`` ``[B]`` bool."""

    enabled: bool
    per_sample: torch.Tensor | None = None

    @property
    def is_list(self) -> bool:
        return self.per_sample is not None

    @property
    def any_on(self) -> bool:
        """Whether any sample needs this block computed."""
        return bool(self.per_sample.any()) if self.per_sample is not None else self.enabled


def resolve_switch(value: ModalitySwitch, default: bool, batch_size: int, name: str) -> ResolvedSwitch:
    """Turn a switch argument into a :class:`ResolvedSwitch`.

    Raises:
        ValueError: if a per-sample switch does not have ``batch_size`` entries.
    """
    if value is None:
        return ResolvedSwitch(enabled=bool(default))
    if isinstance(value, bool):
        return ResolvedSwitch(enabled=value)
    per_sample = torch.as_tensor(list(value) if not isinstance(value, torch.Tensor) else value, dtype=torch.bool).flatten()
    if per_sample.numel() != batch_size:
        raise ValueError(f"{name} has {per_sample.numel()} entries but the batch has {batch_size} samples; pass one bool per sample or a single bool")
    return ResolvedSwitch(enabled=bool(per_sample.any()), per_sample=per_sample)


def combine_blocks(blocks: list[tuple[torch.Tensor | None, ResolvedSwitch]]) -> torch.Tensor:
    """Concatenate the switched-on token blocks along dim 1 in the given order.

    A block with a batch-wide False switch (or no tensor) is left out; with a per-sample switch
    the block stays and the rows of switched-off samples become zero (False for bool masks).

    Raises:
        ValueError: if every block is switched off.
    """
    parts = []
    for block, switch in blocks:
        if block is None or (not switch.is_list and not switch.enabled):
            continue
        if switch.is_list:
            keep = switch.per_sample.to(block.device).view(-1, *([1] * (block.dim() - 1)))
            block = block & keep if block.dtype == torch.bool else block * keep.to(block.dtype)
        parts.append(block)
    if not parts:
        raise ValueError("both the text and the vision output are switched off; enable at least one concat_output_from_* switch")
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
