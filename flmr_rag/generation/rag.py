"""Retrieval-augmented answering: search the index, then let a generator answer from the passages."""

from __future__ import annotations

import os
from typing import Any

from flmr_rag.generation.answer import Answer
from flmr_rag.generation.generator import AnswerGenerator
from flmr_rag.types import ImageInput


def answer_question(
    retriever: Any,
    question: str | None = None,
    image: ImageInput | None = None,
    k: int = 5,
    generator: AnswerGenerator | str | os.PathLike[str] | None = None,
    instruction: str | None = None,
    exact: bool = False,
    **generate_kwargs: Any,
) -> Answer:
    """Retrieve the top ``k`` passages for (image, question) and answer from them, RA-VQA style.

    ``retriever`` is anything with ``search(question=, image=, k=, instruction=, exact=)``
    returning ``SearchResult`` objects (``FLMRRetriever`` does). ``generator`` is an
    ``AnswerGenerator`` or a hub id / folder to load one from (on the default device).
    The image goes to the generator only when the generator takes images; the retriever always
    gets it. ``generate_kwargs`` (caption, objects, ocr, selection) go to
    ``AnswerGenerator.generate``. The candidates carry the passage ids.

    Raises:
        ValueError: no generator, an empty question, or a search that returned no passages.
    """
    if generator is None:
        raise ValueError("generator is missing; pass an AnswerGenerator or a model id such as google/flan-t5-base")
    if question is None or not question.strip():
        raise ValueError(f"question is empty ({question!r}); the generator needs the question text")
    if isinstance(generator, (str, os.PathLike)):
        generator = AnswerGenerator.from_pretrained(generator)

    results = retriever.search(question=question, image=image, k=k, instruction=instruction, exact=exact)
    if not results:
        raise ValueError(f"the search for {question!r} returned no passages; add documents to the index first")

    return generator.generate(
        question,
        [result.text for result in results],
        image=image if generator.accepts_images else None,
        retrieval_scores=[result.score for result in results],
        passage_ids=[result.id for result in results],
        **generate_kwargs,
    )
