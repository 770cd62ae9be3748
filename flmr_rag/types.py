"""The records users pass in and get back: documents and search results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

# An image given by the user: a file path, a decoded PIL image, or encoded bytes (PNG, JPEG, ...).
ImageInput = Union[str, Path, Image.Image, bytes]


@dataclass
class Document:
    """A passage of the knowledge base, optionally with an image.

    ``id`` is a user string; ``None`` asks the retriever to generate one. A document needs text,
    an image, or both. ``metadata`` must be JSON-serialisable because the docstore keeps it as JSON.
    """

    id: str | None = None
    text: str = ""
    image: ImageInput | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """One retrieved document: its late-interaction ``score`` (higher is better) and 1-based ``rank``."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    image_path: str | None
    rank: int
