"""The package exports its public names and imports no LangChain package but langchain_core."""

from __future__ import annotations

import ast
from pathlib import Path

import langchain_flmr

SOURCE_DIR = Path(langchain_flmr.__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_public_names_are_exported() -> None:
    assert sorted(langchain_flmr.__all__) == ["FLMRAnswerGenerator", "FLMRQuery", "FLMRRetriever", "create_visual_qa_chain"]


def test_only_langchain_core_is_imported() -> None:
    langchain_modules = {
        module
        for path in SOURCE_DIR.glob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0].startswith("langchain") and module.split(".")[0] != "langchain_flmr"
    }
    assert {module.split(".")[0] for module in langchain_modules} == {"langchain_core"}
