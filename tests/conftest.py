"""Shared test fixtures: where the golden reference fixtures live."""

from __future__ import annotations

import os
from pathlib import Path

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
