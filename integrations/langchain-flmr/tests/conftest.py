"""Fixtures for the LangChain FLMR tests: the tiny PreFLMR checkpoint and its images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizer, T5Config, T5ForConditionalGeneration

import flmr_rag
from flmr_rag.generation import AnswerGenerator

REPO_ROOT = Path(__file__).resolve().parents[3]


def fixtures_dir() -> Path:
    """Return the folder of shared test fixtures: $FLMR_RAG_FIXTURES, else ../shared/fixtures beside the repo."""
    override = os.environ.get("FLMR_RAG_FIXTURES")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def preflmr_tiny_path() -> Path:
    """Path of the tiny PreFLMR checkpoint; skips the test when it is absent."""
    path = fixtures_dir() / "preflmr-tiny"
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"fixture folder {path} is absent; set FLMR_RAG_FIXTURES to the folder that holds preflmr-tiny/")
    return path


@pytest.fixture(scope="session")
def fixture_images(preflmr_tiny_path: Path) -> list[Path]:
    """The six 64x64 PNG images of the tiny checkpoint folder, sorted by name."""
    return sorted((preflmr_tiny_path / "images").glob("*.png"))


PASSAGES = [
    "The red circle is a round shape with a constant radius.",
    "A blue square has four equal sides and four right angles.",
    "Green triangles have three sides; their angles add up to 180 degrees.",
    "An ellipse is a stretched circle with two focal points.",
    "A star polygon is drawn with crossing edges.",
    "Yellow is a primary colour in the RYB model used by painters.",
]


@pytest.fixture(scope="session")
def flmr_core(
    preflmr_tiny_path: Path, fixture_images: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[flmr_rag.FLMRRetriever]:
    """A core retriever over six text passages and two image passages, built once per session."""
    core = flmr_rag.FLMRRetriever.create(tmp_path_factory.mktemp("langchain") / "flmr", model=str(preflmr_tiny_path))
    documents = [flmr_rag.Document(id=f"p{number}", text=text, metadata={"topic": "shapes"}) for number, text in enumerate(PASSAGES)]
    documents += [
        flmr_rag.Document(id="img0", text="a red circle on a tinted background", image=str(fixture_images[0])),
        flmr_rag.Document(id="img3", text="an orange ellipse", image=fixture_images[3].read_bytes()),
    ]
    core.add(documents, show_progress=False)
    yield core
    core.close()


@pytest.fixture(scope="session")
def t5_answer_generator(preflmr_tiny_path: Path) -> AnswerGenerator:
    """A RA-VQA reader over a tiny random T5 with the fixture's bert-base-uncased vocabulary."""
    tokenizer = BertTokenizer.from_pretrained(str(preflmr_tiny_path / "query_tokenizer"))
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        decoder_start_token_id=0, eos_token_id=tokenizer.sep_token_id, pad_token_id=0,
    )  # fmt: skip
    return AnswerGenerator(T5ForConditionalGeneration(config), tokenizer, num_beams=1, max_new_tokens=3)
