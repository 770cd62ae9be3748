"""FLMRIndex and FLMRMultiModalRetriever with the tiny PreFLMR checkpoint and real llama-index-core objects."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core import Document, StorageContext, load_index_from_storage
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
from PIL import Image

import flmr_rag

from llama_index.indices.managed.flmr import FLMRIndex, FLMRMultiModalRetriever, FLMRQueryBundle

REPO_ROOT = Path(__file__).resolve().parents[3]

def _ids(nodes: list[NodeWithScore]) -> list[str]:
    return [hit.node.node_id for hit in nodes]


def test_index_holds_every_document(index: FLMRIndex) -> None:
    assert len(index) == 9


def test_index_struct_type_is_flmr(index: FLMRIndex) -> None:
    assert index.index_struct.get_type() == "flmr"


def test_as_retriever_returns_multimodal_retriever(index: FLMRIndex) -> None:
    assert isinstance(index.as_retriever(similarity_top_k=3), FLMRMultiModalRetriever)


def test_as_retriever_ignores_unknown_keywords(index: FLMRIndex) -> None:
    retriever = index.as_retriever(similarity_top_k=2, response_mode="compact", multimodal=True)
    assert len(retriever.retrieve("what shape is red?")) == 2


def test_text_retrieve_returns_top_k_sorted_float_scores(index: FLMRIndex) -> None:
    hits = index.as_retriever(similarity_top_k=4).retrieve("which shape has four equal sides?")
    scores = [hit.score for hit in hits]
    assert len(hits) == 4
    assert all(isinstance(score, float) for score in scores)
    assert scores == sorted(scores, reverse=True)


def test_retrieve_returns_docstore_nodes(index: FLMRIndex) -> None:
    hits = index.as_retriever(similarity_top_k=3).retrieve("which shape has four equal sides?")
    for hit in hits:
        assert hit.node == index.docstore.get_node(hit.node.node_id)


def test_text_retrieve_matches_core_search(index: FLMRIndex) -> None:
    question = "which shape has three sides?"
    hits = index.as_retriever(similarity_top_k=5).retrieve(question)
    core = index.flmr_retriever.search(question=question, k=5)
    assert _ids(hits) == [result.id for result in core]
    assert [hit.score for hit in hits] == pytest.approx([result.score for result in core], abs=1e-4)


def test_joint_retrieve_uses_image_path(index: FLMRIndex, fixture_images: list[Path]) -> None:
    question = "what colour is this shape?"
    bundle = QueryBundle(query_str=question, image_path=str(fixture_images[3]))
    hits = index.as_retriever(similarity_top_k=5).retrieve(bundle)
    core = index.flmr_retriever.search(question=question, image=str(fixture_images[3]), k=5)
    assert _ids(hits) == [result.id for result in core]
    assert [hit.score for hit in hits] == pytest.approx([result.score for result in core], abs=1e-4)


def test_joint_retrieve_differs_from_text_only(index: FLMRIndex, fixture_images: list[Path]) -> None:
    retriever = index.as_retriever(similarity_top_k=9)
    bundle = QueryBundle(query_str="what colour is this shape?", image_path=str(fixture_images[3]))
    joint = {hit.node.node_id: hit.score for hit in retriever.retrieve(bundle)}
    text_only = {hit.node.node_id: hit.score for hit in retriever.text_retrieve(bundle)}
    assert joint != pytest.approx(text_only, abs=1e-3)


def test_query_bundle_with_pil_image_matches_path(index: FLMRIndex, fixture_images: list[Path]) -> None:
    retriever = index.as_retriever(similarity_top_k=4)
    with Image.open(fixture_images[4]) as opened:
        image = opened.convert("RGB")
    by_pil = retriever.retrieve(FLMRQueryBundle(query_str="is this a star?", image=image))
    by_path = retriever.retrieve(QueryBundle(query_str="is this a star?", image_path=str(fixture_images[4])))
    assert _ids(by_pil) == _ids(by_path)
    assert [hit.score for hit in by_pil] == pytest.approx([hit.score for hit in by_path], abs=1e-4)


def test_image_to_image_returns_only_image_nodes(index: FLMRIndex, fixture_images: list[Path]) -> None:
    hits = index.as_retriever(similarity_top_k=2).image_to_image_retrieve(str(fixture_images[5]))
    assert len(hits) == 2
    assert all(hit.node.ref_doc_id.startswith("image-") for hit in hits)


def test_text_to_image_returns_every_image_node(index: FLMRIndex) -> None:
    hits = index.as_retriever(similarity_top_k=5).text_to_image_retrieve("a green triangle")
    assert sorted(hit.node.ref_doc_id for hit in hits) == ["image-b64-2", "image-path-0", "image-path-1"]


def test_from_documents_nodes_keep_image_references(index: FLMRIndex) -> None:
    hits = index.as_retriever(similarity_top_k=3).text_to_image_retrieve("a green triangle")
    assert all(isinstance(hit.node, ImageNode) for hit in hits)


def test_similarity_top_k_above_size_returns_all(index: FLMRIndex) -> None:
    assert len(index.as_retriever(similarity_top_k=50).retrieve("shapes")) == 9


async def test_aretrieve_matches_retrieve(index: FLMRIndex, fixture_images: list[Path]) -> None:
    retriever = index.as_retriever(similarity_top_k=3)
    bundle = QueryBundle(query_str="what is this?", image_path=str(fixture_images[0]))
    asynchronous = await retriever.aretrieve(bundle)
    assert _ids(asynchronous) == _ids(retriever.retrieve(bundle))


async def test_async_image_methods_match_sync(index: FLMRIndex, fixture_images: list[Path]) -> None:
    retriever = index.as_retriever(similarity_top_k=2)
    assert _ids(await retriever.aimage_to_image_retrieve(str(fixture_images[1]))) == _ids(
        retriever.image_to_image_retrieve(str(fixture_images[1]))
    )
    assert _ids(await retriever.atext_to_image_retrieve("a square")) == _ids(retriever.text_to_image_retrieve("a square"))
    assert _ids(await retriever.atext_retrieve("a square")) == _ids(retriever.text_retrieve("a square"))


async def test_aretrieve_keeps_event_loop_running(index: FLMRIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    original = index.search_batch

    def slow_search_batch(queries, k):  # simulates a large model on a slow device
        time.sleep(0.3)
        return original(queries, k)

    monkeypatch.setattr(index, "search_batch", slow_search_batch)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await index.as_retriever(similarity_top_k=2).aretrieve("a blue square")
    task.cancel()
    assert ticks >= 10


def test_retrieve_batch_matches_single_queries(index: FLMRIndex, fixture_images: list[Path]) -> None:
    retriever = index.as_retriever(similarity_top_k=3)
    queries = [
        "what has four sides?",
        QueryBundle(query_str="what colour is this?", image_path=str(fixture_images[2])),
    ]
    batched = retriever.retrieve_batch(queries)
    singles = [retriever.retrieve(query) for query in queries]
    assert [_ids(hits) for hits in batched] == [_ids(hits) for hits in singles]
    for batch_hits, single_hits in zip(batched, singles):
        assert [hit.score for hit in batch_hits] == pytest.approx([hit.score for hit in single_hits], abs=1e-3)


def test_retrieve_missing_image_path_raises(index: FLMRIndex, tmp_path: Path) -> None:
    bundle = QueryBundle(query_str="what is this?", image_path=str(tmp_path / "missing.png"))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        index.as_retriever().retrieve(bundle)


def test_retrieve_empty_query_raises(index: FLMRIndex) -> None:
    with pytest.raises(ValueError, match="query_str"):
        index.as_retriever().retrieve("")


@pytest.mark.parametrize("top_k", [0, -3])
def test_similarity_top_k_not_positive_raises(index: FLMRIndex, top_k: int) -> None:
    with pytest.raises(ValueError, match="similarity_top_k"):
        index.as_retriever(similarity_top_k=top_k)


def test_node_without_text_or_image_raises(preflmr_tiny_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty-node"):
        FLMRIndex(nodes=[TextNode(id_="empty-node", text="  ")], model=str(preflmr_tiny_path), index_dir=tmp_path / "flmr")


def test_remote_image_url_raises(preflmr_tiny_path: Path, tmp_path: Path) -> None:
    node = ImageNode(id_="remote", image_url="https://example.com/cat.png")
    with pytest.raises(ValueError, match="does not download"):
        FLMRIndex(nodes=[node], model=str(preflmr_tiny_path), index_dir=tmp_path / "flmr")


def test_insert_unserialisable_metadata_raises_before_docstore(small_index: FLMRIndex) -> None:
    node = TextNode(id_="bad-metadata", text="a circle", metadata={"when": object()})
    with pytest.raises(ValueError, match="bad-metadata"):
        small_index.insert_nodes([node])
    assert small_index.docstore.get_node("bad-metadata", raise_error=False) is None


def test_missing_node_image_path_raises(preflmr_tiny_path: Path, tmp_path: Path) -> None:
    node = ImageNode(id_="lost", image_path=str(tmp_path / "lost.png"), text="caption")
    with pytest.raises(FileNotFoundError, match="lost.png"):
        FLMRIndex(nodes=[node], model=str(preflmr_tiny_path), index_dir=tmp_path / "flmr")


def test_given_core_retriever_stays_open(preflmr_tiny_path: Path, tmp_path: Path) -> None:
    core = flmr_rag.FLMRRetriever.create(tmp_path / "flmr", model=str(preflmr_tiny_path))
    try:
        built = FLMRIndex(nodes=[TextNode(id_="only", text="A lone passage.")], retriever=core)
        assert built.index_dir == core.index_dir
        built.close()
        assert [result.id for result in core.search(question="lone", k=1)] == ["only"]
    finally:
        core.close()


@pytest.fixture(scope="module")
def small_index(preflmr_tiny_path: Path, fixture_images: list[Path]) -> Iterator[FLMRIndex]:
    """A three-node index in a temporary folder, for the tests that change or persist it."""
    nodes = [
        TextNode(id_="t0", text="The red circle is a round shape."),
        TextNode(id_="t1", text="A blue square has four equal sides."),
        ImageNode(id_="i0", image=base64.b64encode(fixture_images[4].read_bytes()).decode("ascii"), text="a purple star"),
    ]
    built = FLMRIndex(nodes=nodes, model=str(preflmr_tiny_path))
    yield built
    built.close()


class TestMutation:
    """Insert, delete and persistence on an index of its own."""

    def test_nodes_constructor_indexes_text_and_image_nodes(self, small_index: FLMRIndex) -> None:
        assert sorted(small_index.index_struct.nodes_dict) == ["i0", "t0", "t1"]

    def test_insert_then_delete_ref_doc(self, small_index: FLMRIndex) -> None:
        small_index.insert(Document(text="An octagon has eight sides.", doc_id="octagon"))
        found = _ids(small_index.as_retriever(similarity_top_k=10).retrieve("octagon"))
        assert any(small_index.docstore.get_node(node_id).ref_doc_id == "octagon" for node_id in found)
        assert "octagon" in small_index.ref_doc_info

        small_index.delete_ref_doc("octagon", delete_from_docstore=True)
        remaining = _ids(small_index.as_retriever(similarity_top_k=10).retrieve("octagon"))
        assert sorted(remaining) == ["i0", "t0", "t1"]
        assert "octagon" not in small_index.ref_doc_info

    def test_insert_same_id_replaces_node(self, small_index: FLMRIndex) -> None:
        small_index.insert_nodes([TextNode(id_="t1", text="A hexagon has six sides.")])
        hits = small_index.as_retriever(similarity_top_k=10).retrieve("hexagon")
        assert len(hits) == 3
        assert small_index.docstore.get_node("t1").get_content() == "A hexagon has six sides."

    def test_persist_and_load_in_new_process(self, small_index: FLMRIndex, tmp_path: Path) -> None:
        persist_dir = tmp_path / "storage"
        small_index.persist(persist_dir)
        expected = [[hit.node.node_id, hit.score] for hit in small_index.as_retriever(similarity_top_k=3).retrieve("a purple star")]

        script = (
            "import json, sys\n"
            "from llama_index.indices.managed.flmr import FLMRIndex\n"
            "index = FLMRIndex.load_from_disk(sys.argv[1])\n"
            "hits = index.as_retriever(similarity_top_k=3).retrieve('a purple star')\n"
            "print(json.dumps([[hit.node.node_id, hit.score] for hit in hits]))\n"
        )
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        completed = subprocess.run(
            [sys.executable, "-c", script, str(persist_dir)], capture_output=True, text=True, timeout=120, check=False, env=environment
        )
        assert completed.returncode == 0, completed.stderr
        reloaded = json.loads(completed.stdout.strip().splitlines()[-1])
        assert [node_id for node_id, _ in reloaded] == [node_id for node_id, _ in expected]
        assert [score for _, score in reloaded] == pytest.approx([score for _, score in expected], abs=1e-4)

    def test_load_index_from_storage_returns_flmr_index(self, small_index: FLMRIndex, tmp_path: Path) -> None:
        small_index.persist(tmp_path / "storage")
        loaded = load_index_from_storage(StorageContext.from_defaults(persist_dir=str(tmp_path / "storage")))
        try:
            assert isinstance(loaded, FLMRIndex)
            assert sorted(loaded.index_struct.nodes_dict) == sorted(small_index.index_struct.nodes_dict)
        finally:
            loaded.close()

    def test_persist_twice_replaces_snapshot(self, small_index: FLMRIndex, tmp_path: Path) -> None:
        small_index.persist(tmp_path / "storage")
        small_index.persist(tmp_path / "storage")
        loaded = FLMRIndex.load_from_disk(tmp_path / "storage")
        try:
            assert len(loaded.as_retriever(similarity_top_k=10).retrieve("star")) == len(small_index)
        finally:
            loaded.close()

    def test_persist_into_foreign_folder_raises(self, small_index: FLMRIndex, tmp_path: Path) -> None:
        (tmp_path / "storage" / "flmr_index").mkdir(parents=True)
        (tmp_path / "storage" / "flmr_index" / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match="flmr_index"):
            small_index.persist(tmp_path / "storage")

    def test_load_from_disk_without_index_raises(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="flmr_index"):
            FLMRIndex.load_from_disk(tmp_path)
