"""Validation of the documents, queries and instructions given to :class:`flmr_rag.retriever.FLMRRetriever`.

Each document becomes a :class:`flmr_rag.docstore.StoredDocument` row, with a random hex id when
it has none. An image path is checked and stored as an absolute path. An image given as bytes or
a PIL image is encoded as PNG and named by its SHA-256 under the index's ``images/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from flmr_rag.data.rows import check_image
from flmr_rag.docstore import StoredDocument, encode_png
from flmr_rag.encoding import DEFAULT_INSTRUCTIONS, Query
from flmr_rag.types import Document, ImageInput


def normalize_instructions(instruction: str | Mapping[str, str] | None) -> dict[str, str] | None:
    """Return the per-kind instructions for ``instruction`` (one str for every kind, a dict, or None).

    Raises:
        ValueError: the dict has a key that is not a query kind of ``DEFAULT_INSTRUCTIONS``.
    """
    if instruction is None:
        return None
    if isinstance(instruction, str):
        return dict.fromkeys(DEFAULT_INSTRUCTIONS, instruction)
    unknown = set(instruction) - set(DEFAULT_INSTRUCTIONS)
    if unknown:
        raise ValueError(f"unknown query kinds {sorted(unknown)} in instruction; use {sorted(DEFAULT_INSTRUCTIONS)}")
    return dict(instruction)


def prepare_document(document: Document, position: int, images_dir: Path) -> tuple[StoredDocument, bytes | None]:
    """Validate ``document`` and return its docstore row and, for bytes or PIL images, its PNG bytes.

    ``position`` is the document's place in the input, used in error messages. The caller writes
    the PNG to the row's image path, ``images_dir/<sha256>.png``.

    Raises:
        TypeError: the document, its text or its image has an unsupported type.
        ValueError: an empty id, neither text nor image, an unreadable image, or metadata that
            JSON cannot store.
    """
    if isinstance(document, Mapping):
        document = Document(**document)
    if not isinstance(document, Document):
        raise TypeError(f"document {position} is a {type(document).__name__}; pass flmr_rag.Document objects")
    doc_id = uuid.uuid4().hex if document.id is None else document.id
    if isinstance(doc_id, int):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"document {position} has id {document.id!r}; ids must be non-empty strings")
    text = document.text or ""
    if not isinstance(text, str):
        raise TypeError(f"document {doc_id!r} has text of type {type(text).__name__}; pass a str")
    if not text.strip() and document.image is None:
        raise ValueError(f"document {doc_id!r} has neither text nor an image; give it at least one")
    try:
        json.dumps(document.metadata)
    except (TypeError, ValueError) as error:
        raise ValueError(f"document {doc_id!r} has metadata that JSON cannot store ({error}); use str, numbers, lists and dicts") from error

    image_path, png = _stored_image(document.image, doc_id, images_dir)
    return StoredDocument(doc_id, text, dict(document.metadata), image_path), png


def _stored_image(image: ImageInput | None, doc_id: str, images_dir: Path) -> tuple[str | None, bytes | None]:
    if image is None:
        return None, None
    if isinstance(image, (str, Path)):
        path = Path(image).expanduser().resolve()
        try:
            check_image(path)
        except ValueError as error:
            raise ValueError(f"document {doc_id!r}: {error}") from error
        return str(path), None
    if isinstance(image, (bytes, bytearray, Image.Image)):
        try:
            png = encode_png(image)
        except ValueError as error:
            raise ValueError(f"document {doc_id!r}: {error}") from error
        return str(images_dir / f"{hashlib.sha256(png).hexdigest()}.png"), png
    raise TypeError(f"document {doc_id!r} has an image of type {type(image).__name__}; pass a path, PIL image or bytes")


def parse_query(query: Mapping[str, Any] | Query, position: int) -> Query:
    """Convert a dict with the keys ``question``, ``image`` and ``instruction`` (all optional) to a
    :class:`flmr_rag.encoding.Query`, and return a Query unchanged.

    Raises:
        TypeError: ``query`` is neither a dict nor a Query.
        ValueError: the dict has other keys.
    """
    if isinstance(query, Query):
        return query
    if not isinstance(query, Mapping):
        raise TypeError(f"query {position} is a {type(query).__name__}; pass a dict with question, image and instruction keys")
    unknown = set(query) - {"question", "image", "instruction"}
    if unknown:
        raise ValueError(f"query {position} has unknown keys {sorted(unknown)}; use question, image and instruction")
    return Query(**query)
