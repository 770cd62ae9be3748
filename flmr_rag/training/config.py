"""Settings of a contrastive fine-tuning run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainingConfig:
    """Every setting of a fine-tuning run; saved next to each checkpoint as JSON.

    Attributes:
        output_dir: where checkpoints (``checkpoint-<step>/``) and the final model go.
        max_steps: optimizer steps to run.
        batch_size: queries per forward pass; each brings ``1 + num_negatives`` passages.
        gradient_accumulation_steps: forward passes summed into one optimizer step.
        num_negatives: negatives per query (row negatives first, then random passages).
        distinct_positives: draw each micro-batch so that no two queries share their first
            positive passage, which keeps the in-batch negatives free of false negatives on
            collections with few passages. Needs at least ``batch_size`` distinct positives;
            rows are then drawn at random instead of epoch by epoch.
        use_in_batch_negatives: train on the in-batch loss, where every passage of the batch is
            a candidate for every query; False trains on each query's own positive and negatives.
        train_mapping_networks: train the vision MLP, the transformer mapping network and the
            text linears.
        train_text_encoders: also train the BERT text encoders.
        train_vision_encoder: also train the ViT (frozen by default, as in PreFLMR).
        mapping_learning_rate: AdamW rate of the mapping networks.
        encoder_learning_rate: AdamW rate of the text encoders.
        vision_learning_rate: AdamW rate of the ViT; None uses ``encoder_learning_rate``.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up from 0, then linear decay to 0 at ``max_steps``.
        max_grad_norm: gradient clipping norm; 0 disables clipping.
        bf16: bfloat16 autocast; "auto" turns it on for CUDA devices that support it.
        gradient_checkpointing: recompute encoder activations in the backward pass (less
            memory, about a third more compute).
        cache_frozen_text_encoders: reuse text-encoder outputs of repeated token rows while the
            text encoders are frozen (no effect when they train).
        image_cache_size: processed query and passage images kept in memory (0 disables).
        eval_every: steps between evaluations on the held-out rows; 0 evaluates only at the end.
        eval_ks: the K of Recall@K.
        save_every: steps between resumable checkpoints; 0 saves only the final model.
        save_total_limit: checkpoints kept on disk (oldest deleted first).
        default_instruction: instruction for rows without one; None uses the retriever's
            default for the query kind.
        seed: fixes batch order, negatives, dropout and new weights.
    """

    output_dir: str = "flmr-finetuned"
    max_steps: int = 1000
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_negatives: int = 1
    distinct_positives: bool = False
    use_in_batch_negatives: bool = True
    train_mapping_networks: bool = True
    train_text_encoders: bool = False
    train_vision_encoder: bool = False
    mapping_learning_rate: float = 1e-4
    encoder_learning_rate: float = 1e-5
    vision_learning_rate: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    bf16: bool | str = "auto"
    gradient_checkpointing: bool = False
    cache_frozen_text_encoders: bool = True
    image_cache_size: int = 10000
    eval_every: int = 0
    eval_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    save_every: int = 0
    save_total_limit: int = 2
    default_instruction: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {"max_steps": self.max_steps, "batch_size": self.batch_size, "gradient_accumulation_steps": self.gradient_accumulation_steps}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be True, False or 'auto', got {self.bf16!r}")
        if not (self.train_mapping_networks or self.train_text_encoders or self.train_vision_encoder):
            raise ValueError("nothing to train: enable train_mapping_networks, train_text_encoders or train_vision_encoder")
        if not self.eval_ks or min(self.eval_ks) < 1:
            raise ValueError(f"eval_ks must be positive integers, got {self.eval_ks}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-serialisable dict."""
        return asdict(self)
