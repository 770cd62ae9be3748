"""Evaluation runs: retrieve for every dataset row, then report Recall@K, PRRecall@K, EM and VQA score.

A dataset is a JSONL file with one query per line::

    {"question": "What is the man riding?", "image": "images/42.jpg",
     "answers": ["surfboard", "surf board", ...], "pos_item_ids": ["wiki_123"],
     "instruction": "Using the provided image, obtain documents that address the subsequent question:"}

``image`` (also read as ``image_path``) is resolved against the dataset file's folder when it is
relative. ``answers`` (a list or one string) feed PRRecall@K, EM and the VQA score;
``pos_item_ids`` (also read as ``positive_ids``) feed Recall@K. Every field is optional except
that a row needs a question or an image.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flmr_rag.evaluation.retrieval import pseudo_recall_at_k, recall_at_k
from flmr_rag.evaluation.vqa import exact_match, vqa_score
from flmr_rag.progress import progress

logger = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)


@dataclass
class EvaluationExample:
    """One dataset row: a query, its reference answers and the ids of its relevant passages."""

    question: str | None
    image: str | None = None
    answers: list[str] = field(default_factory=list)
    positive_ids: list[str] = field(default_factory=list)
    instruction: str | None = None


def _string_list(value: Any, name: str, location: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [str(value)]
    if isinstance(value, list) and all(isinstance(item, (str, int)) for item in value):
        return [str(item) for item in value]
    raise ValueError(f"{location}: {name} must be a string or a list of strings, got {value!r}")


def parse_example(row: Any, location: str, base_dir: Path) -> EvaluationExample:
    """Convert one decoded JSON row into an ``EvaluationExample``; ``location`` names it in errors.

    Raises:
        ValueError: the row is not an object, has no question and no image, or a field has the
            wrong type.
    """
    if not isinstance(row, dict):
        raise ValueError(f"{location}: expected a JSON object, got {type(row).__name__}")

    question = row.get("question")
    if question is not None and not isinstance(question, str):
        raise ValueError(f"{location}: question must be a string, got {question!r}")
    image = row.get("image", row.get("image_path"))
    if image is not None and not isinstance(image, str):
        raise ValueError(f"{location}: image must be a file path string, got {image!r}")
    if not (question and question.strip()) and not image:
        raise ValueError(f"{location}: the row has neither a question nor an image; give at least one")
    if image and not Path(image).expanduser().is_absolute():
        image = str(base_dir / image)

    instruction = row.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise ValueError(f"{location}: instruction must be a string, got {instruction!r}")

    return EvaluationExample(
        question=question,
        image=image,
        answers=_string_list(row.get("answers"), "answers", location),
        positive_ids=_string_list(row.get("pos_item_ids", row.get("positive_ids")), "pos_item_ids", location),
        instruction=instruction,
    )


def read_dataset(path: str | os.PathLike[str], limit: int | None = None) -> list[EvaluationExample]:
    """Read up to ``limit`` rows of a JSONL evaluation dataset; blank lines are skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line is not valid JSON or not a valid row (the message names the line), or
            the file has no rows.
    """
    dataset = Path(path)
    if not dataset.is_file():
        raise FileNotFoundError(f"dataset {dataset} does not exist; pass a JSONL file with one query per line")

    examples: list[EvaluationExample] = []
    with dataset.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            location = f"{dataset}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{location}: invalid JSON ({error.msg}); write one JSON object per line") from None
            examples.append(parse_example(row, location, dataset.parent))

    if not examples:
        raise ValueError(f"dataset {dataset} has no rows; write one JSON object per line")
    return examples


def effective_ks(ks: Sequence[int], collection_size: int) -> tuple[list[int], list[str]]:
    """Return the Ks to report for a collection of ``collection_size`` documents, and notes.

    Ks above the collection size are dropped and replaced by the collection size itself, because
    every K at or above it gives the same value.

    Raises:
        ValueError: a K is not a positive integer, or the collection is empty.
    """
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every K must be a positive integer, got {k!r}")
    if collection_size < 1:
        raise ValueError("the index contains no documents; add documents before evaluating")

    requested = sorted(set(ks))
    reported = [k for k in requested if k <= collection_size]
    dropped = [k for k in requested if k > collection_size]
    notes = []
    if dropped:
        if collection_size not in reported:
            reported.append(collection_size)
        notes.append(
            f"K={', '.join(map(str, dropped))} exceed the {collection_size} documents in the index; "
            f"reported at K={collection_size} instead"
        )
    return reported, notes


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate(
    retriever: Any,
    examples: Sequence[EvaluationExample],
    ks: Sequence[int] = DEFAULT_KS,
    generator: Any = None,
    generation_k: int = 5,
    batch_size: int = 16,
    exact: bool = False,
) -> dict[str, Any]:
    """Run retrieval (and generation when ``generator`` is given) over ``examples``.

    Args:
        retriever: has ``search_batch(queries, k, exact=)`` returning ranked ``SearchResult``
            lists and ``len()`` giving the collection size (``FLMRRetriever`` does).
        examples: the dataset rows.
        ks: the cut-offs for Recall@K and PRRecall@K; capped at the collection size.
        generator: an ``AnswerGenerator``; answers come from the top ``generation_k`` passages.
        batch_size: queries encoded per ``search_batch`` call.
        exact: exact late-interaction scoring instead of the approximate index search.

    Returns:
        a dict with ``num_examples``, ``collection_size``, ``ks``, ``metrics`` (name -> fraction
        in [0, 1] or None when no row carries the needed field), ``counts`` (rows behind each
        metric), ``notes`` and, with a generator, ``predictions`` (one dict per row).

    Raises:
        ValueError: no examples, a bad K or batch size, an empty index, or a row without a
            question while a generator is given.
    """
    if not examples:
        raise ValueError("there are no examples to evaluate; check the dataset file")
    if batch_size < 1 or generation_k < 1:
        raise ValueError(f"batch_size and generation_k must be at least 1, got {batch_size} and {generation_k}")
    if generator is not None:
        for index, example in enumerate(examples):
            if not (example.question and example.question.strip()):
                raise ValueError(f"example {index} has no question, but the generator needs one; drop --generator or add questions")

    collection_size = len(retriever)
    report_ks, notes = effective_ks(ks, collection_size)
    search_k = max(max(report_ks), generation_k if generator is not None else 1)
    search_k = min(search_k, collection_size)

    rankings = _retrieve(retriever, examples, search_k, batch_size, exact)

    metrics: dict[str, float | None] = {}
    with_ids = [index for index, example in enumerate(examples) if example.positive_ids]
    with_answers = [index for index, example in enumerate(examples) if example.answers]
    for k in report_ks:
        metrics[f"Recall@{k}"] = _mean(
            [recall_at_k([result.id for result in rankings[i]], examples[i].positive_ids, k) for i in with_ids]
        )
    for k in report_ks:
        metrics[f"PRRecall@{k}"] = _mean(
            [pseudo_recall_at_k([result.text for result in rankings[i]], examples[i].answers, k) for i in with_answers]
        )
    if not with_ids:
        notes.append("no row has pos_item_ids, so Recall@K is not reported")
    if not with_answers:
        notes.append("no row has answers, so PRRecall@K, EM and the VQA score are not reported")

    result: dict[str, Any] = {
        "num_examples": len(examples),
        "collection_size": collection_size,
        "ks": report_ks,
        "metrics": metrics,
        "counts": {"with_positive_ids": len(with_ids), "with_answers": len(with_answers)},
        "notes": notes,
    }
    if generator is not None:
        predictions = _generate(generator, examples, rankings, generation_k)
        scored = [prediction for prediction in predictions if prediction["answers"]]
        metrics["EM"] = _mean([prediction["em"] for prediction in scored])
        metrics["VQA"] = _mean([prediction["vqa_score"] for prediction in scored])
        result["generation_k"] = min(generation_k, collection_size)
        result["predictions"] = predictions

    logger.info("evaluated %d queries against %d documents: %s", len(examples), collection_size, metrics)
    return result


def _retrieve(retriever: Any, examples: Sequence[EvaluationExample], k: int, batch_size: int, exact: bool) -> list[list[Any]]:
    rankings: list[list[Any]] = []
    bar = progress(total=len(examples), desc="retrieving", unit="query")
    with bar:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            queries = [
                {"question": example.question, "image": example.image, "instruction": example.instruction} for example in chunk
            ]
            rankings.extend(retriever.search_batch(queries, k=k, exact=exact))
            bar.update(len(chunk))
    return rankings


def _generate(generator: Any, examples: Sequence[EvaluationExample], rankings: list[list[Any]], generation_k: int) -> list[dict[str, Any]]:
    predictions = []
    for example, ranking in progress(list(zip(examples, rankings, strict=True)), desc="answering", unit="query"):
        top = ranking[:generation_k]
        if not top:
            raise ValueError(f"the search for {example.question!r} returned no passages; check the index")
        answer = generator.generate(
            example.question,
            [result.text for result in top],
            image=example.image if generator.accepts_images else None,
            retrieval_scores=[result.score for result in top],
            passage_ids=[result.id for result in top],
        )
        record: dict[str, Any] = {
            "question": example.question,
            "prediction": answer.answer,
            "passage_id": answer.passage_id,
            "answers": example.answers,
        }
        if example.answers:
            record["em"] = exact_match(answer.answer, example.answers)
            record["vqa_score"] = vqa_score(answer.answer, example.answers)
        predictions.append(record)
    return predictions


def format_table(result: dict[str, Any]) -> str:
    """Render an ``evaluate`` result as a plain-text table (metrics in percent) followed by its notes."""
    metrics = result["metrics"]
    lines = [f"{result['num_examples']} queries, {result['collection_size']} documents in the index"]

    header = ["metric (%)", *[f"@{k}" for k in result["ks"]]]
    rows = []
    for name in ("Recall", "PRRecall"):
        values = [metrics.get(f"{name}@{k}") for k in result["ks"]]
        rows.append([name, *["-" if value is None else f"{100 * value:.2f}" for value in values]])
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) if column == 0 else cell.rjust(width) for column, (cell, width) in enumerate(zip(row, widths))))

    if "EM" in metrics:
        generation = f"answers from the top {result.get('generation_k')} passages"
        for name in ("EM", "VQA"):
            value = metrics[name]
            text = "-" if value is None else f"{100 * value:.2f}"
            label = "VQA score (%)" if name == "VQA" else "EM (%)"
            lines.append(f"{label:<14}{text:>7}  ({generation})")

    lines.extend(f"note: {note}" for note in result["notes"])
    return "\n".join(lines)
