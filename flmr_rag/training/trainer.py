"""Contrastive fine-tuning of ``FLMRModelForRetrieval`` with the FLMR loss.

Each step scores every query against its positive passage and ``num_negatives`` negatives
through the model's ``forward()``. With in-batch negatives (the default) the loss is the
model's ``in_batch_negative_loss``: every passage of the batch competes for every query.
Without them it is the cross-entropy over the query's own passages (``loss``).

Batches are a deterministic function of the seed and the step, and the dropout RNG state is
saved with each checkpoint, so a run resumed from a checkpoint continues as the uninterrupted
run would have.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from flmr_rag.encoding import FLMREncoder, Query, load_image
from flmr_rag.progress import progress
from flmr_rag.training.config import TrainingConfig
from flmr_rag.training.data import Passage, TrainingExample, choose_contexts
from flmr_rag.training.evaluation import recall_at_k
from flmr_rag.training.text_cache import FrozenTextEncoderCache, cached_text_encoders

logger = logging.getLogger(__name__)

MAPPING_PREFIXES = (
    "query_vision_projection.",
    "context_vision_projection.",
    "transformer_mapping_",
    "query_text_encoder_linear.",
    "context_text_encoder_linear.",
)
TEXT_ENCODER_PREFIXES = ("query_text_encoder.", "context_text_encoder.")
VISION_ENCODER_PREFIXES = ("query_vision_encoder.", "context_vision_encoder.")
STATE_FILE = "training_state.pt"
CONFIG_FILE = "training_config.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingResult:
    """Summary of a training run: final step, per-step losses of this session, evaluations and the output folder."""

    step: int
    losses: list[float] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    output_dir: str = ""
    seconds: float = 0.0


def parameter_groups(model: torch.nn.Module, config: TrainingConfig) -> list[dict[str, Any]]:
    """Set ``requires_grad`` by module family and return AdamW parameter groups with their rates.

    Families: mapping networks (vision MLP, mapping transformer, text linears), text encoders,
    vision encoder. Parameters of a family that does not train are frozen. Raises ValueError
    when the selection leaves no trainable parameter.
    """
    families: dict[str, list[torch.nn.Parameter]] = {"mapping": [], "text": [], "vision": [], "other": []}
    for name, parameter in model.named_parameters():
        if name.startswith(MAPPING_PREFIXES):
            families["mapping"].append(parameter)
        elif name.startswith(TEXT_ENCODER_PREFIXES):
            families["text"].append(parameter)
        elif name.startswith(VISION_ENCODER_PREFIXES):
            families["vision"].append(parameter)
        else:
            families["other"].append(parameter)

    settings = {
        "mapping": (config.train_mapping_networks, config.mapping_learning_rate),
        "text": (config.train_text_encoders, config.encoder_learning_rate),
        "vision": (config.train_vision_encoder, config.vision_learning_rate if config.vision_learning_rate is not None else config.encoder_learning_rate),
        "other": (False, 0.0),
    }
    groups = []
    for family, parameters in families.items():
        trains, learning_rate = settings[family]
        for parameter in parameters:
            parameter.requires_grad_(trains)
        if trains and parameters:
            groups.append({"params": parameters, "lr": learning_rate, "name": family})
    if not groups:
        raise ValueError("the selected module families hold no parameters of this model; train the mapping networks or the encoders")
    return groups


def warmup_linear_decay(warmup_steps: int, total_steps: int):
    """Return the learning-rate factor of a step: linear warm-up to 1, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max((total_steps - step) / max(total_steps - warmup_steps, 1), 0.0)

    return factor


