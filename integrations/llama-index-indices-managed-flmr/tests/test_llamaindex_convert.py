"""Node and query conversions: where LlamaIndex keeps image data and how it reaches flmr_rag."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from llama_index.core.schema import ImageNode, MediaResource, MetadataMode, Node, QueryBundle, TextNode

from llama_index.indices.managed.flmr import FLMRQueryBundle
from llama_index.indices.managed.flmr._convert import node_has_image, node_to_document, query_image


def test_text_node_becomes_text_document() -> None:
    document = node_to_document(TextNode(id_="t", text="a circle", metadata={"source": "book"}), MetadataMode.NONE)
    assert (document.id, document.text, document.image, document.metadata) == ("t", "a circle", None, {"source": "book"})


def test_embed_mode_includes_metadata_text() -> None:
    document = node_to_document(TextNode(id_="t", text="a circle", metadata={"source": "book"}), MetadataMode.EMBED)
    assert "source: book" in document.text


def test_image_node_base64_becomes_bytes(fixture_images: list[Path]) -> None:
    node = ImageNode(id_="i", image=base64.b64encode(fixture_images[0].read_bytes()).decode("ascii"))
    assert node_to_document(node, MetadataMode.NONE).image == fixture_images[0].read_bytes()


def test_image_node_path_is_kept(fixture_images: list[Path]) -> None:
    node = ImageNode(id_="i", image_path=str(fixture_images[1]))
    assert node_to_document(node, MetadataMode.NONE).image == str(fixture_images[1])


def test_image_node_file_url_becomes_path(fixture_images: list[Path]) -> None:
    node = ImageNode(id_="i", image_url=fixture_images[2].as_uri())
    assert node_to_document(node, MetadataMode.NONE).image == str(fixture_images[2])


def test_image_node_data_url_becomes_bytes(fixture_images: list[Path]) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(fixture_images[3].read_bytes()).decode("ascii")
    node = ImageNode(id_="i", image_url=data_url)
    assert node_to_document(node, MetadataMode.NONE).image == fixture_images[3].read_bytes()


def test_node_image_resource_data_becomes_bytes(fixture_images: list[Path]) -> None:
    node = Node(id_="n", image_resource=MediaResource(data=fixture_images[4].read_bytes()))
    assert node_to_document(node, MetadataMode.NONE).image == fixture_images[4].read_bytes()


def test_node_image_resource_path_is_kept(fixture_images: list[Path]) -> None:
    node = Node(id_="n", image_resource=MediaResource(path=fixture_images[5]))
    assert node_to_document(node, MetadataMode.NONE).image == str(fixture_images[5])


def test_node_has_image_for_each_slot(fixture_images: list[Path]) -> None:
    assert node_has_image(ImageNode(image_path=str(fixture_images[0])))
    assert node_has_image(Node(image_resource=MediaResource(path=fixture_images[0])))
    assert not node_has_image(TextNode(text="a circle"))
    assert not node_has_image(ImageNode(text="a caption only"))


def test_invalid_base64_raises() -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        node_to_document(ImageNode(id_="broken", image="%%% not base64 %%%"), MetadataMode.NONE)


def test_query_image_prefers_bundle_image(fixture_images: list[Path]) -> None:
    bundle = FLMRQueryBundle(query_str="q", image_path=str(fixture_images[0]), image=b"raw-bytes")
    assert query_image(bundle) == b"raw-bytes"


def test_query_image_remote_url_raises() -> None:
    with pytest.raises(ValueError, match="does not download"):
        query_image(QueryBundle(query_str="q", image_path="https://example.com/a.png"))


def test_query_without_image_is_none() -> None:
    assert query_image(QueryBundle(query_str="q")) is None
