"""The offline end-to-end demo: train (or load from the cache), index, ask, evaluate.

1. easy-vqa train split -> the retriever (FLMR with MiniLM text, a small ViT) is fine-tuned with
   :class:`flmr_rag.training.ContrastiveTrainer`, and the reader (small T5) is trained on
   (question, gold passage) -> answer pairs. Both are cached under the user's cache folder,
   keyed by a hash of their recipe.
2. The 24-passage knowledge base is indexed with :class:`flmr_rag.FLMRRetriever`.
3. Retrieval is scored exactly on the test questions. The query text and the image contribute
   separate token blocks, so each distinct question string and each image is encoded once.
4. Answers come from ``FLMRRetriever.ask`` with ``k=1``. Its answer is then a function of the
   question and the top passage only, so ``ask`` runs once per distinct (question, top passage)
   pair and its answer is reported for every test question of that pair.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from flmr_rag.demo.cache import cache_root, recipe_key
from flmr_rag.demo.data import EasyVQASplit, load_split
from flmr_rag.demo.knowledge_base import knowledge_base, passage_id
from flmr_rag.demo.models import RetrieverRecipe, build_retriever_model, reader_tokenizer
from flmr_rag.demo.reader import ReaderRecipe, build_reader, encode_examples, reader_prompt, save_reader, train_reader
from flmr_rag.progress import progress

logger = logging.getLogger(__name__)

RECALL_KS = (1, 2, 3, 5, 10)


@dataclass(frozen=True)
class DemoSettings:
    """What one demo run trains and evaluates.

    Attributes:
        retriever, reader: the two training recipes (their hashes key the cache).
        max_test_questions: test questions evaluated (a seeded sample); None takes all 9,673.
        heldout_images: train images kept out of retriever training for Recall@K during it.
        answer_k: passages given to ``ask``; 1 makes answers a function of the top passage.
        report_examples: test questions shown in the HTML report.
    """

    retriever: RetrieverRecipe = field(default_factory=RetrieverRecipe)
    reader: ReaderRecipe = field(default_factory=ReaderRecipe)
    max_test_questions: int | None = None
    heldout_images: int = 100
    answer_k: int = 1
    report_examples: int = 8


FULL_SETTINGS = DemoSettings()
QUICK_SETTINGS = DemoSettings(
    retriever=RetrieverRecipe(steps=100, gradient_accumulation_steps=1),
    reader=ReaderRecipe(steps=150),
    max_test_questions=200,
    heldout_images=20,
    report_examples=4,
)


@dataclass
class DemoResult:
    """Metrics, timings (seconds) and report material of one demo run."""

    metrics: dict[str, float]
    accuracy_by_type: dict[str, tuple[float, int]]
    recall_curve: dict[int, float]
    timings: dict[str, float]
    examples: list[dict[str, Any]]
    cached: dict[str, bool]
    folders: dict[str, str]


def run_demo(
    settings: DemoSettings = FULL_SETTINGS,
    cache_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    parallel_training: bool = False,
) -> DemoResult:
    """Run the whole demo and return its metrics.

    Trains only what the cache lacks (everything with ``retrain``). With ``parallel_training``
    the reader trains in a separate process on one CPU thread while this process trains the
    retriever, which on a small CPU finishes sooner than two trainings in turn.
    """
    from flmr_rag.generation import AnswerGenerator
    from flmr_rag.retriever import FLMRRetriever

    timings: dict[str, float] = {}
    started = time.perf_counter()
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)

    clock = time.perf_counter()
    test = load_split("test", max_questions=settings.max_test_questions)
    train_split: list[EasyVQASplit] = []

    def train_data() -> EasyVQASplit:
        if not train_split:
            train_split.append(load_split("train"))
        return train_split[0]

    timings["load data"] = time.perf_counter() - clock

    reader_worker = None
    if parallel_training and not _cached_folder(root, reader_key(settings), retrain)[1]:
        reader_worker = ReaderWorker(settings, root, retrain)
    retriever_folder, retriever_cached, retriever_seconds = ensure_retriever(settings, root, retrain, train_data)
    timings["train retriever"] = retriever_seconds
    if reader_worker is not None:
        reader_folder, reader_cached, reader_seconds = reader_worker.join()
    else:
        reader_folder, reader_cached, reader_seconds = ensure_reader(settings, root, retrain, train_data)
    timings["train reader"] = reader_seconds

    with tempfile.TemporaryDirectory(prefix="flmr-rag-demo-index-") as index_dir:
        clock = time.perf_counter()
        retriever = FLMRRetriever.create(Path(index_dir) / "index", model=str(retriever_folder), device="cpu", dtype="float32")
        retriever.add(knowledge_base(), show_progress=False)
        timings["index"] = time.perf_counter() - clock

        try:
            clock = time.perf_counter()
            rankings = rank_passages(retriever, test)
            timings["retrieve"] = time.perf_counter() - clock

            clock = time.perf_counter()
            generator = AnswerGenerator.from_pretrained(str(reader_folder), device="cpu", dtype="float32", num_beams=1, max_new_tokens=4, batch_size=8)
            answers = answer_questions(retriever, generator, test, rankings, settings.answer_k)
            examples = report_examples(retriever, test, rankings, answers, settings.report_examples)
            timings["answer"] = time.perf_counter() - clock
        finally:
            retriever.close()

    metrics, by_type, curve = score(test, rankings, answers)
    timings["total"] = time.perf_counter() - started
    return DemoResult(
        metrics=metrics,
        accuracy_by_type=by_type,
        recall_curve=curve,
        timings=timings,
        examples=examples,
        cached={"retriever": retriever_cached, "reader": reader_cached},
        folders={"retriever": str(retriever_folder), "reader": str(reader_folder)},
    )


# ----------------------------------------------------------------- training (cached)


def _cached_folder(root: Path, key: str, retrain: bool) -> tuple[Path, bool]:
    folder = root / key
    if (folder / "config.json").is_file() and not retrain:
        logger.info("using the cached model in %s", folder)
        return folder, True
    return folder, False


def _publish(staging: Path, folder: Path) -> None:
    """Move a finished model folder into place (an interrupted run leaves only ``staging``)."""
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)


def ensure_retriever(settings: DemoSettings, root: Path, retrain: bool, train_data) -> tuple[Path, bool, float]:
    """Return ``(folder, cached, seconds)`` of the fine-tuned retriever, training it when needed."""
    from flmr_rag.training import ContrastiveTrainer, TrainingConfig
    from flmr_rag.training.data import Passage, TrainingExample

    recipe = settings.retriever
    key = recipe_key("retriever", recipe.to_dict(), {"heldout_images": settings.heldout_images, "passages": [d.text for d in knowledge_base()]})
    folder, cached = _cached_folder(root, key, retrain)
    if cached:
        return folder, True, 0.0

    clock = time.perf_counter()
    split = train_data()
    passages = {document.id: Passage(document.id, document.text) for document in knowledge_base()}
    image_ids = sorted(split.image_paths)
    heldout = set(torch.randperm(len(image_ids), generator=torch.Generator().manual_seed(recipe.seed))[: settings.heldout_images].tolist())
    heldout_ids = {image_ids[index] for index in heldout}
    train_rows, eval_rows = [], []
    for question in split.questions:
        row = TrainingExample(question.text, str(split.image_paths[question.image_id]), None, (passage_id(*split.kind_of(question)),))
        (eval_rows if question.image_id in heldout_ids else train_rows).append(row)

    model = build_retriever_model(recipe)
    staging = root / f".{key}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    config = TrainingConfig(
        output_dir=str(staging),
        max_steps=recipe.steps,
        batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        distinct_positives=True,
        num_negatives=0,
        use_in_batch_negatives=True,
        train_mapping_networks=True,
        train_text_encoders=False,
        train_vision_encoder=True,
        mapping_learning_rate=recipe.learning_rate,
        vision_learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
        eval_ks=[1, 5],
        seed=recipe.seed,
    )
    trainer = ContrastiveTrainer(model, passages, train_rows, config, eval_examples=eval_rows, image_processor=model.image_processor)
    result = trainer.train()
    if result.evaluations:
        logger.info("retriever on %d held-out train questions: %s", len(eval_rows), result.evaluations[-1])
    _publish(staging, folder)
    return folder, False, time.perf_counter() - clock


def reader_key(settings: DemoSettings) -> str:
    """Return the cache key of the reader recipe."""
    return recipe_key("reader", asdict(settings.reader), {"passages": [d.text for d in knowledge_base()]})


class ReaderWorker:
    """Trains the reader in a child process (one CPU thread) while the caller does other work."""

    def __init__(self, settings: DemoSettings, root: Path, retrain: bool) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.process = context.Process(target=_train_reader_in_worker, args=(settings, str(root), retrain, self.results), daemon=True)
        self.process.start()
        logger.info("training the reader in worker process %d", self.process.pid)

    def join(self) -> tuple[Path, bool, float]:
        """Wait for the worker and return ``(folder, cached, seconds)``; raises RuntimeError if it failed."""
        self.process.join()
        if self.process.exitcode != 0:
            raise RuntimeError(f"reader training failed in worker process {self.process.pid} (exit code {self.process.exitcode}); run the demo with --verbose to see its log")
        folder, cached, seconds = self.results.get(timeout=10)
        return Path(folder), cached, seconds


def _train_reader_in_worker(settings: DemoSettings, root: str, retrain: bool, results) -> None:
    from flmr_rag.progress import set_progress_enabled

    torch.set_num_threads(1)
    set_progress_enabled(False)
    folder, cached, seconds = ensure_reader(settings, Path(root), retrain, lambda: load_split("train"))
    results.put((str(folder), cached, seconds))


def ensure_reader(settings: DemoSettings, root: Path, retrain: bool, train_data) -> tuple[Path, bool, float]:
    """Return ``(folder, cached, seconds)`` of the trained reader, training it when needed."""
    from flmr_rag.demo.knowledge_base import passage_text

    recipe = settings.reader
    key = reader_key(settings)
    folder, cached = _cached_folder(root, key, retrain)
    if cached:
        return folder, True, 0.0

    clock = time.perf_counter()
    split = train_data()
    pairs: dict[tuple[str, tuple[str, str]], str] = {}
    for question in split.questions:
        pairs[(question.text, split.kind_of(question))] = question.answer
    prompts = [reader_prompt(text, passage_text(*kind)) for text, kind in pairs]
    tokenizer = reader_tokenizer()
    examples = encode_examples(tokenizer, prompts, list(pairs.values()), recipe.max_input_length)

    with torch.random.fork_rng():
        model = build_reader(tokenizer, recipe)
        train_reader(model, examples, recipe)
    staging = root / f".{key}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    save_reader(model, tokenizer, staging, recipe.max_input_length)
    _publish(staging, folder)
    return folder, False, time.perf_counter() - clock


# ----------------------------------------------------------------- evaluation


def rank_passages(retriever: Any, split: EasyVQASplit) -> list[tuple[list[str], list[float]]]:
    """Rank every passage for every question of ``split`` by exact late interaction.

    A query's token matrix is its text block (instruction and question) followed by its vision
    block (32 image tokens), each L2-normalised per token, so both blocks are computed once per
    distinct question and once per image and then joined. Returns, per question, all passage
    ids best first and their scores.
    """
    from flmr_rag.encoding import Query
    from flmr_rag.scoring import late_interaction_scores
    from flmr_rag.training.evaluation import encode_passages_padded
    from flmr_rag.training.data import Passage
    from flmr_rag.training.text_cache import FrozenTextEncoderCache, cached_text_encoders

    model, encoder = retriever.model, retriever.encoder
    documents = [retriever.get(doc_id) for doc_id in retriever.ids()]
    passage_list = [Passage(document.id, document.text) for document in documents]
    passage_embeddings, passage_mask = encode_passages_padded(encoder, passage_list)
    ids = [passage.id for passage in passage_list]

    texts = sorted({question.text for question in split.questions})
    image_ids = sorted(split.image_paths)
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    with torch.inference_mode():
        query_texts = [encoder.query_text(Query(question=text, image="image")) for text in texts]
        tokens = model.query_tokenizer(query_texts)
        text_blocks = model.query(tokens["input_ids"], tokens["attention_mask"], concat_output_from_vision_encoder=False).late_interaction_output.float()

        vision_blocks = []
        instruction_only = model.query_tokenizer([query_texts[0]])
        with cached_text_encoders(model, FrozenTextEncoderCache(max_rows=4)):
            for start in progress(range(0, len(image_ids), 128), desc="encode test images", unit="batch"):
                batch = image_ids[start : start + 128]
                pixels = encoder.pixel_values([split.image_paths[image_id] for image_id in batch])
                output = model.query(
                    instruction_only["input_ids"].expand(len(batch), -1),
                    instruction_only["attention_mask"].expand(len(batch), -1),
                    pixel_values=pixels,
                    concat_output_from_text_encoder=False,
                    concat_output_from_vision_encoder=True,
                )
                vision_blocks.append(output.late_interaction_output.float())
    vision = torch.cat(vision_blocks)

    text_row = {text: row for row, text in enumerate(texts)}
    image_row = {image_id: row for row, image_id in enumerate(image_ids)}
    rankings = []
    for start in range(0, len(split.questions), 512):
        batch = split.questions[start : start + 512]
        queries = torch.cat(
            [text_blocks[[text_row[q.text] for q in batch]], vision[[image_row[q.image_id] for q in batch]]], dim=1
        )
        scores = late_interaction_scores(queries, passage_embeddings, passage_mask)
        order = scores.argsort(dim=1, descending=True)
        for row in range(len(batch)):
            ranked = order[row].tolist()
            rankings.append(([ids[index] for index in ranked], [float(scores[row, index]) for index in ranked]))
    return rankings


def answer_questions(retriever: Any, generator: Any, split: EasyVQASplit, rankings, k: int) -> list[dict[str, Any]]:
    """Answer every test question through ``retriever.ask``.

    With ``k == 1`` one ``ask`` per distinct (question, top passage) pair serves every question
    of the pair. That call's retrieved passage must be the pair's top passage. When it is not,
    each question of the pair is asked on its own. With ``k > 1`` every question is asked.
    Returns per question ``{"answer", "passage_id"}``.
    """
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, question in enumerate(split.questions):
        key = (question.text, rankings[position][0][0]) if k == 1 else (question.text, str(position))
        groups[key].append(position)

    results: list[dict[str, Any] | None] = [None] * len(split.questions)
    mismatched: list[int] = []
    for (text, top_id), members in progress(groups.items(), desc="answer questions", unit="ask", total=len(groups)):
        first = split.questions[members[0]]
        answer = retriever.ask(text, image=str(split.image_paths[first.image_id]), k=k, generator=generator, exact=True)
        if k == 1 and answer.passage_id != top_id:
            mismatched.extend(members)
            continue
        for position in members:
            results[position] = {"answer": answer.answer, "passage_id": answer.passage_id}

    for position in mismatched:
        question = split.questions[position]
        answer = retriever.ask(question.text, image=str(split.image_paths[question.image_id]), k=k, generator=generator, exact=True)
        results[position] = {"answer": answer.answer, "passage_id": answer.passage_id}
    if mismatched:
        logger.info("%d questions were asked one by one (their search top passage differed from the exact ranking)", len(mismatched))
    logger.info("ask ran %d times for %d questions", len(groups) + len(mismatched), len(split.questions))
    return results  # type: ignore[return-value]


def report_examples(retriever: Any, split: EasyVQASplit, rankings, answers, count: int) -> list[dict[str, Any]]:
    """Pick ``count`` test questions (spread over the split) for the HTML report, with top passages."""
    if count <= 0 or not split.questions:
        return []
    step = max(len(split.questions) // count, 1)
    chosen = list(range(0, len(split.questions), step))[:count]
    examples = []
    for position in chosen:
        question = split.questions[position]
        ids, scores = rankings[position]
        examples.append({
            "question": question.text,
            "image_path": str(split.image_paths[question.image_id]),
            "gold_answer": question.answer,
            "gold_passage": passage_id(*split.kind_of(question)),
            "answer": answers[position]["answer"],
            "top_passages": [{"id": ids[i], "score": scores[i], "text": retriever.get(ids[i]).text} for i in range(min(3, len(ids)))],
        })
    return examples


def score(split: EasyVQASplit, rankings, answers) -> tuple[dict[str, float], dict[str, tuple[float, int]], dict[int, float]]:
    """Return (metrics, accuracy by question type, Recall@K curve) of a demo run."""
    from flmr_rag.evaluation import vqa_score

    count = len(split.questions)
    gold = [passage_id(*split.kind_of(question)) for question in split.questions]
    curve = {k: sum(gold[i] in rankings[i][0][:k] for i in range(count)) / count for k in RECALL_KS}

    vqa_scores = [vqa_score(answers[i]["answer"], [question.answer] * 10) for i, question in enumerate(split.questions)]
    by_type: dict[str, list[float]] = defaultdict(list)
    for question, value in zip(split.questions, vqa_scores):
        by_type[question.question_type].append(value)
    metrics = {
        "recall_at_1": curve[1],
        "recall_at_5": curve[5],
        "vqa_score": sum(vqa_scores) / count,
        "num_questions": count,
    }
    accuracy = {name: (sum(values) / len(values), len(values)) for name, values in sorted(by_type.items())}
    return metrics, accuracy, curve
