"""The easy-vqa data set as the demo uses it: questions, images and each image's kind.

easy-vqa (a PyPI package) ships 64x64 images that each show one shape (circle, rectangle or
triangle) in one of eight colours, with templated questions and one answer per question. The
demo's knowledge base has one passage per (colour, shape) kind, so every question's relevant
passage is the one of its image's kind. The kind comes from the image's questions and answers
and, where they leave it open, from the pixels.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

COLOURS: tuple[str, ...] = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")

# Shape colours of the easy-vqa 1.0 images (RGB), read from the most frequent non-background
# pixel colour of images whose questions fix the colour.
COLOUR_CENTRES: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
    "yellow": (255, 255, 0),
}

# Fill ratio of a shape inside its bounding box: triangle ~0.5, circle ~pi/4, rectangle 1.
_SHAPE_FILL_THRESHOLDS = ((0.68, "triangle"), (0.9, "circle"))

_NEGATION = re.compile(r"\b(not|no)\b")
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Question:
    """One easy-vqa question: its text, its single answer, and its image."""

    text: str
    answer: str
    image_id: int

    @property
    def question_type(self) -> str:
        """Return ``"colour"``, ``"shape"`` or ``"yes/no"`` from the answer word."""
        if self.answer in COLOURS:
            return "colour"
        if self.answer in SHAPES:
            return "shape"
        return "yes/no"


@dataclass
class EasyVQASplit:
    """One split of easy-vqa: questions, image paths by id and each image's (colour, shape) kind."""

    name: str
    questions: list[Question]
    image_paths: dict[int, Path]
    kinds: dict[int, tuple[str, str]] = field(default_factory=dict)
    pixel_labelled: int = 0

    def kind_of(self, question: Question) -> tuple[str, str]:
        """Return the (colour, shape) kind of the question's image."""
        return self.kinds[question.image_id]


def load_split(name: str, max_questions: int | None = None, seed: int = 0) -> EasyVQASplit:
    """Load the ``"train"`` or ``"test"`` split of easy-vqa and label every image's kind once.

    ``max_questions`` keeps a random sample (fixed by ``seed``) of that many questions, and the
    images they refer to. Raises ImportError with the install command when easy-vqa is absent.
    """
    if name not in ("train", "test"):
        raise ValueError(f"easy-vqa split must be 'train' or 'test', got {name!r}")
    try:
        import easy_vqa
    except ImportError as error:
        raise ImportError("the demo needs the easy-vqa package; install it with: pip install 'flmr-rag[demo]'") from error

    if name == "train":
        texts, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        texts, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    questions = [Question(text, answer, int(image_id)) for text, answer, image_id in zip(texts, answers, image_ids)]

    used_ids = set(image_ids) if max_questions is None or max_questions >= len(questions) else None
    if used_ids is None:
        order = np.random.default_rng(seed).permutation(len(questions))[:max_questions]
        sample = [questions[index] for index in sorted(order)]
        used_ids = {question.image_id for question in sample}
    else:
        sample = questions
    image_paths = {int(image_id): Path(paths[image_id]) for image_id in sorted(used_ids)}

    # Every question of an image carries evidence about its kind, sampled or not.
    evidence = [question for question in questions if question.image_id in used_ids]
    kinds, pixel_labelled = label_image_kinds(evidence, image_paths)
    split = EasyVQASplit(name, sample, image_paths, kinds, pixel_labelled)
    logger.info(
        "easy-vqa %s: %d questions on %d images (%d kinds completed from pixels)",
        name, len(split.questions), len(split.image_paths), split.pixel_labelled,
    )
    return split


def label_image_kinds(questions: list[Question], image_paths: dict[int, Path]) -> tuple[dict[int, tuple[str, str]], int]:
    """Label each image's (colour, shape) from its questions' answers, then from its pixels.

    A "what colour" or "what shape" answer fixes a value; a yes/no answer to "is there a red
    shape?" (or its negation) fixes or rules out one value. Whatever the questions leave open
    comes from :func:`kind_from_pixels`. Returns the labels and how many images needed pixels.
    """
    colour_evidence: dict[int, _Evidence] = defaultdict(lambda: _Evidence(COLOURS))
    shape_evidence: dict[int, _Evidence] = defaultdict(lambda: _Evidence(SHAPES))
    for question in questions:
        _add_question_evidence(question, colour_evidence[question.image_id], shape_evidence[question.image_id])

    kinds: dict[int, tuple[str, str]] = {}
    pixel_labelled = 0
    for image_id, path in image_paths.items():
        colour = colour_evidence[image_id].value()
        shape = shape_evidence[image_id].value()
        if colour is None or shape is None:
            pixel_colour, pixel_shape = kind_from_pixels(path)
            colour = colour or pixel_colour
            shape = shape or pixel_shape
            pixel_labelled += 1
        kinds[image_id] = (colour, shape)
    return kinds, pixel_labelled


class _Evidence:
    """Evidence from the answers about one attribute: a fixed value and the values ruled out."""

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values
        self.fixed: str | None = None
        self.excluded: set[str] = set()

    def value(self) -> str | None:
        if self.fixed is not None:
            return self.fixed
        remaining = [value for value in self.values if value not in self.excluded]
        return remaining[0] if len(remaining) == 1 else None


def _add_question_evidence(question: Question, colour: _Evidence, shape: _Evidence) -> None:
    words = _WORD.findall(question.text)
    answer = question.answer
    if answer in COLOURS:
        colour.fixed = answer
    elif answer in SHAPES:
        shape.fixed = answer
    if answer not in ("yes", "no"):
        return

    present = (answer == "yes") != bool(_NEGATION.search(question.text))
    for evidence, values in ((colour, COLOURS), (shape, SHAPES)):
        named = [word for word in words if word in values]
        if not named:
            continue
        if present:
            evidence.fixed = named[0]
        else:
            evidence.excluded.add(named[0])


def kind_from_pixels(path: Path) -> tuple[str, str]:
    """Guess an image's (colour, shape) from its pixels.

    The background is the most frequent colour. The colour is the colour centre nearest to the
    most frequent of the other pixels (edges are blended with the background), and the shape follows from how much of its bounding box the shape
    fills. Raises ValueError when the image contains a single colour.
    """
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int32)
    flat = pixels.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    foreground = np.abs(pixels - background).sum(axis=-1) > 60
    if not foreground.any():
        raise ValueError(f"image {path} shows no shape: every pixel has the background colour")

    shape_colours, shape_counts = np.unique(pixels[foreground], axis=0, return_counts=True)
    main_colour = shape_colours[np.argmax(shape_counts)].astype(np.float64)
    names = list(COLOUR_CENTRES)
    centres = np.array([COLOUR_CENTRES[name] for name in names], dtype=np.float64)
    colour = names[int(np.argmin(((centres - main_colour) ** 2).sum(axis=1)))]

    rows = np.flatnonzero(foreground.any(axis=1))
    columns = np.flatnonzero(foreground.any(axis=0))
    box_area = (rows[-1] - rows[0] + 1) * (columns[-1] - columns[0] + 1)
    fill = foreground.sum() / box_area
    shape = "rectangle"
    for threshold, name in _SHAPE_FILL_THRESHOLDS:
        if fill < threshold:
            shape = name
            break
    return colour, shape
