"""FLMRRetriever with image and dict queries through invoke, ainvoke, batch and abatch."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from PIL import Image

import flmr_rag
from langchain_flmr import FLMRRetriever

QUESTION = "What colour is this shape?"


class RetrieverRunRecorder(BaseCallbackHandler):
    """Records the query and metadata of every retriever run, and how each run ended."""

    def __init__(self) -> None:
        self.queries: list[Any] = []
        self.metadata: list[dict[str, Any]] = []
        self.ended = 0
        self.errors: list[BaseException] = []

    def on_retriever_start(self, serialized: Any, query: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any) -> None:
        self.queries.append(query)
        self.metadata.append(dict(metadata or {}))

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.ended += 1

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.errors.append(error)


@pytest.fixture
def retriever(flmr_core: flmr_rag.FLMRRetriever) -> FLMRRetriever:
    return FLMRRetriever(retriever=flmr_core, k=3)


def _ids(documents: list[Document]) -> list[str]:
    return [document.id for document in documents]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_invoke_returns_documents_with_metadata(retriever: FLMRRetriever) -> None:
    documents = retriever.invoke("Which shape has three sides?")
    first = documents[0]
    assert isinstance(first, Document)
    assert isinstance(first.metadata["score"], float)
    assert first.metadata["rank"] == 1
    assert "image_path" in first.metadata


def test_invoke_matches_core_search(retriever: FLMRRetriever, flmr_core: flmr_rag.FLMRRetriever) -> None:
    documents = retriever.invoke("Which shape has three sides?")
    core = flmr_core.search(question="Which shape has three sides?", k=3)
    assert _ids(documents) == [result.id for result in core]
    assert [document.page_content for document in documents] == [result.text for result in core]
    assert [document.metadata["score"] for document in documents] == pytest.approx([result.score for result in core], abs=1e-4)


def test_scores_are_sorted(retriever: FLMRRetriever) -> None:
    scores = [document.metadata["score"] for document in retriever.invoke("a circle", k=8)]
    assert scores == sorted(scores, reverse=True)


def test_image_passage_has_image_path(retriever: FLMRRetriever) -> None:
    documents = {document.id: document for document in retriever.invoke("shapes", k=8)}
    assert Path(documents["img0"].metadata["image_path"]).is_file()
    assert documents["p0"].metadata["image_path"] is None


def test_image_keyword_changes_scores(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    text_only = retriever.invoke(QUESTION, k=8)
    with_image = retriever.invoke(QUESTION, image=str(fixture_images[1]), k=8)
    text_scores = {document.id: document.metadata["score"] for document in text_only}
    image_scores = {document.id: document.metadata["score"] for document in with_image}
    assert image_scores != pytest.approx(text_scores, abs=1e-3)


@pytest.mark.parametrize("form", ["path", "pathlib", "pil", "bytes", "base64", "data_url"])
def test_image_forms_give_same_results(retriever: FLMRRetriever, fixture_images: list[Path], form: str) -> None:
    path = fixture_images[2]
    with Image.open(path) as opened:
        pil_image = opened.convert("RGB")
    forms = {
        "path": str(path),
        "pathlib": path,
        "pil": pil_image,
        "bytes": path.read_bytes(),
        "base64": _b64(path),
        "data_url": "data:image/png;base64," + _b64(path),
    }
    expected = retriever.invoke(QUESTION, image=str(path))
    found = retriever.invoke(QUESTION, image=forms[form])
    assert _ids(found) == _ids(expected)
    assert [d.metadata["score"] for d in found] == pytest.approx([d.metadata["score"] for d in expected], abs=1e-4)


def test_dict_input_matches_keywords(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    by_dict = retriever.invoke({"question": QUESTION, "image": str(fixture_images[4]), "k": 2})
    by_keywords = retriever.invoke(QUESTION, image=str(fixture_images[4]), k=2)
    assert _ids(by_dict) == _ids(by_keywords)


def test_image_only_query(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    assert len(retriever.invoke({"image": str(fixture_images[0])})) == 3


async def test_ainvoke_with_image_matches_invoke(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    asynchronous = await retriever.ainvoke(QUESTION, image=_b64(fixture_images[5]), k=4)
    assert _ids(asynchronous) == _ids(retriever.invoke(QUESTION, image=str(fixture_images[5]), k=4))


async def test_ainvoke_dict_input(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    asynchronous = await retriever.ainvoke({"question": QUESTION, "image": str(fixture_images[5])})
    assert _ids(asynchronous) == _ids(retriever.invoke(QUESTION, image=str(fixture_images[5])))


def test_batch_matches_invoke(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    inputs = [
        "Which shape has three sides?",
        {"question": QUESTION, "image": str(fixture_images[1])},
        {"question": QUESTION, "image": fixture_images[2].read_bytes(), "k": 1},
    ]
    batched = retriever.batch(inputs)
    singles = [retriever.invoke(query) for query in inputs]
    assert [_ids(documents) for documents in batched] == [_ids(documents) for documents in singles]
    for batch_documents, single_documents in zip(batched, singles):
        assert [d.metadata["score"] for d in batch_documents] == pytest.approx(
            [d.metadata["score"] for d in single_documents], abs=1e-3
        )


def test_batch_encodes_queries_together(retriever: FLMRRetriever, flmr_core: flmr_rag.FLMRRetriever, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = flmr_core.search_batch

    def counting_search_batch(queries: Any, **kwargs: Any) -> Any:
        calls.append(len(queries))
        return original(queries, **kwargs)

    monkeypatch.setattr(flmr_core, "search_batch", counting_search_batch)
    retriever.batch(["a circle", "a square", "a star"])
    assert calls == [3]


async def test_abatch_matches_batch(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    inputs = ["a star", {"question": QUESTION, "image": _b64(fixture_images[3])}]
    asynchronous = await retriever.abatch(inputs)
    assert [_ids(documents) for documents in asynchronous] == [_ids(documents) for documents in retriever.batch(inputs)]


def test_batch_opens_one_run_per_input(retriever: FLMRRetriever) -> None:
    recorder = RetrieverRunRecorder()
    retriever.batch(["a star", "a circle"], {"callbacks": [recorder]})
    assert recorder.queries == ["a star", "a circle"]
    assert recorder.ended == 2


def test_batch_return_exceptions_keeps_good_results(retriever: FLMRRetriever, tmp_path: Path) -> None:
    results = retriever.batch(["a star", {"question": "q", "image": str(tmp_path / "missing.png")}], return_exceptions=True)
    assert len(results[0]) == 3
    assert isinstance(results[1], FileNotFoundError)


def test_batch_reports_image_error_to_its_run(retriever: FLMRRetriever, tmp_path: Path) -> None:
    recorder = RetrieverRunRecorder()
    results = retriever.batch(
        ["a star", {"question": "q", "image": str(tmp_path / "gone.png")}], {"callbacks": [recorder]}, return_exceptions=True
    )
    assert recorder.ended == 1
    assert [type(error) for error in recorder.errors] == [FileNotFoundError]
    assert isinstance(results[1], FileNotFoundError)


def test_batch_without_return_exceptions_raises(retriever: FLMRRetriever, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gone.png"):
        retriever.batch(["a star", {"question": "q", "image": str(tmp_path / "gone.png")}])


async def test_abatch_return_exceptions_keeps_good_results(retriever: FLMRRetriever, tmp_path: Path) -> None:
    results = await retriever.abatch(["a star", {"question": "q", "image": str(tmp_path / "gone.png")}], return_exceptions=True)
    assert len(results[0]) == 3
    assert isinstance(results[1], FileNotFoundError)


def test_k_keyword_overrides_field(retriever: FLMRRetriever) -> None:
    assert len(retriever.invoke("a star", k=5)) == 5


def test_k_above_corpus_returns_all(retriever: FLMRRetriever) -> None:
    assert len(retriever.invoke("a star", k=100)) == 8


def test_dict_input_is_not_mutated(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    query = {"question": QUESTION, "image": _b64(fixture_images[0]), "k": 2}
    snapshot = copy.deepcopy(query)
    retriever.invoke(query)
    assert query == snapshot


def test_pil_image_is_not_mutated(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    with Image.open(fixture_images[1]) as opened:
        image = opened.copy()
    before = (image.mode, image.size, image.tobytes())
    retriever.invoke(QUESTION, image=image)
    assert (image.mode, image.size, image.tobytes()) == before


def test_trace_input_has_no_base64(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    recorder = RetrieverRunRecorder()
    encoded = _b64(fixture_images[0])
    retriever.invoke({"question": QUESTION, "image": encoded}, {"callbacks": [recorder]})
    assert recorder.queries == [QUESTION]
    assert encoded not in str(recorder.metadata)
    assert recorder.metadata[0]["flmr_query_image"].startswith("sha256:")


def test_trace_metadata_names_keyword_image_path(retriever: FLMRRetriever, fixture_images: list[Path]) -> None:
    recorder = RetrieverRunRecorder()
    retriever.invoke(QUESTION, {"callbacks": [recorder]}, image=str(fixture_images[1]))
    assert recorder.metadata[0]["flmr_query_image"] == str(fixture_images[1])


def test_trace_metadata_names_provider(retriever: FLMRRetriever) -> None:
    recorder = RetrieverRunRecorder()
    retriever.invoke("a star", {"callbacks": [recorder]})
    assert recorder.metadata[0]["ls_retriever_name"] == "flmr"


def test_input_schema_accepts_dict(retriever: FLMRRetriever) -> None:
    schema = retriever.get_input_jsonschema()
    assert "anyOf" in schema


def test_image_error_is_reported_to_run(retriever: FLMRRetriever, tmp_path: Path) -> None:
    recorder = RetrieverRunRecorder()
    with pytest.raises(FileNotFoundError):
        retriever.invoke({"question": QUESTION, "image": str(tmp_path / "gone.png")}, {"callbacks": [recorder]})
    assert [type(error) for error in recorder.errors] == [FileNotFoundError]


def test_missing_image_path_raises(retriever: FLMRRetriever, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        retriever.invoke(QUESTION, image=str(tmp_path / "missing.png"))


def test_corrupt_image_bytes_raise(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        retriever.invoke(QUESTION, image=b"these bytes are not an image")


def test_base64_of_non_image_raises(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        retriever.invoke(QUESTION, image=base64.b64encode(b"plain text, long enough to look like base64").decode())


def test_unsupported_image_type_raises(retriever: FLMRRetriever) -> None:
    with pytest.raises(TypeError, match="int"):
        retriever.invoke(QUESTION, image=42)


def test_unknown_dict_key_raises(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="images"):
        retriever.invoke({"question": QUESTION, "images": "x.png"})


def test_empty_query_raises(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="neither a question nor an image"):
        retriever.invoke("")


@pytest.mark.parametrize("k", [0, -1])
def test_k_not_positive_raises(retriever: FLMRRetriever, k: int) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke("a star", k=k)


def test_from_index_opens_folder(flmr_core: flmr_rag.FLMRRetriever) -> None:
    opened = FLMRRetriever.from_index(flmr_core.index_dir, k=2)
    try:
        assert _ids(opened.invoke("a star")) == _ids(FLMRRetriever(retriever=flmr_core, k=2).invoke("a star"))
    finally:
        opened.core.close()
