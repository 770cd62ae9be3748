"""Training data for contrastive fine-tuning: JSONL query rows against a JSONL passage file.

Passage file, one JSON object per line::

    {"id": "p1", "text": "Paris is the capital of France.", "image": "optional/path.jpg"}

Training file, one JSON object per line::

    {"question": "What city is this?", "image": "images/1.jpg",
     "instruction": "Using the image, retrieve documents that answer the question:",
     "positive_ids": ["p1"], "negative_ids": ["p7", "p9"]}

``instruction`` and ``negative_ids`` are optional; ``image`` is optional for text-only queries.
Relative image paths are resolved against the folder of the file that names them. When a row
gives fewer negatives than training requests, random passages that are not positives fill the
rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")


class TrainingDataError(ValueError):
    """A row of a training or passage file is invalid; the message names the file, line and fix."""


@dataclass(frozen=True)
class Passage:
    """One retrievable passage: its id, text and optional image path."""

    id: str
    text: str
    image: str | None = None


@dataclass(frozen=True)
class TrainingExample:
    """One query with its relevant passages.

    Attributes:
        question: the question text (may be empty when an image is given).
        image: path of the query image, or None for a text-only query.
        instruction: text placed before the question; None uses the trainer's default.
        positive_ids: ids of passages that answer the query (at least one).
        negative_ids: ids of hard negatives (may be empty).
    """

    question: str
    image: str | None
    instruction: str | None
    positive_ids: tuple[str, ...]
    negative_ids: tuple[str, ...] = ()


@dataclass
class SkippedRow:
    """A row that was left out: where it is and why."""

    path: str
    line: int
    reason: str


@dataclass
class ExampleSet:
    """Training examples read from one file, plus the rows that were skipped."""

    examples: list[TrainingExample]
    skipped: list[SkippedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)


def read_passages(path: str | Path) -> dict[str, Passage]:
    """Read a JSONL passage file into a dict from id to :class:`Passage`, in file order.

    Raises FileNotFoundError for a missing file and :class:`TrainingDataError` for invalid
    JSON, a missing or duplicate ``id``, a row with neither text nor image, a missing image
    file, or a file with no passages.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"passage file {path} not found; pass a JSONL file with one {{'id', 'text'}} object per line")

    passages: dict[str, Passage] = {}
    for line_number, row in _json_rows(path):
        passage_id = row.get("id")
        if not isinstance(passage_id, (str, int)) or str(passage_id) == "":
            raise TrainingDataError(f"{path}:{line_number}: passage has no 'id'; give every passage a non-empty string id")
        passage_id = str(passage_id)
        if passage_id in passages:
            raise TrainingDataError(f"{path}:{line_number}: duplicate passage id {passage_id!r}; passage ids must be unique")

        text = row.get("text", "")
        if not isinstance(text, str):
            raise TrainingDataError(f"{path}:{line_number}: 'text' of passage {passage_id!r} is a {type(text).__name__}; use a string")
        image = _image_path(row.get("image"), path, line_number)
        if not text.strip() and image is None:
            raise TrainingDataError(f"{path}:{line_number}: passage {passage_id!r} has neither text nor image; add one")
        passages[passage_id] = Passage(passage_id, text, image)

    if not passages:
        raise TrainingDataError(f"passage file {path} contains no passages")
    return passages


