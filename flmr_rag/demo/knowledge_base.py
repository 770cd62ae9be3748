"""The demo's knowledge base: one passage per (colour, shape) kind of the easy-vqa images.

The passages were written for this project. Each states what its colour is and what its shape
is, and names both, so a reader that gets the right passage can answer colour, shape and
yes/no questions about the image.
"""

from __future__ import annotations

from flmr_rag.demo.data import COLOURS, SHAPES
from flmr_rag.types import Document

COLOUR_FACTS: dict[str, str] = {
    "red": "Red is the colour of ripe tomatoes.",
    "green": "Green is the colour of fresh grass.",
    "blue": "Blue is the colour of a clear sky.",
    "black": "Black is the darkest colour.",
    "gray": "Gray lies between black and white.",
    "teal": "Teal is a dark blue-green colour.",
    "brown": "Brown is the colour of wood and soil.",
    "yellow": "Yellow is the colour of lemons.",
}

SHAPE_FACTS: dict[str, str] = {
    "circle": "A circle is round and has no corners.",
    "rectangle": "A rectangle has four sides and four right angles.",
    "triangle": "A triangle has three sides and three corners.",
}


def passage_id(colour: str, shape: str) -> str:
    """Return the knowledge-base id of a (colour, shape) kind, for example ``"red-circle"``."""
    return f"{colour}-{shape}"


def passage_text(colour: str, shape: str) -> str:
    """Return the passage about one (colour, shape) kind; it names the colour and the shape."""
    return f"The {colour} {shape} is a {shape} whose colour is {colour}. {SHAPE_FACTS[shape]} {COLOUR_FACTS[colour]}"


def knowledge_base() -> list[Document]:
    """Return the 24 passages of the knowledge base, ids ``"<colour>-<shape>"``."""
    return [
        Document(id=passage_id(colour, shape), text=passage_text(colour, shape), metadata={"colour": colour, "shape": shape})
        for colour in COLOURS
        for shape in SHAPES
    ]
