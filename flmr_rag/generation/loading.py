"""Loading reader models, their tokenizers or processors, devices, dtypes and query images."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from flmr_rag.types import ImageInput

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return ``device``, or CUDA when available and the CPU otherwise."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Return a torch dtype for ``dtype``; ``None`` or ``"auto"`` means float32 on the CPU and bfloat16 (or float16) on CUDA.

    Raises:
        ValueError: ``dtype`` is a string that names no supported dtype.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16 or float16") from None


def load_model_and_processor(name: str | os.PathLike[str], dtype: torch.dtype) -> tuple[Any, Any]:
    """Load a generator and its tokenizer or processor from a hub id or a local folder.

    The model class follows the configuration. Models listed for image-text-to-text in
    transformers (BLIP-2, LLaVA, ...) load with ``AutoModelForImageTextToText`` and
    ``AutoProcessor``. Other encoder-decoder models load with ``AutoModelForSeq2SeqLM`` and the
    rest with ``AutoModelForCausalLM``. Text models get ``AutoTokenizer``, so a folder with a
    BERT tokenizer beside a T5 model loads as saved.

    Raises:
        FileNotFoundError: ``name`` looks like a local path that does not exist.
        OSError: transformers cannot load ``name`` (no such hub id, no network, missing files).
    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSeq2SeqLM,
        AutoProcessor,
        AutoTokenizer,
    )
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    name = str(name)
    folder = Path(name).expanduser()
    # A hub id has the form "name" or "owner/name"; anything else is a local path.
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    if looks_local and not folder.exists():
        raise FileNotFoundError(f"generator folder {name} does not exist; pass a folder written by save_pretrained or a hub model id")
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"generator folder {name} has no config.json; pass a folder written by save_pretrained")

    try:
        config = AutoConfig.from_pretrained(name)
        if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
            processor = AutoProcessor.from_pretrained(name)
        elif getattr(config, "is_encoder_decoder", False):
            model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=dtype)
            processor = AutoTokenizer.from_pretrained(name)
        else:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
            processor = AutoTokenizer.from_pretrained(name)
    except OSError as error:
        if folder.is_dir():
            raise OSError(f"generator folder {name} could not be loaded ({' '.join(str(error).split())}); check its files") from error
        from flmr_rag.models.checkpoint import hub_failure_message

        raise OSError(hub_failure_message("generator", name, error)) from error

    logger.info("loaded generator %s (%s, %s)", name, type(model).__name__, dtype)
    return model, processor


def load_image(image: ImageInput) -> Image.Image:
    """Return ``image`` (a path, PIL image or encoded bytes) as an RGB PIL image.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file or bytes are not a readable image.
        TypeError: ``image`` has another type.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")

    if isinstance(image, bytes):
        try:
            return Image.open(io.BytesIO(image)).convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image bytes ({len(image)} bytes) are not a readable image: {error}; pass PNG or JPEG data") from None

    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist; pass the path of an image file")
        try:
            with Image.open(path) as opened:
                return opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image {path} is not a readable image: {error}; re-export it as PNG or JPEG") from None

    raise TypeError(f"image must be a path, a PIL image or bytes, got {type(image).__name__}")
