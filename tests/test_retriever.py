"""Tests of FLMRRetriever with the tiny PreFLMR fixture: indexing, search, updates, reopening, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flmr_rag.models import FLMRModelForRetrieval
from flmr_rag.data import read_corpus
from flmr_rag.docstore import StoredDocument
from flmr_rag.retriever import DOCSTORE_FILE, SETTINGS_FILE, FLMRRetriever
from flmr_rag.types import Document, SearchResult

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(preflmr_tiny_path: Path) -> list[Path]:
    return sorted((preflmr_tiny_path / "images").glob("*.png"))


@pytest.fixture(scope="module")
def corpus(images: list[Path]) -> list[Document]:
    """Six documents: text only, image paths with and without text, a PIL image and PNG bytes."""
    return [
        Document(id="paris", text="Paris is the capital of France.", metadata={"lang": "en"}),
        Document(id="beijing", text="Beijing is the capital of China."),
        Document(id="red", text="A red circle on a light blue background.", image=images[0]),
        Document(id="blue", text="", image=str(images[1])),
        Document(id="green", text="A green triangle pointing up.", image=Image.open(images[2]).copy()),
        Document(id="orange", text="An orange ellipse.", image=images[3].read_bytes()),
    ]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, preflmr_tiny_path: Path, corpus: list[Document]) -> Path:
    """An index directory over ``corpus``, built once and copied for each test that changes it."""
    directory = tmp_path_factory.mktemp("template") / "kb"
    with FLMRRetriever.create(directory, model=preflmr_tiny_path, batch_size=4) as created:
        created.add(corpus, show_progress=False)
    return directory


@pytest.fixture
def retriever(tmp_path: Path, template: Path) -> FLMRRetriever:
    shutil.copytree(template, tmp_path / "kb")
    with FLMRRetriever.open(tmp_path / "kb") as opened:
        yield opened


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, preflmr_tiny_path: Path, corpus: list[Document]) -> FLMRRetriever:
    """A read-only retriever over ``corpus`` shared by the search tests of this module."""
    with FLMRRetriever.create(tmp_path_factory.mktemp("shared") / "kb", model=preflmr_tiny_path, batch_size=4) as opened:
        opened.add(corpus, show_progress=False)
        yield opened


def _ids(results: list[SearchResult]) -> list[str]:
    return [result.id for result in results]


def test_add_returns_ids_in_order(shared: FLMRRetriever, corpus: list[Document]) -> None:
    assert len(shared) == len(corpus)
    assert list(shared.ids()) == [document.id for document in corpus]


def test_search_by_text(shared: FLMRRetriever) -> None:
    results = shared.search(question="What is the capital of France?", k=3)
    assert len(results) == 3
    assert [result.rank for result in results] == [1, 2, 3]
    assert results[0].score >= results[1].score >= results[2].score


def test_search_by_image(shared: FLMRRetriever, images: list[Path]) -> None:
    results = shared.search(image=images[0], k=6)
    assert sorted(_ids(results)) == sorted(list(shared.ids()))


def test_search_by_question_and_image(shared: FLMRRetriever, images: list[Path]) -> None:
    results = shared.search(question="Which shape is this?", image=Image.open(images[1]), k=2)
    assert len(results) == 2
    assert all(isinstance(result, SearchResult) for result in results)


def test_search_image_bytes_equals_path(shared: FLMRRetriever, images: list[Path]) -> None:
    by_path = shared.search(question="Which shape?", image=images[4], k=4)
    by_bytes = shared.search(question="Which shape?", image=images[4].read_bytes(), k=4)
    assert _ids(by_path) == _ids(by_bytes)
    assert by_path[0].score == pytest.approx(by_bytes[0].score, abs=1e-5)


def test_search_matches_exact(shared: FLMRRetriever, images: list[Path]) -> None:
    for query in ({"question": "capital city"}, {"image": images[2]}, {"question": "Which shape?", "image": images[3]}):
        default = shared.search(**query, k=4)
        exact = shared.search(**query, k=4, exact=True)
        assert _ids(default) == _ids(exact)


def test_plaid_path_matches_exact_on_small_corpus(shared: FLMRRetriever, images: list[Path]) -> None:
    from flmr_rag.encoding import Query

    queries = [Query("capital of China"), Query("Which shape?", images[5]), Query(image=images[0])]
    embeddings = shared.encoder.encode_queries(queries).numpy()
    approximate = shared._index.search(embeddings, k=3, exact=False)
    exact = shared._index.search(embeddings, k=3, exact=True)
    for (approximate_ids, _), (exact_ids, _) in zip(approximate, exact):
        assert approximate_ids == exact_ids


def test_search_scores_match_late_interaction(shared: FLMRRetriever) -> None:
    from flmr_rag.encoding import Query

    query = shared.encoder.encode_queries([Query("capital of France")])[0]
    documents = [shared.get(doc_id) for doc_id in shared.ids()]
    embeddings, doclens = shared.encoder.encode_documents([document.text for document in documents], [document.image for document in documents])
    expected = {}
    for document, tokens in zip(documents, embeddings.float().split(doclens)):
        expected[document.id] = float((query @ tokens.T).max(dim=1).values.sum())
    results = shared.search(question="capital of France", k=6, exact=True)
    assert _ids(results) == sorted(expected, key=expected.get, reverse=True)
    for result in results:
        assert result.score == pytest.approx(expected[result.id], abs=1e-3)


def test_search_batch_equals_single_searches(shared: FLMRRetriever, images: list[Path]) -> None:
    queries = [{"question": "capital of China"}, {"image": images[1]}, {"question": "red?", "image": images[0]}]
    batched = shared.search_batch(queries, k=3)
    single = [shared.search(**query, k=3) for query in queries]
    assert [_ids(results) for results in batched] == [_ids(results) for results in single]


def test_search_from_threads(shared: FLMRRetriever, images: list[Path]) -> None:
    expected = _ids(shared.search(question="Which shape?", image=images[2], k=3))
    found: list[list[str]] = []

    def search() -> None:
        found.append(_ids(shared.search(question="Which shape?", image=images[2], k=3)))

    threads = [threading.Thread(target=search) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [expected] * 4


def test_search_batch_rejects_unknown_keys(shared: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="unknown keys \\['text'\\]"):
        shared.search_batch([{"text": "typo for question"}])


def test_search_k_larger_than_corpus_returns_all(shared: FLMRRetriever) -> None:
    assert len(shared.search(question="anything", k=50)) == 6


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_search_rejects_bad_k(shared: FLMRRetriever, k: object) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        shared.search(question="x", k=k)  # type: ignore[arg-type]


def test_search_without_question_or_image_raises(shared: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="neither a question nor an image"):
        shared.search()


def test_search_missing_image_names_file(shared: FLMRRetriever, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing.png"):
        shared.search(image=tmp_path / "nothing.png")


def test_empty_index_search_returns_nothing(tmp_path: Path, preflmr_tiny_path: Path) -> None:
    with FLMRRetriever.create(tmp_path / "empty", model=preflmr_tiny_path) as empty:
        assert empty.search(question="anything") == []


def test_get_returns_stored_document(shared: FLMRRetriever, images: list[Path]) -> None:
    paris = shared.get("paris")
    red = shared.get("red")
    assert paris == Document(id="paris", text="Paris is the capital of France.", image=None, metadata={"lang": "en"})
    assert red.image == str(images[0].resolve())
    assert shared.get("unknown") is None


def test_pil_and_bytes_images_are_stored_as_png(shared: FLMRRetriever) -> None:
    for doc_id in ("green", "orange"):
        stored = Path(shared.get(doc_id).image)
        assert stored.parent == shared.index_dir / "images"
        assert stored.read_bytes().startswith(b"\x89PNG")


def test_copied_index_finds_its_stored_images(retriever: FLMRRetriever) -> None:
    stored = Path(retriever.get("green").image)
    assert stored.parent == retriever.index_dir / "images"
    assert stored.is_file()


def test_delete_then_reopen(retriever: FLMRRetriever, preflmr_tiny_path: Path) -> None:
    orange_image = Path(retriever.get("orange").image)
    assert retriever.delete(["paris", "orange", "unknown"]) == 2
    assert retriever.get("paris") is None
    assert not orange_image.exists()
    assert "paris" not in _ids(retriever.search(question="capital of France", k=6))
    retriever.close()

    with FLMRRetriever.open(retriever.index_dir) as reopened:
        assert len(reopened) == 4
        assert reopened.get("paris") is None
        assert "paris" not in _ids(reopened.search(question="capital of France", k=6))


def test_add_after_reopen_and_readd_deleted_id(retriever: FLMRRetriever) -> None:
    retriever.delete("beijing")
    retriever.close()
    with FLMRRetriever.open(retriever.index_dir) as reopened:
        reopened.add([Document(id="beijing", text="Beijing hosts the Forbidden City."), Document(id="rome", text="Rome is in Italy.")])
        assert len(reopened) == 7
        assert reopened.get("beijing").text == "Beijing hosts the Forbidden City."
        assert "rome" in _ids(reopened.search(question="Where is Rome?", k=7))


def test_generated_ids_are_unique(retriever: FLMRRetriever) -> None:
    ids = retriever.add([Document(text="first unnamed"), Document(text="second unnamed")])
    assert len(set(ids)) == 2
    assert retriever.get(ids[0]).text == "first unnamed"


def test_add_streams_in_chunks(tmp_path: Path, preflmr_tiny_path: Path) -> None:
    generator = (Document(id=f"d{number}", text=f"passage number {number}") for number in range(5))
    with FLMRRetriever.create(tmp_path / "chunks", model=preflmr_tiny_path, chunk_size=2) as chunked:
        assert chunked.add(generator) == [f"d{number}" for number in range(5)]
        assert chunked._index.stats()["num_segments"] == 3
        assert len(chunked) == 5


def test_add_duplicate_existing_id_names_it(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="'paris'"):
        retriever.add([Document(id="new", text="fresh"), Document(id="paris", text="again")])
    assert len(retriever) == 6
    assert retriever.get("new") is None


def test_add_duplicate_in_batch_names_it(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="'twice'"):
        retriever.add([Document(id="twice", text="a"), Document(id="twice", text="b")])
    assert len(retriever) == 6


def test_add_document_without_text_or_image_raises(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="'blank' has neither text nor an image"):
        retriever.add([Document(id="blank", text="   ")])


def test_add_unreadable_image_names_file(retriever: FLMRRetriever, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 broken jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        retriever.add([Document(id="bad", text="x", image=corrupt)])
    assert retriever.get("bad") is None


def test_add_non_json_metadata_raises(retriever: FLMRRetriever) -> None:
    with pytest.raises(ValueError, match="metadata"):
        retriever.add([Document(id="meta", text="x", metadata={"when": object()})])


def test_failed_index_write_rolls_back_chunk(retriever: FLMRRetriever, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(retriever._index, "add", fail)
    with pytest.raises(OSError, match="disk full"):
        retriever.add([Document(id="lost", text="never stored", image=Image.new("RGB", (8, 8), "white"))])
    monkeypatch.undo()
    assert retriever.get("lost") is None
    assert sorted(path.name for path in (retriever.index_dir / "images").iterdir()) == sorted(
        Path(retriever.get(doc_id).image).name for doc_id in ("green", "orange")
    )
    retriever.add([Document(id="lost", text="stored now")])
    assert retriever.get("lost").text == "stored now"


def test_reopen_recovers_interrupted_add(retriever: FLMRRetriever) -> None:
    # The state a crash leaves between the index commit and the docstore commit.
    embeddings, doclens = retriever.encoder.encode_documents(["torn write kept", "torn write lost"])
    retriever._store.stage([StoredDocument("kept", "torn write kept"), StoredDocument("lost", "torn write lost")])
    retriever._index.add(embeddings[: doclens[0]].numpy(), doclens[:1], ["kept"])
    retriever.close()
    with FLMRRetriever.open(retriever.index_dir) as reopened:
        assert reopened.get("kept").text == "torn write kept"
        assert reopened.get("lost") is None
        assert len(reopened) == 7


def test_open_leaves_rows_of_active_writer(retriever: FLMRRetriever) -> None:
    from flmr_rag.index_directory import writer_lock

    retriever._store.stage([StoredDocument("in-flight", "being written by another process")])
    with writer_lock(retriever.index_dir):
        with FLMRRetriever.open(retriever.index_dir, load_model=False) as reader:
            assert reader._store.count_by_state()["pending"] == 1
    retriever.close()
    with FLMRRetriever.open(retriever.index_dir, load_model=False) as reader:
        assert reader._store.count_by_state()["pending"] == 0


def test_writer_killed_after_index_commit(retriever: FLMRRetriever) -> None:
    retriever.close()
    script = f"""
