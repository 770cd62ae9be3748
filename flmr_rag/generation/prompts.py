"""Reader prompts: the question, optional text describing the image, and one retrieved passage.

The default template is the RA-VQA-v2 reader prompt (FLMR + BLIP-2 reader), with its marker
tokens written as words and the doubled spaces tidied::

    Question: {question} Caption: {caption} Objects: {objects} {ocr}. Knowledge: {passage} Answer:

A section whose value is missing is left out; leaving out the passage gives the no-knowledge
baseline prompt.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

_TEMPLATE_FIELDS = frozenset({"question", "caption", "vision", "knowledge"})


@dataclass(frozen=True)
class PromptTemplate:
    """A reader prompt made of a main template and one template per optional section.

    ``template`` may use ``{question}``, ``{caption}``, ``{vision}`` and ``{knowledge}``. Each of
    the last three is replaced by its section template filled in, or by "" when the value is
    missing. ``{question}`` is required.

    Attributes:
        template: the whole prompt.
        caption_section: uses ``{caption}``.
        vision_section: uses ``{vision}``, the object labels joined by ``object_separator`` and
            followed by the OCR strings joined by spaces.
        knowledge_section: uses ``{passage}``.
        object_separator: placed between object labels.
    """

    template: str = "Question: {question}{caption}{vision}{knowledge} Answer:"
    caption_section: str = " Caption: {caption}"
    vision_section: str = " Objects: {vision}."
    knowledge_section: str = " Knowledge: {passage}"
    object_separator: str = ", "

    def __post_init__(self) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
        unknown = fields - _TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"prompt template {self.template!r} uses unknown fields {sorted(unknown)}; "
                f"use only {{question}}, {{caption}}, {{vision}} and {{knowledge}}"
            )
        if "question" not in fields:
            raise ValueError(f"prompt template {self.template!r} has no {{question}} field; add one")

    def format(
        self,
        question: str,
        passage: str | None = None,
        caption: str | None = None,
        objects: Sequence[str] | None = None,
        ocr: str | Sequence[str] | None = None,
    ) -> str:
        """Build the prompt for one (question, passage) pair.

        ``objects`` are labels such as "red car"; ``ocr`` is text read from the image, one string
        or several. Newlines inside OCR strings become spaces and exact duplicates are dropped.
        Empty or missing values leave their section out.
        """
        caption_text = self.caption_section.format(caption=caption.strip()) if caption and caption.strip() else ""

        vision = _vision_text(objects, ocr, self.object_separator)
        vision_text = self.vision_section.format(vision=vision) if vision else ""

        knowledge_text = ""
        if passage is not None and passage.strip():
            knowledge_text = self.knowledge_section.format(passage=passage.strip())

        return self.template.format(
            question=question.strip(), caption=caption_text, vision=vision_text, knowledge=knowledge_text
        )


def _vision_text(objects: Sequence[str] | None, ocr: str | Sequence[str] | None, separator: str) -> str:
    labels = [label.strip() for label in (objects or []) if label and label.strip()]

    if isinstance(ocr, str):
        ocr = [ocr]
    ocr_strings: list[str] = []
    for text in ocr or []:
        flat = " ".join(text.split())
        if flat and flat not in ocr_strings:
            ocr_strings.append(flat)

    parts = []
    if labels:
        parts.append(separator.join(labels))
    if ocr_strings:
        parts.append(" ".join(ocr_strings))
    return " ".join(parts)


RAVQA_V2_TEMPLATE = PromptTemplate()
