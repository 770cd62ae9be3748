"""The LangChain example notebook runs end to end with the tiny checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[3]
NOTEBOOK = REPO_ROOT / "examples" / "langchain_visual_qa.ipynb"


def test_langchain_notebook_executes(preflmr_tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLMR_RAG_MODEL", str(preflmr_tiny_path))
    # The notebook's temporary folders land under tmp_path, so a failed run leaves nothing behind.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # The kernel is a separate process; it finds flmr_rag from the repository even when it is not installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
