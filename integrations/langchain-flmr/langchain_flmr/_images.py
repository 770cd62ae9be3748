"""Query images as users pass them to LangChain: file paths, PIL images, bytes or base64 text."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, Union

from PIL import Image, UnidentifiedImageError

# An image in a form flmr_rag accepts: a path, a PIL image or encoded bytes.
LoadedImage = Union[str, Image.Image, bytes]

_BASE64_TEXT = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")


def _preview(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:40] + "...") + f" ({len(text)} characters)"


def _check_image_bytes(data: bytes, what: str) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{what} ({len(data)} bytes) is not a readable image: {error}") from error
    return data


def _decode_base64(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{what} is not valid base64: {error}") from error
    return _check_image_bytes(data, what)


def load_image(image: Any) -> LoadedImage:
    """Normalise a query image to a path string, a PIL image or encoded bytes.

    A string is read as a file path when such a file exists, then as a ``data:`` URL, then
    as base64-encoded image bytes. The caller's object is never modified.

    Raises:
        FileNotFoundError: a string or path that looks like a path names no file.
        ValueError: bytes or base64 text that do not decode to an image.
        TypeError: any other type.
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _check_image_bytes(bytes(image), "image bytes")
    if isinstance(image, os.PathLike):
        return _existing_file(os.fspath(image))
    if isinstance(image, str):
        return _image_from_text(image)
    raise TypeError(
        f"image must be a file path, a PIL image, bytes or a base64 string, got {type(image).__name__}"
    )


def _existing_file(path: str) -> str:
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"image file {path!r} does not exist; pass an existing image path, a PIL image, bytes or base64 text")
    return str(Path(path).expanduser())


def _image_from_text(text: str) -> LoadedImage:
    stripped = text.strip()
    if not stripped:
        raise ValueError("image is an empty string; pass a file path, a PIL image, bytes or base64 text, or no image")
    if stripped.startswith("data:"):
        header, _, payload = stripped.partition(",")
        if ";base64" not in header:
            raise ValueError(f"image data URL {_preview(stripped)} is not base64-encoded; use data:<mime>;base64,<data>")
        return _decode_base64(payload, "image data URL")
    if Path(stripped).expanduser().is_file():
        return str(Path(stripped).expanduser())
    if len(stripped) >= 32 and _BASE64_TEXT.match(stripped):
        return _decode_base64(stripped, "image base64 text")
    # Text outside the base64 alphabet (dots, dashes) or too short for an image is a path.
    if len(stripped) <= 4096:
        return _existing_file(stripped)
    raise FileNotFoundError(
        f"image {_preview(stripped)} is neither an existing file nor base64-encoded image data; "
        "pass an existing image path, a PIL image, bytes or base64 text"
    )


def image_reference(image: Any) -> str:
    """Return a short description of a query image for traces: its path, or a SHA-256 prefix of its data.

    The image is not validated here, so invalid input still fails later, inside the run.
    """
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, str):
        text = image.strip()
        is_data = text.startswith("data:") or (len(text) >= 32 and _BASE64_TEXT.match(text) is not None)
        if not is_data and len(text) <= 4096:
            return text
        data = text.encode("utf-8")
    elif isinstance(image, Image.Image):
        data = image.tobytes()
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        return type(image).__name__
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def image_to_base64(image: LoadedImage) -> tuple[str, str]:
    """Return ``(base64 text, MIME type)`` for sending the image to a chat model.

    Files and bytes keep their encoding; PIL images are encoded as PNG.
    """
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    elif isinstance(image, str):
        data = Path(image).read_bytes()
    else:
        data = image
    with Image.open(io.BytesIO(data)) as decoded:
        mime_type = Image.MIME.get(decoded.format or "", "image/png")
    return base64.b64encode(data).decode("ascii"), mime_type