import os
from flmr_rag.docstore import DocumentStore
from flmr_rag.retriever import FLMRRetriever
from flmr_rag.types import Document
DocumentStore.commit = lambda self, ids: os._exit(3)
retriever = FLMRRetriever.open({str(retriever.index_dir)!r})
retriever.add([Document(id="crash", text="written just before the crash")], show_progress=False)
"""
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert completed.returncode == 3
    with FLMRRetriever.open(retriever.index_dir) as reopened:
        assert reopened.get("crash").text == "written just before the crash"
        assert reopened._store.count_by_state()["pending"] == 0


def test_create_existing_index_raises(shared: FLMRRetriever, preflmr_tiny_path: Path) -> None:
    with pytest.raises(FileExistsError, match="already contains an index built with model"):
        FLMRRetriever.create(shared.index_dir, model=preflmr_tiny_path)


def test_create_nonempty_directory_raises(tmp_path: Path, preflmr_tiny_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        FLMRRetriever.create(tmp_path, model=preflmr_tiny_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_open_with_different_model_names_both(retriever: FLMRRetriever, preflmr_tiny_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-model"
    retriever.model.save_pretrained(str(other))
    retriever.close()
    with pytest.raises(ValueError, match=f"built with model '{preflmr_tiny_path}'.*not '{other}'"):
        FLMRRetriever.open(retriever.index_dir, model=other)


def test_open_with_same_model_succeeds(retriever: FLMRRetriever, preflmr_tiny_path: Path) -> None:
    retriever.close()
    with FLMRRetriever.open(retriever.index_dir, model=preflmr_tiny_path) as reopened:
        assert len(reopened) == 6


def test_open_with_different_dim_raises(retriever: FLMRRetriever) -> None:
    retriever.close()
    settings_file = retriever.index_dir / SETTINGS_FILE
    settings = json.loads(settings_file.read_text())
    settings["dim"] = 64
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="dim 64.*dim 128"):
        FLMRRetriever.open(retriever.index_dir)


def test_open_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FLMRRetriever.open(tmp_path / "nowhere")


def test_open_plain_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an flmr-rag index directory"):
        FLMRRetriever.open(tmp_path)


def test_create_with_non_flmr_folder_raises(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        FLMRRetriever.create(tmp_path / "kb", model=folder)
    assert not (tmp_path / "kb" / SETTINGS_FILE).exists()


def test_create_with_folder_without_config_raises(tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        FLMRRetriever.create(tmp_path / "kb", model=tmp_path / "empty-model")


def test_create_with_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FLMRRetriever.create(tmp_path / "kb", model=tmp_path / "no-model")


def test_create_from_instance_with_model_path(tmp_path: Path, preflmr_tiny_path: Path, shared: FLMRRetriever) -> None:
    with FLMRRetriever.create(tmp_path / "instance", model=shared.model, model_path=preflmr_tiny_path) as created:
        assert created.settings["model"] == str(preflmr_tiny_path.resolve())


def test_create_from_instance_references_its_folder(tmp_path: Path, preflmr_tiny_path: Path, shared: FLMRRetriever) -> None:
    with FLMRRetriever.create(tmp_path / "referenced", model=shared.model) as created:
        assert created.settings["model"] == str(preflmr_tiny_path.resolve())
    assert not (tmp_path / "referenced" / "model").exists()


def test_create_from_instance_saves_model(tmp_path: Path, preflmr_tiny_path: Path, shared: FLMRRetriever) -> None:
    processor = shared.encoder.image_processor
    model = FLMRModelForRetrieval.from_pretrained(preflmr_tiny_path)
    model.name_or_path = ""  # an instance built in memory has no checkpoint folder
    with FLMRRetriever.create(tmp_path / "saved", model=model, image_processor=processor) as created:
        created.add([Document(id="a", text="Saved with the index.")])
    assert (tmp_path / "saved" / "model" / "config.json").is_file()
    with FLMRRetriever.open(tmp_path / "saved") as reopened:
        assert reopened.search(question="saved?", k=1)[0].id == "a"


def test_instruction_setting_is_used(tmp_path: Path, preflmr_tiny_path: Path) -> None:
    with FLMRRetriever.create(tmp_path / "kb", model=preflmr_tiny_path, instruction="Find shapes:") as created:
        pass
    with FLMRRetriever.open(tmp_path / "kb") as reopened:
        from flmr_rag.encoding import Query

        assert reopened.encoder.query_text(Query("red?")) == "Find shapes: red?"


def test_closed_retriever_raises(retriever: FLMRRetriever) -> None:
    retriever.close()
    retriever.close()
    with pytest.raises(RuntimeError, match="closed"):
        retriever.search(question="x")


def test_docstore_file_is_wal(shared: FLMRRetriever) -> None:
    assert (shared.index_dir / DOCSTORE_FILE).is_file()
    assert shared._store._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# Corpus readers feeding the retriever.


def _write_mixed_corpus(folder: Path, images: list[Path], format_name: str) -> Path:
    (folder / "pictures").mkdir(parents=True)
    for image in images[:3]:
        shutil.copy(image, folder / "pictures" / image.name)
    rows = [
        {"id": "text", "text": "Paris is the capital of France.", "image": None},
        {"id": "both", "text": "A red circle.", "image": f"pictures/{images[0].name}"},
        {"id": "picture", "text": "", "image": f"pictures/{images[1].name}"},
        {"id": "skipped", "text": "", "image": None},
    ]
    if format_name == "jsonl":
        path = folder / "corpus.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif format_name == "csv":
        path = folder / "corpus.csv"
        lines = ["id,text,image"] + [f"{row['id']},{row['text']},{row['image'] or ''}" for row in rows]
        path.write_text("\n".join(lines) + "\n")
    elif format_name == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "corpus.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif format_name == "m2kr":
        path = folder / "passages.jsonl"
        renamed = [{"passage_id": row["id"], "passage_content": row["text"], "image_path": row["image"]} for row in rows]
        path.write_text("".join(json.dumps(row) + "\n" for row in renamed))
    else:
        path = folder / "pictures"
        (path / f"{images[0].stem}.txt").write_text("A red circle.")
    return path


@pytest.mark.parametrize("format_name", ["jsonl", "csv", "parquet", "m2kr", "image_folder"])
def test_index_mixed_corpus_from_reader(format_name: str, tmp_path: Path, preflmr_tiny_path: Path, images: list[Path]) -> None:
    path = _write_mixed_corpus(tmp_path / "data", images, format_name)
    documents = read_corpus(path, format="m2kr" if format_name == "m2kr" else None)
    with FLMRRetriever.create(tmp_path / "kb", model=preflmr_tiny_path) as created:
        ids = created.add(documents, show_progress=False)
        assert len(created) == len(ids) == 3
        by_image = created.search(image=images[0], k=3)
        by_text = created.search(question="red circle", k=3)
        assert sorted(_ids(by_image)) == sorted(ids)
        assert sorted(_ids(by_text)) == sorted(ids)
        scores = np.array([result.score for result in by_image])
        assert np.all(np.diff(scores) <= 0)


def test_relative_index_dir_stores_usable_image_paths(tmp_path: Path, preflmr_tiny_path: Path, images: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with FLMRRetriever.create("kbA", model=preflmr_tiny_path) as created:
        created.add([Document(id="pil", image=Image.open(images[0]).copy())], show_progress=False)
        stored = Path(created.get("pil").image)
    assert stored.is_absolute()
    assert stored.is_file()

    monkeypatch.chdir(tmp_path / "kbA")
    with FLMRRetriever.open(tmp_path / "kbA", load_model=False) as reopened:
        assert Path(reopened.get("pil").image).is_file()


def test_add_progress_total_from_stream(tmp_path: Path, preflmr_tiny_path: Path, images: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import flmr_rag.retriever as retriever_module

    folder = tmp_path / "pictures"
    folder.mkdir()
    for image in images[:3]:
        shutil.copy(image, folder / image.name)
    totals: list[object] = []
    original = retriever_module.progress

    def recording_progress(*args: object, **kwargs: object) -> object:
        totals.append(kwargs.get("total"))
        return original(*args, **kwargs)

    monkeypatch.setattr(retriever_module, "progress", recording_progress)
    with FLMRRetriever.create(tmp_path / "kb", model=preflmr_tiny_path) as created:
        created.add(read_corpus(folder))
        created.add(document for document in [Document(id="solo", text="one passage")])
    assert totals == [3, None]