def read_examples(path: str | Path, passages: dict[str, Passage], on_error: str = "raise") -> ExampleSet:
    """Read a JSONL training file whose rows point into ``passages``.

    With ``on_error="raise"`` the first invalid row raises :class:`TrainingDataError` (file,
    line, reason, fix). With ``"skip"`` invalid rows are counted in ``ExampleSet.skipped`` and
    logged once as a summary. A row is invalid when it is not a JSON object, has no question
    and no image, names a missing image file, has no ``positive_ids``, or names a passage id
    that the passage file lacks. Raises :class:`TrainingDataError` when no valid row remains.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training file {path} not found; pass a JSONL file with one query row per line")

    result = ExampleSet(examples=[])
    for line_number, row in _json_rows(path, tolerate_bad_json=on_error == "skip", skipped=result.skipped):
        try:
            result.examples.append(_parse_example(row, path, line_number, passages))
        except TrainingDataError as error:
            if on_error == "raise":
                raise
            result.skipped.append(SkippedRow(str(path), line_number, str(error)))

    if result.skipped:
        logger.warning(
            "skipped %d invalid rows of %s (first: %s)", len(result.skipped), path, result.skipped[0].reason
        )
    if not result.examples:
        raise TrainingDataError(f"training file {path} contains no valid rows ({len(result.skipped)} skipped)")
    return result


def _parse_example(row: dict, path: Path, line_number: int, passages: dict[str, Passage]) -> TrainingExample:
    where = f"{path}:{line_number}"
    question = row.get("question", "")
    if not isinstance(question, str):
        raise TrainingDataError(f"{where}: 'question' is a {type(question).__name__}; use a string")
    image = _image_path(row.get("image"), path, line_number)
    if not question.strip() and image is None:
        raise TrainingDataError(f"{where}: row has neither 'question' nor 'image'; give at least one")

    instruction = row.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise TrainingDataError(f"{where}: 'instruction' is a {type(instruction).__name__}; use a string")

    positive_ids = _id_list(row.get("positive_ids"), "positive_ids", where)
    if not positive_ids:
        raise TrainingDataError(f"{where}: 'positive_ids' is missing or empty; list the ids of the passages that answer the query")
    negative_ids = _id_list(row.get("negative_ids"), "negative_ids", where)
    for passage_id in positive_ids + negative_ids:
        if passage_id not in passages:
            raise TrainingDataError(f"{where}: passage id {passage_id!r} is not in the passage file; fix the id or add the passage")
    overlap = set(positive_ids) & set(negative_ids)
    if overlap:
        raise TrainingDataError(f"{where}: ids {sorted(overlap)} are both positive and negative; keep each id in one list")
    return TrainingExample(question, image, instruction, tuple(positive_ids), tuple(negative_ids))


def _id_list(value: object, name: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [str(value)]
    if not isinstance(value, list) or not all(isinstance(item, (str, int)) for item in value):
        raise TrainingDataError(f"{where}: '{name}' must be a list of passage ids, got {value!r}")
    return [str(item) for item in value]


def _image_path(value: object, path: Path, line_number: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TrainingDataError(f"{path}:{line_number}: 'image' is a {type(value).__name__}; use a file path string")
    image = Path(value)
    if not image.is_absolute():
        image = path.parent / image
    if not image.is_file():
        raise TrainingDataError(f"{path}:{line_number}: image file {image} not found; fix the path (relative paths start at {path.parent})")
    return str(image)


def _json_rows(path: Path, tolerate_bad_json: bool = False, skipped: list[SkippedRow] | None = None):
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TrainingDataError(f"{path}:{line_number}: row is a JSON {type(row).__name__}, expected an object")
            except (json.JSONDecodeError, TrainingDataError) as error:
                message = str(error) if isinstance(error, TrainingDataError) else f"{path}:{line_number}: invalid JSON ({error.msg})"
                if not tolerate_bad_json:
                    raise TrainingDataError(message) from None
                assert skipped is not None
                skipped.append(SkippedRow(str(path), line_number, message))
                continue
            yield line_number, row


def choose_contexts(
    example: TrainingExample, passage_ids: Sequence[str], num_negatives: int, generator: torch.Generator
) -> list[str]:
    """Pick one positive and ``num_negatives`` negatives for ``example``.

    The positive is drawn uniformly from ``example.positive_ids``. Negatives come first from
    ``example.negative_ids`` (a random subset when there are more), then from random passages
    that are neither positives nor already chosen. Returns ``[positive, negative_1, ...]``.
    Raises ValueError when the passage set has too few non-positive passages.
    """
    positive = example.positive_ids[int(torch.randint(len(example.positive_ids), (1,), generator=generator))]
    if num_negatives == 0:
        return [positive]

    chosen: list[str] = []
    hard = list(example.negative_ids)
    if hard:
        order = torch.randperm(len(hard), generator=generator).tolist()
        chosen = [hard[index] for index in order[:num_negatives]]

    excluded = set(example.positive_ids) | set(chosen)
    available = len(passage_ids) - len(excluded & set(passage_ids))
    missing = num_negatives - len(chosen)
    if missing > available:
        raise ValueError(
            f"{num_negatives} negatives requested but only {available + len(chosen)} passages are not positives "
            f"of the query {example.question!r}; lower num_negatives or add passages"
        )
    while missing > 0:
        candidate = passage_ids[int(torch.randint(len(passage_ids), (1,), generator=generator))]
        if candidate not in excluded:
            chosen.append(candidate)
            excluded.add(candidate)
            missing -= 1
    return [positive, *chosen]
