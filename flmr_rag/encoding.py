"""Encoding queries and documents with an FLMR model: batching, device and dtype, images, instructions.

Documents are tokenized with padding to the longest text of each batch (the kept-token embeddings
equal those of padding to ``doc_maxlen``, for much less compute), sorted by length so that a
batch contains texts of similar length, encoded under ``torch.inference_mode()``, and packed: only
the tokens that the model's context mask keeps (no padding, no punctuation) are returned, as one
``[num_tokens, dim]`` matrix plus per-document lengths. Memory is bounded by the list handed to
:meth:`FLMREncoder.encode_documents`; the retriever feeds it fixed-size chunks of a stream.

Queries get an instruction that ends with the separator ":" (PreFLMR masks every token up to the
first ":" and keeps the question). :data:`DEFAULT_INSTRUCTIONS` holds one per query kind.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from flmr_rag.types import ImageInput

logger = logging.getLogger(__name__)

# The first instruction of PreFLMR's image+question (IQ2T) training list.
IMAGE_QUESTION_INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question:"
# The first instruction of PreFLMR's image-only (I2T) training list; the query text is only this.
IMAGE_INSTRUCTION = "Identify the document that is connected to this image.:"
# NOTE: the instructions of PreFLMR's text-only training sets were never published; this one is
# our wording in the style of the IQ2T list.
TEXT_INSTRUCTION = "Retrieve documents that provide an answer to the following question:"

DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "image_question": IMAGE_QUESTION_INSTRUCTION,
    "image": IMAGE_INSTRUCTION,
    "text": TEXT_INSTRUCTION,
}

_warned_missing_separator = False
# Instructions that got the separator appended, each logged once per process.
_appended_separator_warned: set[str] = set()


class _SeparatorWarningFilter(logging.Filter):
    """Drops the model's per-call "no instruction separator" warning; the encoder logs it once per process."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "instruction separator" not in str(record.msg)


_SEPARATOR_FILTER = _SeparatorWarningFilter()


class ImageLoadError(ValueError):
    """An image that is missing or cannot be decoded; the message names the file."""


