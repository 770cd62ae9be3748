"""Conversions between LlamaIndex nodes and queries and flmr-rag documents and results.

LlamaIndex keeps image data in several places: ``ImageNode.image`` (base64 text),
``ImageNode.image_path`` and ``ImageNode.image_url``, and on the newer ``Node`` /
``Document`` / ``ImageDocument`` classes in ``image_resource`` (``data`` as base64 bytes,
``path``, ``url``). These helpers read each of them in that order (inline data first, then a
local path, then a URL) and never download anything.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import unquote, urlparse

from llama_index.core.schema import (
    BaseNode,
    ImageNode,
    MetadataMode,
    Node,
    NodeWithScore,
    QueryBundle,
    TextNode,
)

import flmr_rag
from flmr_rag.types import ImageInput


@dataclass
class FLMRQueryBundle(QueryBundle):
    """A ``QueryBundle`` that also carries an in-memory query image and an FLMR instruction.

    ``image`` is a PIL image, encoded image bytes or a file path; when set it takes precedence
    over ``image_path``. ``instruction`` replaces the retriever's default PreFLMR instruction
    (it should end with ":").
    """

    image: Optional[Any] = None
    instruction: Optional[str] = None


def _decode_base64_image(data: Union[str, bytes], where: str) -> bytes:
    if isinstance(data, bytes):
        data = data.decode("ascii", errors="strict")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{where} is not valid base64 image data: {error}") from error


def _existing_image_path(path: Union[str, os.PathLike], where: str) -> str:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{where} {str(path)!r} does not exist or is not a file; pass the path of an existing image file"
        )
    return str(resolved)


def _image_from_url(url: str, where: str) -> ImageInput:
    parsed = urlparse(url)
    if parsed.scheme == "data":
        return _decode_base64_image(url, where)
    if parsed.scheme == "file":
        return _existing_image_path(unquote(parsed.path), where)
    raise ValueError(
        f"{where} is the URL {url!r}, and flmr-rag does not download images; download the file and set "
        "image_path, or put the image bytes in the node as base64 (ImageNode.image)"
    )


def node_image(node: BaseNode) -> Optional[ImageInput]:
    """Return the image of ``node`` as bytes or a local path, or None when it has none.

    Raises:
        FileNotFoundError: the node names an image path that does not exist.
        ValueError: the node's base64 data is invalid, or its only image reference is a remote URL.
    """
    where = f"the image of node {node.node_id!r}"

    if isinstance(node, ImageNode):
        if node.image:
            return _decode_base64_image(node.image, where)
        if node.image_path:
            return _existing_image_path(node.image_path, f"{where}: image_path")
        if node.image_url:
            return _image_from_url(node.image_url, f"{where}: image_url")
        return None

    resource = node.image_resource if isinstance(node, Node) else None
    if resource is None:
        return None
    if resource.data:
        return _decode_base64_image(resource.data, where)
    if resource.path:
        return _existing_image_path(resource.path, f"{where}: image_resource.path")
    if resource.url:
        return _image_from_url(str(resource.url), f"{where}: image_resource.url")
    return None


def node_has_image(node: BaseNode) -> bool:
    """Return whether ``node`` carries an image reference (inline data, a path or a URL)."""
    if isinstance(node, ImageNode):
        return bool(node.image or node.image_path or node.image_url)
    if isinstance(node, Node) and node.image_resource is not None:
        resource = node.image_resource
        return bool(resource.data or resource.path or resource.url)
    return False


def node_to_document(node: BaseNode, metadata_mode: MetadataMode) -> flmr_rag.Document:
    """Convert a LlamaIndex node into an ``flmr_rag.Document`` with the same id.

    The passage text is ``node.get_content(metadata_mode)``, so the node's
    ``excluded_embed_metadata_keys`` decide which metadata FLMR encodes with the default
    ``MetadataMode.EMBED``.

    Raises:
        ValueError: the node has neither text nor an image, its image reference is unusable, or
            its metadata is not JSON-serialisable.
        FileNotFoundError: the node's image path does not exist.
    """
    image = node_image(node)
    raw_text = node.get_content(metadata_mode=MetadataMode.NONE)
    if not raw_text.strip() and image is None:
        raise ValueError(
            f"node {node.node_id!r} ({type(node).__name__}) has neither text nor an image; "
            "give it text, or an image as image_path or base64 data (ImageNode / ImageDocument)"
        )
    try:
        json.dumps(node.metadata)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"node {node.node_id!r} has metadata that JSON cannot store ({error}); use strings, numbers, lists and dicts"
        ) from error
    text = node.get_content(metadata_mode=metadata_mode) if raw_text.strip() else ""
    return flmr_rag.Document(id=node.node_id, text=text, image=image, metadata=dict(node.metadata))


def query_image(query_bundle: QueryBundle) -> Optional[ImageInput]:
    """Return the query image of ``query_bundle`` (``image`` field first, then ``image_path``).

    Raises:
        FileNotFoundError: ``image_path`` (or a string ``image``) names a missing file.
        ValueError: the image is a remote URL or invalid base64 data.
    """
    image = getattr(query_bundle, "image", None)
    if image is not None:
        if isinstance(image, (str, os.PathLike)):
            return _image_reference(str(image), "FLMRQueryBundle.image")
        return image
    if query_bundle.image_path:
        return _image_reference(query_bundle.image_path, "QueryBundle.image_path")
    return None


def _image_reference(reference: str, where: str) -> ImageInput:
    if "://" in reference or reference.startswith("data:"):
        return _image_from_url(reference, where)
    return _existing_image_path(reference, where)


def result_node(result: flmr_rag.SearchResult) -> TextNode:
    """Build a node from a search result whose id is missing from the LlamaIndex docstore."""
    if result.image_path:
        return ImageNode(id_=result.id, text=result.text, image_path=result.image_path, metadata=dict(result.metadata))
    return TextNode(id_=result.id, text=result.text, metadata=dict(result.metadata))


def with_score(node: BaseNode, score: float) -> NodeWithScore:
    """Pair ``node`` with a late-interaction ``score`` as a Python float."""
    return NodeWithScore(node=node, score=float(score))
