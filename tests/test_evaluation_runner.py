"""Evaluation runs over a real index (the tiny PreFLMR fixture) and the ``flmr-rag eval`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flmr_rag.cli import main
from flmr_rag.evaluation import evaluate, exact_match, format_table, read_dataset, vqa_score
from flmr_rag.evaluation.runner import EvaluationExample, effective_ks

PASSAGES = {
    "circle": "A circle is a round shape; this one is red.",
    "square": "A square has four equal sides and is often blue.",
    "triangle": "A triangle has three sides; green triangles are common in signs.",
    "ellipse": "An ellipse is an oval shape, here coloured orange.",
    "star": "A star shape with five points, painted purple.",
    "cross": "A black cross with a yellow dot in the middle.",
    "sky": "The sky is blue on a clear day.",
}
ROWS = [
    {"question": "What colour is the circle?", "image": "img0_red_circle.png", "answers": ["red"] * 6 + ["crimson"] * 4, "pos_item_ids": ["circle"]},
    {"question": "How many sides does the square have?", "image": "img1_blue_square.png", "answers": ["four", "4"], "pos_item_ids": ["square"]},
    {"question": "Which shape is green?", "image": "img2_green_triangle.png", "answers": ["triangle"], "pos_item_ids": ["triangle", "sky"]},
    {"question": "What shape is shown?", "image": "img3_orange_ellipse.png", "answers": ["oval"]},
]


@pytest.fixture(scope="module")
def index_dir(build_text_index) -> Path:
    return build_text_index("eval", PASSAGES)


@pytest.fixture(scope="module")
def dataset(preflmr_tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    for row in ROWS:
        (folder / row["image"]).write_bytes((preflmr_tiny_path / "images" / row["image"]).read_bytes())
    path = folder / "queries.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in ROWS) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def generator_folder(build_tiny_t5) -> Path:
    return build_tiny_t5("t5-bert-vocab", seed=0)


def single_search_rankings(retriever, examples: list[EvaluationExample]) -> list[list[str]]:
    """Ranked ids of every document for each example, from one single-query search each."""
    return [
        [result.id for result in retriever.search(question=example.question, image=example.image, k=len(PASSAGES))]
        for example in examples
    ]


def expected_recall(rankings: list[list[str]], examples: list[EvaluationExample], k: int) -> float:
    hits = [
        float(any(passage_id in example.positive_ids for passage_id in ranking[:k]))
        for ranking, example in zip(rankings, examples)
        if example.positive_ids
    ]
    return sum(hits) / len(hits)


def expected_pseudo_recall(rankings: list[list[str]], examples: list[EvaluationExample], k: int) -> float:
    hits = []
    for ranking, example in zip(rankings, examples):
        text = " ".join(PASSAGES[passage_id].lower() for passage_id in ranking[:k])
        hits.append(float(any(answer.lower() in text for answer in example.answers)))
    return sum(hits) / len(hits)


def test_read_dataset_resolves_images_and_fields(dataset: Path) -> None:
    examples = read_dataset(dataset)

    assert len(examples) == 4
    assert examples[0].image == str(dataset.parent / "img0_red_circle.png")
    assert examples[2].positive_ids == ["triangle", "sky"]
    assert examples[3].positive_ids == []


def test_read_dataset_limit(dataset: Path) -> None:
    assert len(read_dataset(dataset, limit=2)) == 2


def test_read_dataset_bad_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "ok"}\n{"question": \n', encoding="utf-8")

    with pytest.raises(ValueError, match=r"broken.jsonl:2: invalid JSON"):
        read_dataset(path)


def test_read_dataset_row_without_query_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty-row.jsonl"
    path.write_text('{"answers": ["red"]}\n', encoding="utf-8")

    with pytest.raises(ValueError, match="neither a question nor an image"):
        read_dataset(path)


def test_read_dataset_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_dataset(tmp_path / "absent.jsonl")


def test_effective_ks_caps_at_collection_size() -> None:
    ks, notes = effective_ks([1, 5, 10, 20, 50, 100], collection_size=7)

    assert ks == [1, 5, 7]
    assert "K=10, 20, 50, 100 exceed the 7 documents" in notes[0]


def test_effective_ks_rejects_empty_index() -> None:
    with pytest.raises(ValueError, match="contains no documents"):
        effective_ks([1], collection_size=0)


def test_evaluate_recall_matches_single_searches(retriever, dataset: Path) -> None:
    examples = read_dataset(dataset)
    rankings = single_search_rankings(retriever, examples)
    result = evaluate(retriever, examples, ks=[1, 2, 3, 100], batch_size=3)

    assert result["ks"] == [1, 2, 3, 7]
    for k in (1, 2, 3, 7):
        assert result["metrics"][f"Recall@{k}"] == pytest.approx(expected_recall(rankings, examples, k))
    assert result["metrics"]["Recall@7"] == 1.0
    assert result["counts"] == {"with_positive_ids": 3, "with_answers": 4}


def test_evaluate_pseudo_recall_matches_single_searches(retriever, dataset: Path) -> None:
    examples = read_dataset(dataset)
    rankings = single_search_rankings(retriever, examples)
    result = evaluate(retriever, examples, ks=[1, 3])

    for k in (1, 3):
        assert result["metrics"][f"PRRecall@{k}"] == pytest.approx(expected_pseudo_recall(rankings, examples, k))


def test_evaluate_without_positive_ids_notes_it(retriever) -> None:
    examples = [EvaluationExample(question="What is round?", answers=["circle"])]
    result = evaluate(retriever, examples, ks=[1])

    assert result["metrics"]["Recall@1"] is None
    assert any("pos_item_ids" in note for note in result["notes"])


def test_evaluate_with_generator_scores_predictions(retriever, dataset: Path, generator_folder: Path) -> None:
    from flmr_rag.generation import AnswerGenerator

    generator = AnswerGenerator.from_pretrained(generator_folder, device="cpu", num_beams=2, max_new_tokens=3)
    examples = read_dataset(dataset)
    result = evaluate(retriever, examples, ks=[1, 5], generator=generator, generation_k=3)

    predictions = result["predictions"]
    assert len(predictions) == 4
    expected_vqa = sum(vqa_score(p["prediction"], p["answers"]) for p in predictions) / 4
    expected_em = sum(exact_match(p["prediction"], p["answers"]) for p in predictions) / 4
    assert result["metrics"]["VQA"] == pytest.approx(expected_vqa)
    assert result["metrics"]["EM"] == pytest.approx(expected_em)
    assert all(p["passage_id"] in PASSAGES for p in predictions)


def test_evaluate_generator_needs_questions(retriever, generator_folder: Path) -> None:
    from flmr_rag.generation import AnswerGenerator

    generator = AnswerGenerator.from_pretrained(generator_folder, device="cpu", num_beams=1, max_new_tokens=2)
    examples = [EvaluationExample(question=None, image=None, answers=["red"])]

    with pytest.raises(ValueError, match="example 0 has no question"):
        evaluate(retriever, examples, generator=generator)


def test_format_table_lists_every_metric(retriever, dataset: Path) -> None:
    result = evaluate(retriever, read_dataset(dataset), ks=[1, 5, 10])
    table = format_table(result)

    assert "Recall" in table
    assert "PRRecall" in table
    assert "@7" in table
    assert "note: K=10 exceed the 7 documents" in table


def test_eval_command_prints_table_and_writes_json(
    index_dir: Path, dataset: Path, generator_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "result.json"
    status = main([
        "eval", str(index_dir), "--dataset", str(dataset), "--generator", str(generator_folder),
        "--json", str(output), "--device", "cpu", "--num-beams", "2", "--max-new-tokens", "3", "--quiet",
    ])  # fmt: skip

    printed = capsys.readouterr().out
    assert status == 0
    assert "Recall" in printed
    assert "VQA score" in printed
    written = json.loads(output.read_text(encoding="utf-8"))
    assert written["ks"] == [1, 5, 7]
    assert set(written["metrics"]) == {"Recall@1", "Recall@5", "Recall@7", "PRRecall@1", "PRRecall@5", "PRRecall@7", "EM", "VQA"}


def test_eval_command_missing_dataset_is_usage_error(index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["eval", str(index_dir), "--dataset", str(tmp_path / "absent.jsonl"), "--quiet"])

    assert status == 2
    assert "absent.jsonl does not exist" in capsys.readouterr().err


def test_eval_command_rejects_zero_k(index_dir: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["eval", str(index_dir), "--dataset", str(dataset), "-k", "0", "5", "--quiet"])

    assert status == 2
    assert "-k values must be at least 1" in capsys.readouterr().err
