"""Fixtures for the LlamaIndex FLMR tests: the tiny PreFLMR checkpoint and its images."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.schema import ImageDocument

from llama_index.indices.managed.flmr import FLMRIndex

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


def shape_documents(images: list[Path]) -> list[Document]:
    """Six text documents and three image documents (two by path, one as base64)."""
    text_documents = [
        Document(text=text, doc_id=f"passage-{number}", metadata={"kind": "text"}) for number, text in enumerate(PASSAGES)
    ]
    image_documents = [
        ImageDocument(image_path=str(images[0]), text="a red circle on a tinted background", doc_id="image-path-0"),
        ImageDocument(image_path=str(images[1]), doc_id="image-path-1"),
        ImageDocument(image=base64.b64encode(images[2].read_bytes()).decode("ascii"), text="a green triangle", doc_id="image-b64-2"),
    ]
    return text_documents + image_documents


@pytest.fixture(scope="session")
def index(preflmr_tiny_path: Path, fixture_images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[FLMRIndex]:
    """An FLMRIndex over :func:`shape_documents`, built once per test session."""
    built = FLMRIndex.from_documents(
        shape_documents(fixture_images),
        model=str(preflmr_tiny_path),
        index_dir=tmp_path_factory.mktemp("llamaindex") / "flmr",
    )
    yield built
    built.close()
