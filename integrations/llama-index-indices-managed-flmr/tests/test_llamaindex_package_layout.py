"""The package keeps LlamaIndex's namespace levels free of __init__.py files."""

from __future__ import annotations

from pathlib import Path

import pytest

import llama_index.indices.managed.flmr as package

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("level", ["llama_index", "llama_index/indices", "llama_index/indices/managed"])
def test_namespace_level_has_no_init(level: str) -> None:
    assert not (PACKAGE_ROOT / level / "__init__.py").exists()


def test_public_names_are_exported() -> None:
    assert sorted(package.__all__) == [
        "FLMRIndex",
        "FLMRIndexStruct",
        "FLMRMultiModalRetriever",
        "FLMRQueryBundle",
        "FLMRVisualQAQueryEngine",
    ]


def test_retriever_implements_every_abstract_method() -> None:
    assert package.FLMRMultiModalRetriever.__abstractmethods__ == frozenset()
