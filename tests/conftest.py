"""Shared test fixtures: where the golden reference fixtures live, and indexes and generators built from them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_fixtures_dir() -> Path:
    """Return the folder of golden fixtures: $FLMR_RAG_FIXTURES, else ../shared/fixtures beside the repo."""
    override = os.environ.get("FLMR_RAG_FIXTURES")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def preflmr_tiny_path() -> Path:
    """Path of the tiny PreFLMR reference checkpoint; skips the test when it is absent."""
    path = shared_fixtures_dir() / "preflmr-tiny"
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"golden fixture folder {path} is absent; set FLMR_RAG_FIXTURES to the folder that holds preflmr-tiny/")
    return path


@pytest.fixture(scope="session")
def build_text_index(preflmr_tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Mapping[str, str]], Path]:
    """Return ``build(name, passages)``: it indexes ``{id: text}`` passages with the tiny PreFLMR
    checkpoint on CPU in a new temporary folder named after ``name`` and returns the index directory."""
    from flmr_rag.retriever import FLMRRetriever
    from flmr_rag.types import Document

    def build(name: str, passages: Mapping[str, str]) -> Path:
        directory = tmp_path_factory.mktemp(name) / "index"
        with FLMRRetriever.create(directory, model=str(preflmr_tiny_path), device="cpu") as retriever:
            retriever.add([Document(id=key, text=text) for key, text in passages.items()], show_progress=False)
        return directory

    return build


@pytest.fixture(scope="module")
def retriever(index_dir: Path) -> Iterator[Any]:
    """The FLMRRetriever of the test module's own ``index_dir`` fixture, opened on CPU once per module."""
    from flmr_rag.retriever import FLMRRetriever

    with FLMRRetriever.open(index_dir, device="cpu") as opened:
        yield opened


@pytest.fixture(scope="session")
def build_tiny_t5(preflmr_tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], Path]:
    """Return ``build(name, seed)``: it saves a one-layer T5 generator with random weights drawn
    after ``torch.manual_seed(seed)`` and the tiny checkpoint's BERT vocabulary into a new
    temporary folder ``name`` and returns that folder."""
    import torch
    from transformers import BertTokenizer, T5Config, T5ForConditionalGeneration

    def build(name: str, seed: int) -> Path:
        tokenizer = BertTokenizer.from_pretrained(str(preflmr_tiny_path / "query_tokenizer"))
        torch.manual_seed(seed)
        config = T5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
            decoder_start_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        folder = tmp_path_factory.mktemp("reader") / name
        T5ForConditionalGeneration(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return build
