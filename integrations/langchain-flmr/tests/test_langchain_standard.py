"""langchain-tests' standard retriever suite against FLMRRetriever with the tiny PreFLMR checkpoint."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests

import flmr_rag
from langchain_flmr import FLMRRetriever


class TestFLMRRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _use_core(self, flmr_core: flmr_rag.FLMRRetriever) -> None:
        self.core = flmr_core

    @property
    def retriever_constructor(self) -> type[FLMRRetriever]:
        return FLMRRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": self.core}

    @property
    def retriever_query_example(self) -> str:
        return "Which shape has four equal sides?"