@dataclass
class Query:
    """One retrieval query: a question, an image, or both, with an optional instruction override."""

    question: str | None = None
    image: ImageInput | None = None
    instruction: str | None = None

    @property
    def kind(self) -> str:
        """``"image_question"``, ``"image"`` or ``"text"``."""
        if self.image is None:
            return "text"
        return "image_question" if self.question and self.question.strip() else "image"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device``, or CUDA when it is available and CPU otherwise."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Return ``dtype``, or the default for ``device``: bfloat16 on CUDA GPUs that support it,
    else float16 on CUDA, and float32 on CPU.

    Raises:
        ValueError: ``dtype`` is not float32, float16 or bfloat16.
    """
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported; use float32, float16 or bfloat16")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use float32, float16 or bfloat16")
    return _DTYPES[name]


def load_image(image: ImageInput) -> Image.Image:
    """Return ``image`` (a path, PIL image or encoded bytes) as an RGB PIL image with its EXIF
    orientation applied.

    Raises:
        ImageLoadError: the file does not exist or is not an image PIL can decode.
    """
    if isinstance(image, Image.Image):
        return ImageOps.exif_transpose(image).convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        source: Any = io.BytesIO(image)
        name = f"image bytes ({len(image)} bytes)"
    elif isinstance(image, (str, Path)):
        source = Path(image)
        name = f"image file {image}"
        if not source.is_file():
            raise ImageLoadError(f"{name} does not exist; check the path")
    else:
        raise TypeError(f"an image must be a path, a PIL image or bytes, not {type(image).__name__}")
    try:
        with Image.open(source) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"{name} is not a readable image: {error}") from error


class FLMREncoder:
    """Runs an ``FLMRModelForRetrieval`` over queries and documents.

    Args:
        model: the model, already on its device and dtype, in eval mode.
        image_processor: the checkpoint's image processor (``flmr_rag.models.load_image_processor``).
        batch_size: documents or queries per forward pass; larger is faster on a GPU and uses
            more memory.
        instructions: overrides of :data:`DEFAULT_INSTRUCTIONS` per query kind.
    """

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        batch_size: int = 32,
        instructions: dict[str, str] | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.image_processor = image_processor
        self.batch_size = int(batch_size)
        self.instructions = {**DEFAULT_INSTRUCTIONS, **(instructions or {})}
        self.separator = getattr(model.config, "mask_instruction_token", None)
        self.has_vision = bool(getattr(model.config, "use_vision_encoder", True))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # Queries.

    def query_text(self, query: Query) -> str:
        """Return the text given to the query tokenizer: ``"<instruction> <question>"``.

        With ``query.instruction`` None the default of the query's kind is used, and an
        instruction without the separator gets it appended, with one warning per instruction. A model without instruction masking
        (FLMR) gets no default instruction. A final text without the separator is still encoded
        (nothing is masked) and logs one warning per process.
        """
        global _warned_missing_separator

        question = (query.question or "").strip()
        instruction = query.instruction
        if instruction is None:
            instruction = self.instructions[query.kind] if self.separator else ""
        instruction = instruction.strip()
        if instruction and self.separator and self.separator not in instruction:
            if instruction not in _appended_separator_warned:
                _appended_separator_warned.add(instruction)
                logger.warning(
                    "instruction %r has no separator %r; using %r so that the instruction tokens are masked",
                    instruction,
                    self.separator,
                    f"{instruction}{self.separator}",
                )
            instruction = f"{instruction}{self.separator}"
        text = f"{instruction} {question}".strip()

        if self.separator and self.separator not in text and not _warned_missing_separator:
            _warned_missing_separator = True
            logger.warning(
                "query %r has no instruction separator %r, so no instruction token is masked; "
                "PreFLMR expects '<instruction>%s <question>' (pass instruction=None for the default)",
                text[:80],
                self.separator,
                self.separator,
            )
        return text

    def _warn_truncated(self, texts: list[str]) -> None:
        tokenizer = self.model.query_tokenizer
        maxlen = int(tokenizer.query_maxlen)
        for text in texts:
            # [CLS], the marker placeholder and [SEP] surround the text's word pieces. verbose=False
            # drops transformers' own "longer than the maximum sequence length" warning.
            length = len(tokenizer.tokenize(text, verbose=False)) + 3
            if length > maxlen:
                logger.warning(
                    "query %r has %d tokens, more than the query length %d; it is truncated "
                    "(shorten the question or the instruction)",
                    text[:80],
                    length,
                    maxlen,
                )

    def encode_queries(self, queries: Sequence[Query]) -> torch.Tensor:
        """Encode queries into a float32 CPU tensor ``[B, Lq, dim]``.

        Queries with an image run with the vision tokens on. Text-only queries run with them off
        (no placeholder image), so they have fewer rows and are padded with zero rows, which add
        nothing to a late-interaction score.

        Raises:
            ValueError: a query has neither question nor image, or has an image for a model
                without a vision encoder.
            ImageLoadError: a query image is missing or unreadable.
        """
        if not queries:
            raise ValueError("no queries to encode")
        for position, query in enumerate(queries):
            if query.image is None and not (query.question and query.question.strip()):
                raise ValueError(f"query {position} has neither a question nor an image; give at least one")
            if query.image is not None and not self.has_vision:
                raise ValueError("this model has no vision encoder; search with a question only")

        texts = [self.query_text(query) for query in queries]
        self._warn_truncated(texts)
        outputs: list[torch.Tensor | None] = [None] * len(queries)
        for with_image in (True, False):
            positions = [i for i, query in enumerate(queries) if (query.image is not None) == with_image]
            for start in range(0, len(positions), self.batch_size):
                batch = positions[start : start + self.batch_size]
                images = [queries[i].image for i in batch] if with_image else None
                encoded = self._encode_query_batch([texts[i] for i in batch], images)
                for row, i in enumerate(batch):
                    outputs[i] = encoded[row]

        length = max(output.shape[0] for output in outputs if output is not None)
        dim = outputs[0].shape[-1]  # type: ignore[union-attr]
        result = torch.zeros(len(queries), length, dim, dtype=torch.float32)
        for i, output in enumerate(outputs):
            assert output is not None
            result[i, : output.shape[0]] = output
        return result

    def _encode_query_batch(self, texts: list[str], images: list[ImageInput] | None) -> torch.Tensor:
        tokens = self.model.query_tokenizer(texts)
        arguments: dict[str, Any] = {
            "input_ids": tokens["input_ids"].to(self.device),
            "attention_mask": tokens["attention_mask"].to(self.device),
        }
        if images is None:
            if self.has_vision:
                arguments["concat_output_from_vision_encoder"] = False
        else:
            arguments["pixel_values"] = self.pixel_values(images)
            arguments["concat_output_from_vision_encoder"] = True
        model_logger = logging.getLogger(type(self.model).__module__)
        model_logger.addFilter(_SEPARATOR_FILTER)
        try:
            with torch.inference_mode():
                output = self.model.query(**arguments).late_interaction_output
        finally:
            model_logger.removeFilter(_SEPARATOR_FILTER)
        return output.float().cpu()

    def pixel_values(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Load ``images`` and run the image processor: ``[B, 3, H, W]`` on the model's device and dtype."""
        pictures = [load_image(image) for image in images]
        processed = self.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
        return processed.to(device=self.device, dtype=self.dtype)

    # Documents.

    def encode_documents(
        self,
        texts: Sequence[str],
        images: Sequence[ImageInput | None] | None = None,
        progress_bar: Any = None,
    ) -> tuple[torch.Tensor, list[int]]:
        """Encode documents into packed token embeddings.

        Args:
            texts: the passage texts (may be empty strings for image-only documents).
            images: per document an image or None; documents with an image are encoded with
                the 32 vision tokens first.
            progress_bar: a tqdm bar to advance by the number of documents encoded.

        Returns:
            ``(embeddings, doclens)``: a float16 CPU tensor ``[sum(doclens), dim]`` holding the
            kept tokens of every document in input order, and each document's token count.

        Raises:
            ImageLoadError: an image is missing or unreadable (the message names the file).
            ValueError: a document has an image but the model has no vision encoder.
        """
        count = len(texts)
        images = list(images) if images is not None else [None] * count
        if len(images) != count:
            raise ValueError(f"got {count} texts but {len(images)} images")
        if count == 0:
            return torch.zeros(0, int(self.model.config.dim), dtype=torch.float16), []
        if not self.has_vision and any(image is not None for image in images):
            raise ValueError("this model has no vision encoder, so it cannot encode documents with images")

        # One tokenization for the whole list; each batch is cut to its own longest document.
        tokens = self.model.context_tokenizer(list(texts), padding="longest")
        lengths = tokens["attention_mask"].sum(dim=1).tolist()
        order = sorted(range(count), key=lambda i: (images[i] is not None, -lengths[i]))

        per_document: list[torch.Tensor | None] = [None] * count
        for start in range(0, count, self.batch_size):
            batch = order[start : start + self.batch_size]
            with_images = [i for i in batch if images[i] is not None]
            without_images = [i for i in batch if images[i] is None]
            for group, group_images in ((with_images, True), (without_images, False)):
                if not group:
                    continue
                width = max(lengths[i] for i in group)
                input_ids = tokens["input_ids"][group, :width]
                attention_mask = tokens["attention_mask"][group, :width]
                pixel_values = self.pixel_values([images[i] for i in group]) if group_images else None
                packed = self._encode_document_batch(input_ids, attention_mask, pixel_values)
                for i, embedding in zip(group, packed):
                    per_document[i] = embedding
            if progress_bar is not None:
                progress_bar.update(len(batch))

        doclens = [int(embedding.shape[0]) for embedding in per_document]  # type: ignore[union-attr]
        return torch.cat(per_document), doclens  # type: ignore[arg-type]

    def _encode_document_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None
    ) -> list[torch.Tensor]:
        arguments: dict[str, Any] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "keep_dims": True,
            "return_mask": True,
        }
        if pixel_values is not None:
            arguments["pixel_values"] = pixel_values
            arguments["concat_output_from_vision_encoder"] = True
        elif self.has_vision:
            arguments["concat_output_from_vision_encoder"] = False
        with torch.inference_mode():
            output = self.model.doc(**arguments)
        embeddings = output.late_interaction_output.to(torch.float16).cpu()
        mask = output.context_mask.reshape(embeddings.shape[0], embeddings.shape[1]).cpu()
        return [embeddings[row][mask[row]] for row in range(embeddings.shape[0])]