class ContrastiveTrainer:
    """Fine-tunes an ``FLMRModelForRetrieval`` on query rows against a passage collection.

    Args:
        model: the model to train (its tokenizers must be attached).
        passages: every passage by id (:func:`flmr_rag.training.data.read_passages`).
        train_examples: training rows; their passage ids must be in ``passages``.
        config: the run's settings.
        eval_examples: held-out rows for Recall@K, or None to skip evaluation.
        image_processor: the model's image processor; None uses ``model.image_processor`` or
            ``flmr_rag.models.load_image_processor``.

    Example:
        >>> trainer = ContrastiveTrainer(model, passages, examples, TrainingConfig(max_steps=200))
        >>> result = trainer.train()
        >>> FLMRModelForRetrieval.from_pretrained(result.output_dir)
    """

    def __init__(
        self,
        model: Any,
        passages: dict[str, Passage],
        train_examples: list[TrainingExample],
        config: TrainingConfig,
        eval_examples: list[TrainingExample] | None = None,
        image_processor: Any = None,
    ) -> None:
        if not train_examples:
            raise ValueError("no training examples; read_examples() must return at least one row")
        if model.query_tokenizer is None or model.context_tokenizer is None:
            raise ValueError("the model has no tokenizers; load it with from_pretrained or pass query_tokenizer= and context_tokenizer=")
        if image_processor is None:
            image_processor = model.image_processor
        if image_processor is None and model.config.use_vision_encoder:
            from flmr_rag.models import load_image_processor

            image_processor = load_image_processor(getattr(model, "name_or_path", None) or None, model.config)
        self.model = model
        self.passages = passages
        self.passage_ids = list(passages)
        self.train_examples = list(train_examples)
        self.eval_examples = list(eval_examples or [])
        self.config = config
        self.image_processor = image_processor
        self.encoder = FLMREncoder(model, image_processor, batch_size=max(config.batch_size, 32))
        self.groups = parameter_groups(model, config)
        self.optimizer = torch.optim.AdamW(self.groups, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_linear_decay(config.warmup_steps, config.max_steps))
        self._rows_by_positive = _rows_by_first_positive(self.train_examples)
        if config.distinct_positives and len(self._rows_by_positive) < config.batch_size:
            raise ValueError(
                f"distinct_positives needs at least batch_size={config.batch_size} distinct positive passages, "
                f"but the training rows have {len(self._rows_by_positive)}; lower batch_size or turn distinct_positives off"
            )
        self._pixel_cache: dict[str, torch.Tensor] = {}
        self._text_cache = FrozenTextEncoderCache()
        if config.gradient_checkpointing:
            _enable_gradient_checkpointing(model)

    # ----------------------------------------------------------------- batches

    def _example_indices(self, micro_batch: int) -> list[int]:
        """Rows of one micro-batch: a slice of the concatenated per-epoch permutations, or with
        ``distinct_positives`` one random row for each of ``batch_size`` random positives."""
        if self.config.distinct_positives:
            generator = torch.Generator().manual_seed(self.config.seed * 104_729 + micro_batch)
            chosen = torch.randperm(len(self._rows_by_positive), generator=generator)[: self.config.batch_size].tolist()
            indices = []
            for group_index in chosen:
                rows = self._rows_by_positive[group_index]
                indices.append(rows[int(torch.randint(len(rows), (1,), generator=generator))])
            return indices

        count = len(self.train_examples)
        size = self.config.batch_size
        indices = []
        for position in range(micro_batch * size, (micro_batch + 1) * size):
            epoch, offset = divmod(position, count)
            permutation = self._permutation(epoch)
            indices.append(int(permutation[offset]))
        return indices

    def _permutation(self, epoch: int) -> torch.Tensor:
        cached = getattr(self, "_cached_permutation", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        permutation = torch.randperm(len(self.train_examples), generator=generator)
        self._cached_permutation = (epoch, permutation)
        return permutation

    def _pixels(self, images: list[str | None]) -> tuple[torch.Tensor | None, list[bool] | None]:
        """Return pixel values ``[B, 3, H, W]`` (zeros where an image is missing) and per-row switches."""
        present = [image is not None for image in images]
        if not any(present):
            return None, None
        rows = []
        for image in images:
            if image is None:
                rows.append(None)
                continue
            pixels = self._pixel_cache.get(image)
            if pixels is None:
                pixels = self.image_processor(images=[load_image(image)], return_tensors="pt")["pixel_values"][0]
                if len(self._pixel_cache) < self.config.image_cache_size:
                    self._pixel_cache[image] = pixels
            rows.append(pixels)
        template = next(row for row in rows if row is not None)
        stacked = torch.stack([row if row is not None else torch.zeros_like(template) for row in rows])
        return stacked.to(self.model.device), (None if all(present) else present)

    def build_batch(self, micro_batch: int) -> dict[str, Any]:
        """Return the ``forward()`` keyword arguments of one micro-batch (deterministic per index)."""
        examples = [self.train_examples[index] for index in self._example_indices(micro_batch)]
        generator = torch.Generator().manual_seed(self.config.seed * 7_919 + micro_batch)
        context_ids = [
            passage_id
            for example in examples
            for passage_id in choose_contexts(example, self.passage_ids, self.config.num_negatives, generator)
        ]
        query_texts = [
            self.encoder.query_text(Query(example.question, example.image, example.instruction if example.instruction is not None else self.config.default_instruction))
            for example in examples
        ]
        queries = self.model.query_tokenizer(query_texts)
        contexts = self.model.context_tokenizer([self.passages[i].text for i in context_ids])
        batch: dict[str, Any] = {
            "query_input_ids": queries["input_ids"],
            "query_attention_mask": queries["attention_mask"],
            "context_input_ids": contexts["input_ids"],
            "context_attention_mask": contexts["attention_mask"],
        }

        query_pixels, query_switch = self._pixels([example.image for example in examples])
        if query_pixels is not None:
            batch["query_pixel_values"] = query_pixels
            batch["query_concat_output_from_vision_encoder"] = query_switch
        elif self.model.config.use_vision_encoder:
            batch["query_concat_output_from_vision_encoder"] = False
        if self.model.config.context_concat_output_from_vision_encoder:
            context_pixels, context_switch = self._pixels([self.passages[i].image for i in context_ids])
            if context_pixels is not None:
                batch["context_pixel_values"] = context_pixels
                batch["context_concat_output_from_vision_encoder"] = context_switch
        return batch

    # ----------------------------------------------------------------- training

    def _set_train_mode(self) -> None:
        """Train mode for trained modules; frozen modules stay in eval mode (no dropout)."""
        self.model.train()
        for name, module in self.model.named_modules():
            if name and not any(parameter.requires_grad for parameter in module.parameters()):
                module.eval()

    def _autocast(self):
        device = self.model.device
        enabled = self.config.bf16 is True or (
            self.config.bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if enabled else nullcontext()

    def _text_cache_context(self):
        if self.config.cache_frozen_text_encoders and not self.config.train_text_encoders:
            return cached_text_encoders(self.model, self._text_cache)
        return nullcontext()

    def train(self, resume_from: str | os.PathLike | None = None) -> TrainingResult:
        """Run training up to ``config.max_steps`` and save the final model in ``output_dir``.

        ``resume_from`` is a ``checkpoint-<step>`` folder, or ``"latest"`` for the newest one in
        ``output_dir``; model weights, optimizer, scheduler, RNG state and step are restored
        from it. Returns a :class:`TrainingResult`. Raises FileNotFoundError when the
        checkpoint is missing.
        """
        config = self.config
        output_dir = Path(config.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = TrainingResult(step=0, output_dir=str(output_dir))

        with torch.random.fork_rng(devices=[self.model.device] if self.model.device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            if resume_from is not None:
                result.step = self._load_checkpoint(resume_from)
            self._set_train_mode()

            bar = progress(range(result.step, config.max_steps), initial=result.step, total=config.max_steps, desc="train retriever", unit="step")
            examples_per_step = config.batch_size * config.gradient_accumulation_steps
            with ExitStack() as stack:
                stack.enter_context(self._text_cache_context())
                for step in bar:
                    loss = self._optimizer_step(step)
                    result.losses.append(loss)
                    result.step = step + 1
                    rate = len(result.losses) * examples_per_step / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(loss=f"{loss:.4f}", examples_per_s=f"{rate:.1f}")

                    if config.eval_every and result.step % config.eval_every == 0 and result.step < config.max_steps:
                        result.evaluations.append(self._evaluate_during_training(result.step))
                    if config.save_every and result.step % config.save_every == 0 and result.step < config.max_steps:
                        self.save_checkpoint(result.step)
                bar.close()

                if self.eval_examples and (not result.evaluations or result.evaluations[-1]["step"] != result.step):
                    result.evaluations.append(self._evaluate_during_training(result.step))
            self.model.eval()
            self.save_model(output_dir)

        result.seconds = time.perf_counter() - started
        return result

    def _optimizer_step(self, step: int) -> float:
        config = self.config
        total = 0.0
        for micro in range(config.gradient_accumulation_steps):
            batch = self.build_batch(step * config.gradient_accumulation_steps + micro)
            with self._autocast():
                output = self.model(
                    **batch,
                    use_in_batch_negatives=config.use_in_batch_negatives,
                    num_negative_examples=config.num_negatives,
                )
            loss = output.in_batch_negative_loss if config.use_in_batch_negatives else output.loss
            (loss / config.gradient_accumulation_steps).backward()
            total += float(loss.detach()) / config.gradient_accumulation_steps

        if config.max_grad_norm > 0:
            parameters = [parameter for group in self.groups for parameter in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def evaluate(self, examples: list[TrainingExample] | None = None) -> dict[str, float]:
        """Return Recall@K (``config.eval_ks``) on ``examples`` (default: the held-out rows)."""
        examples = self.eval_examples if examples is None else examples
        was_training = self.model.training
        self.model.eval()
        try:
            return recall_at_k(self.encoder, examples, self.passages, self.config.eval_ks, self.config.default_instruction)
        finally:
            if was_training:
                self._set_train_mode()

    def _evaluate_during_training(self, step: int) -> dict[str, float]:
        metrics = {"step": step, **self.evaluate()}
        logger.info("step %d: %s", step, ", ".join(f"{name} {value:.4f}" for name, value in metrics.items() if name != "step"))
        return metrics

    # ----------------------------------------------------------------- saving

    def save_model(self, folder: str | os.PathLike) -> None:
        """Write the model, its tokenizers, image processor and training settings into ``folder``.

        Files are first written to a temporary folder beside it and then moved in one by one
        with ``os.replace``, so an interrupted save never leaves a half-written file.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / ".saving.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        self._write_model_files(staging)
        for entry in staging.iterdir():
            target = folder / entry.name
            if target.is_dir() and entry.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
        staging.rmdir()

    def _write_model_files(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        if self.image_processor is not None and not (folder / "preprocessor_config.json").is_file():
            self.image_processor.save_pretrained(folder)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))

    def save_checkpoint(self, step: int) -> Path:
        """Write ``output_dir/checkpoint-<step>``: the model files plus ``training_state.pt``.

        The state file holds only tensors and plain containers (step, optimizer, scheduler, RNG
        states), so it loads with ``torch.load(weights_only=True)``. Older checkpoints beyond
        ``save_total_limit`` are deleted. Returns the checkpoint folder.
        """
        output_dir = Path(self.config.output_dir)
        final = output_dir / f"checkpoint-{step}"
        staging = output_dir / f".checkpoint-{step}.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        self._write_model_files(staging)
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng_state": torch.get_rng_state(),
        }
        if self.model.device.type == "cuda":
            state["cuda_rng_state"] = torch.cuda.get_rng_state(self.model.device)
        torch.save(state, staging / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        logger.info("saved checkpoint %s", final)

        checkpoints = sorted(_checkpoints(output_dir))
        for _, old in checkpoints[: max(len(checkpoints) - self.config.save_total_limit, 0)]:
            shutil.rmtree(old)
        return final

    def _load_checkpoint(self, resume_from: str | os.PathLike) -> int:
        if str(resume_from) == "latest":
            checkpoints = sorted(_checkpoints(Path(self.config.output_dir)))
            if not checkpoints:
                raise FileNotFoundError(f"no checkpoint-<step> folder in {self.config.output_dir} to resume from; start without resume")
            folder = checkpoints[-1][1]
        else:
            folder = Path(resume_from)
        state_path = folder / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"{state_path} not found; resume from a checkpoint-<step> folder written by this trainer")

        self.model.load_state_dict(_load_weights(folder), strict=True)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng_state"])
        if "cuda_rng_state" in state and self.model.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng_state"], self.model.device)
        logger.info("resumed from %s at step %d", folder, state["step"])
        return int(state["step"])


def _rows_by_first_positive(examples: list[TrainingExample]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(example.positive_ids[0], []).append(index)
    return [groups[key] for key in sorted(groups)]


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    if output_dir.is_dir():
        for entry in output_dir.iterdir():
            match = _CHECKPOINT_NAME.match(entry.name)
            if match and entry.is_dir():
                found.append((int(match.group(1)), entry))
    return found


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        raise FileNotFoundError(f"no model.safetensors in {folder}; it is not a checkpoint written by save_pretrained")
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        weights.update(load_file(folder / shard))
    return weights


def _enable_gradient_checkpointing(model: Any) -> None:
    """Turn on activation checkpointing in the model, or else in each encoder that supports it."""
    options = {"use_reentrant": False}

    def enable(module: Any) -> None:
        # transformers 5.x renamed the method and its argument; 4.x only has the old names.
        if hasattr(module, "activation_checkpointing_enable"):
            module.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

    if getattr(model, "supports_gradient_checkpointing", False):
        enable(model)
        return
    enabled = 0
    for module in model.modules():
        if module is not model and getattr(module, "supports_gradient_checkpointing", False) and hasattr(module, "gradient_checkpointing_enable"):
            enable(module)
            enabled += 1
    if not enabled:
        raise ValueError("no module of this model supports gradient checkpointing")
