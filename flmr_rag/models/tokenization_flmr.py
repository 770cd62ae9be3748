"""Query and document tokenizers of FLMR / PreFLMR on the transformers 5 BERT tokenizer.

Both put ". " in front of every text so that position 1 is a placeholder token, then
overwrite it with a marker: ``[unused0]`` (id 1, the query marker [Q]) or ``[unused1]``
(id 2, the document marker [D]). Queries are always padded to ``query_maxlen`` and their
padding ids become ``[MASK]`` (ColBERT query augmentation: the model encodes and scores
those positions although the attention mask is 0 there).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BatchEncoding, BertTokenizer

QUERY_MARKER_ID = 1  # [unused0]
DOCUMENT_MARKER_ID = 2  # [unused1]
TEXT_PREFIX = ". "


def _as_text_list(text: str | Sequence[str]) -> list[str]:
    """Return one list of texts; a bare str is one text, not a sequence of characters."""
    if isinstance(text, str):
        return [text]
    texts = list(text)
    for position, item in enumerate(texts):
        if not isinstance(item, str):
            raise TypeError(
                f"text[{position}] is a {type(item).__name__}, expected str; pass a str or a list of str"
            )
    return texts


class _VocabularyFileMixin:
    """Also write ``vocab.txt`` on save, so BERT tools without tokenizer.json support can read the folder."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> tuple[str, ...]:
        files = super().save_pretrained(save_directory, *args, **kwargs)
        vocabulary = sorted(self.get_vocab().items(), key=lambda item: item[1])
        vocab_path = Path(save_directory) / "vocab.txt"
        vocab_path.write_text("".join(token + "\n" for token, _ in vocabulary), encoding="utf-8")
        return (*files, str(vocab_path))


class FLMRQueryEncoderTokenizer(_VocabularyFileMixin, BertTokenizer):
    """Query tokenizer: ". " prefix, [Q] marker at position 1, [MASK] padding to ``query_maxlen``.

    Args:
        query_maxlen: the fixed query length in tokens, [CLS] and [SEP] included (PreFLMR: 32).
        attend_to_mask_tokens: give the [MASK] padding positions attention mask 1.
        Other arguments are those of ``transformers.BertTokenizer``.

    Example:
        >>> tokenizer = FLMRQueryEncoderTokenizer.from_pretrained(folder, subfolder="query_tokenizer")
        >>> batch = tokenizer(["Using the image, answer the question: what colour is it?"])
        >>> batch["input_ids"].shape
        torch.Size([1, 32])
    """

    def __init__(self, *args: Any, query_maxlen: int = 32, attend_to_mask_tokens: bool = False, **kwargs: Any):
        super().__init__(*args, query_maxlen=query_maxlen, attend_to_mask_tokens=attend_to_mask_tokens, **kwargs)
        self.query_maxlen = int(query_maxlen)
        self.attend_to_mask_tokens = bool(attend_to_mask_tokens)

    def __call__(  # type: ignore[override]
        self,
        text: str | Sequence[str],
        padding: bool | str = "max_length",
        truncation: bool | str = True,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenize one query (str) or a batch (list of str).

        Returns a ``BatchEncoding`` (a dict) with ``input_ids`` and ``attention_mask``, int64
        tensors of shape ``[B, max_length or query_maxlen]``. Padding positions hold [MASK]
        (id 103) with attention mask 0, or 1 when ``attend_to_mask_tokens`` is set.
        """
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; FLMR tokenizers return torch tensors ('pt')")
        texts = [TEXT_PREFIX + item for item in _as_text_list(text)]
        length = self.query_maxlen if max_length is None else int(max_length)
        encoded = super().__call__(
            texts,
            padding=padding,
            truncation=truncation,
            max_length=length,
            return_tensors="pt",
            return_token_type_ids=False,
            **kwargs,
        )
        input_ids = encoded["input_ids"]
        attention_mask = encoded["attention_mask"]

        input_ids[:, 1] = QUERY_MARKER_ID
        padding_positions = input_ids == self.pad_token_id
        input_ids[padding_positions] = self.mask_token_id
        if self.attend_to_mask_tokens:
            attention_mask[padding_positions] = 1
        return BatchEncoding({"input_ids": input_ids, "attention_mask": attention_mask}, tensor_type="pt")


class FLMRContextEncoderTokenizer(_VocabularyFileMixin, BertTokenizer):
    """Document tokenizer: ". " prefix, [D] marker at position 1, truncation at ``doc_maxlen``.

    Args:
        doc_maxlen: the maximum document length in tokens, [CLS] and [SEP] included (512).
        Other arguments are those of ``transformers.BertTokenizer``.
    """

    def __init__(self, *args: Any, doc_maxlen: int = 512, **kwargs: Any):
        super().__init__(*args, doc_maxlen=doc_maxlen, **kwargs)
        self.doc_maxlen = int(doc_maxlen)

    def __call__(  # type: ignore[override]
        self,
        text: str | Sequence[str],
        padding: bool | str = "longest",
        truncation: bool | str = "longest_first",
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenize one document (str) or a batch (list of str).

        ``padding="longest"`` (the default) pads to the longest document of the batch, which
        gives the same kept-token embeddings as ``"max_length"`` for less compute;
        ``"max_length"`` pads to ``max_length`` (default and cap: ``doc_maxlen``), as the
        reference implementation does. Returns a ``BatchEncoding`` with ``input_ids`` and
        ``attention_mask``, int64 tensors ``[B, L]``; padding ids are 0.
        """
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; FLMR tokenizers return torch tensors ('pt')")
        texts = [TEXT_PREFIX + item for item in _as_text_list(text)]
        length = self.doc_maxlen if max_length is None else min(int(max_length), self.doc_maxlen)
        encoded = super().__call__(
            texts,
            padding=padding,
            truncation=truncation,
            max_length=length,
            return_tensors="pt",
            return_token_type_ids=False,
            **kwargs,
        )
        input_ids = encoded["input_ids"]
        input_ids[:, 1] = DOCUMENT_MARKER_ID
        return BatchEncoding({"input_ids": input_ids, "attention_mask": encoded["attention_mask"]}, tensor_type="pt")


# The upstream "...Fast" classes carry no FLMR logic; here the names point to the classes above,
# which already run on the Rust tokenizers backend.
FLMRQueryEncoderTokenizerFast = FLMRQueryEncoderTokenizer
FLMRContextEncoderTokenizerFast = FLMRContextEncoderTokenizer
