"""The demo's reader: a small T5 on the BERT vocabulary that answers from one passage.

Its input is the RA-VQA-v2 reader prompt ("Question: ... Knowledge: <passage> Answer:"),
tokenized with the same lower-cased BERT WordPiece vocabulary as the retriever's MiniLM text
encoder. Decoding starts from [PAD] and ends at [SEP], so the saved folder loads with
``transformers.AutoModelForSeq2SeqLM`` / ``AutoTokenizer`` and generates without extra settings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import BertTokenizerFast, GenerationConfig, T5Config, T5ForConditionalGeneration

from flmr_rag.generation.prompts import RAVQA_V2_TEMPLATE
from flmr_rag.progress import progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReaderRecipe:
    """Architecture and training budget of the demo reader .

    Attributes:
        d_model, num_heads, d_ff, num_layers: T5 sizes (encoder and decoder get ``num_layers`` each).
        steps: optimizer steps; batch_size: (prompt, answer) pairs per step.
        learning_rate, warmup_steps: AdamW peak rate, then linear decay to 0.
        max_input_length: prompt tokens kept, [CLS] and [SEP] included.
        seed: fixes initialisation and batch order.
    """

    d_model: int = 128
    num_heads: int = 4
    d_ff: int = 512
    num_layers: int = 2
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    max_input_length: int = 32
    seed: int = 0


def build_reader(tokenizer: BertTokenizerFast, recipe: ReaderRecipe) -> T5ForConditionalGeneration:
    """Build a randomly initialised T5 whose vocabulary and special ids are the tokenizer's."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=recipe.d_model,
        d_kv=recipe.d_model // recipe.num_heads,
        d_ff=recipe.d_ff,
        num_layers=recipe.num_layers,
        num_decoder_layers=recipe.num_layers,
        num_heads=recipe.num_heads,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=4,
    )
    return model


def reader_prompt(question: str, passage: str) -> str:
    """Return the prompt the reader is trained on: the RA-VQA-v2 template with one passage."""
    return RAVQA_V2_TEMPLATE.format(question, passage)


def encode_examples(
    tokenizer: BertTokenizerFast, prompts: list[str], answers: list[str], max_input_length: int
) -> dict[str, torch.Tensor]:
    """Tokenize prompts and answers into T5 training tensors.

    Returns ``input_ids`` and ``attention_mask`` ``[N, L]`` and ``labels`` ``[N, A]`` (answer
    tokens then [SEP]; padding is -100 so the loss ignores it), all int64.
    """
    inputs = tokenizer(prompts, padding="longest", truncation=True, max_length=max_input_length, return_tensors="pt")
    answer_ids = [tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id] for answer in answers]
    width = max(len(ids) for ids in answer_ids)
    labels = torch.full((len(answers), width), -100, dtype=torch.long)
    for row, ids in enumerate(answer_ids):
        labels[row, : len(ids)] = torch.tensor(ids)
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "labels": labels}


def train_reader(
    model: T5ForConditionalGeneration, examples: dict[str, torch.Tensor], recipe: ReaderRecipe
) -> list[float]:
    """Train the reader on ``examples`` (from :func:`encode_examples`) for ``recipe.steps`` steps.

    Batches are sampled with replacement from a generator seeded with ``recipe.seed``. Returns
    the loss of every step.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear_decay(recipe.warmup_steps, recipe.steps))
    generator = torch.Generator().manual_seed(recipe.seed)
    num_examples = examples["input_ids"].shape[0]
    model.train()

    losses: list[float] = []
    started = time.perf_counter()
    bar = progress(range(recipe.steps), desc="train reader", unit="step")
    for step in bar:
        rows = torch.randint(num_examples, (recipe.batch_size,), generator=generator)
        batch = {name: tensor[rows] for name, tensor in examples.items()}
        width = int(batch["attention_mask"].sum(dim=1).max())
        loss = model(
            input_ids=batch["input_ids"][:, :width],
            attention_mask=batch["attention_mask"][:, :width],
            labels=batch["labels"],
        ).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == recipe.steps - 1:
            rate = (step + 1) * recipe.batch_size / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", examples_per_s=f"{rate:.0f}")
    model.eval()
    return losses


def save_reader(model: T5ForConditionalGeneration, tokenizer: BertTokenizerFast, folder: Path, max_input_length: int) -> None:
    """Write the reader and its tokenizer into ``folder`` (loadable by ``AnswerGenerator.from_pretrained``).

    The tokenizer's ``model_max_length`` becomes ``max_input_length``, so loaders that truncate
    at the tokenizer's limit cut prompts where training did.
    """
    tokenizer.model_max_length = max_input_length
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _warmup_linear_decay(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = total_steps - step
        return max(remaining / max(total_steps - warmup_steps, 1), 0.0)

    return factor


def answer_accuracy(
    model: T5ForConditionalGeneration, tokenizer: BertTokenizerFast, prompts: list[str], answers: list[str], max_input_length: int
) -> float:
    """Return the share of prompts for which greedy decoding gives exactly the answer."""
    if not prompts:
        raise ValueError("answer_accuracy needs at least one prompt")
    correct = 0
    for start in range(0, len(prompts), 256):
        inputs = tokenizer(prompts[start : start + 256], padding="longest", truncation=True, max_length=max_input_length, return_tensors="pt")
        with torch.inference_mode():
            generated = model.generate(**inputs, max_new_tokens=4, num_beams=1, do_sample=False)
        decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
        correct += sum(text.strip() == answer for text, answer in zip(decoded, answers[start : start + 256]))
    return correct / len(prompts)


