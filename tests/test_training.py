"""Tests of contrastive fine-tuning: data readers, the trainer, resume and checkpoints."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from PIL import Image

from flmr_rag.models import FLMRConfig, FLMRContextEncoderTokenizer, FLMRModelForRetrieval, FLMRQueryEncoderTokenizer
from flmr_rag.models.image_processing import clip_image_processor
from flmr_rag.training import (
    ContrastiveTrainer,
    TrainingConfig,
    TrainingDataError,
    TrainingExample,
    choose_contexts,
    parameter_groups,
    read_examples,
    read_passages,
)
from flmr_rag.training.text_cache import FrozenTextEncoderCache, cached_text_encoders

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 30)}
WORDS = "the a is of what colour color shape image square circle red blue green yellow using provided obtain documents that address subsequent question this picture".split()


def write_vocab(folder: Path) -> Path:
    """Write a small BERT vocabulary with the special ids FLMR relies on ([PAD] 0, [unused0] 1, [MASK] 103)."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(string.punctuation) + WORDS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return folder


def build_tiny_model(vocab_folder: Path, seed: int = 0) -> FLMRModelForRetrieval:
    query_tokenizer = FLMRQueryEncoderTokenizer.from_pretrained(str(vocab_folder), query_maxlen=24)
    context_tokenizer = FLMRContextEncoderTokenizer.from_pretrained(str(vocab_folder), doc_maxlen=32)
    config = FLMRConfig(
        text_config={"vocab_size": len(query_tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        dim=16,
        mapping_network_prefix_length=4,
        use_transformer_mapping_network=True,
        transformer_mapping_config_base="bert-base-uncased",
        transformer_mapping_num_hidden_layers=1,
        transformer_mapping_config_overrides={"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
        separate_query_and_context_text_encoder=True,
        mask_instruction_token=":",
        vision_model_version="",
    )
    torch.manual_seed(seed)
    model = FLMRModelForRetrieval(config, query_tokenizer=query_tokenizer, context_tokenizer=context_tokenizer)
    model.image_processor = clip_image_processor(32)
    return model


@pytest.fixture(autouse=True)
def single_thread():
    """Run these small models on one thread: on a busy machine, extra threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def problem(tmp_path: Path) -> dict:
    """Four passages (one per colour) and 16 image+question rows whose positive is the image's colour."""
    images = tmp_path / "images"
    images.mkdir()
    passages = [{"id": name, "text": f"the {name} square is {name}"} for name in COLOURS]
    (tmp_path / "passages.jsonl").write_text("\n".join(json.dumps(row) for row in passages) + "\n")

    rows = []
    for index in range(16):
        name = list(COLOURS)[index % 4]
        picture = Image.new("RGB", (32, 32), (245, 240, 235))
        offset = 4 + index // 4
        picture.paste(COLOURS[name], (offset, offset, offset + 16, offset + 16))
        picture.save(images / f"{index}.png")
        question = ["what colour is the shape?", "what is the shape?"][index % 2]
        rows.append({"question": question, "image": f"images/{index}.png", "positive_ids": [name]})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")

    passage_map = read_passages(tmp_path / "passages.jsonl")
    return {
        "folder": tmp_path,
        "passages": passage_map,
        "examples": read_examples(tmp_path / "train.jsonl", passage_map).examples,
        "vocab": write_vocab(tmp_path / "vocab"),
    }


def make_config(output: Path, **overrides) -> TrainingConfig:
    settings = dict(
        output_dir=str(output),
        max_steps=6,
        batch_size=4,
        num_negatives=1,
        train_text_encoders=True,
        train_vision_encoder=True,
        mapping_learning_rate=3e-3,
        encoder_learning_rate=3e-3,
        warmup_steps=2,
        eval_ks=[1, 2],
        cache_frozen_text_encoders=False,
    )
    settings.update(overrides)
    return TrainingConfig(**settings)


# ----------------------------------------------------------------- data readers


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_examples_resolves_relative_image(problem):
    example = problem["examples"][0]
    assert Path(example.image).is_file()


def test_read_examples_invalid_json_raises_with_line(problem):
    path = write_lines(problem["folder"] / "bad.jsonl", ['{"question": "q", "positive_ids": ["red"]}', "{not json"])
    with pytest.raises(TrainingDataError, match=r"bad\.jsonl:2: invalid JSON"):
        read_examples(path, problem["passages"])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q"}, "'positive_ids' is missing"),
        ({"question": "q", "positive_ids": []}, "'positive_ids' is missing or empty"),
        ({"question": "q", "positive_ids": ["purple"]}, "passage id 'purple' is not in the passage file"),
        ({"question": "q", "positive_ids": ["red"], "negative_ids": ["nope"]}, "passage id 'nope'"),
        ({"question": "q", "positive_ids": ["red"], "negative_ids": ["red"]}, "both positive and negative"),
        ({"question": "", "positive_ids": ["red"]}, "neither 'question' nor 'image'"),
        ({"question": "q", "image": "missing.png", "positive_ids": ["red"]}, "image file .*missing.png not found"),
        ({"question": 3, "positive_ids": ["red"]}, "'question' is a int"),
        ({"question": "q", "positive_ids": "red", "instruction": 5}, "'instruction' is a int"),
        ([1, 2], "row is a JSON list"),
    ],
)
def test_read_examples_bad_row_raises(problem, row, message):
    path = write_lines(problem["folder"] / "bad.jsonl", [json.dumps(row)])
    with pytest.raises(TrainingDataError, match=message):
        read_examples(path, problem["passages"])


def test_read_examples_skip_counts_bad_rows(problem):
    lines = [
        '{"question": "q", "positive_ids": ["red"]}',
        "{broken",
        '{"question": "q", "positive_ids": ["purple"]}',
        '{"question": "q2", "positive_ids": ["blue"], "negative_ids": ["red"]}',
    ]
    result = read_examples(write_lines(problem["folder"] / "mixed.jsonl", lines), problem["passages"], on_error="skip")
    assert len(result.examples) == 2
    assert [row.line for row in result.skipped] == [2, 3]


def test_read_examples_all_rows_bad_raises(problem):
    path = write_lines(problem["folder"] / "bad.jsonl", ['{"question": "q", "positive_ids": ["purple"]}'])
    with pytest.raises(TrainingDataError, match="no valid rows"):
        read_examples(path, problem["passages"], on_error="skip")


def test_read_examples_missing_file_raises(problem):
    with pytest.raises(FileNotFoundError, match="training file"):
        read_examples(problem["folder"] / "absent.jsonl", problem["passages"])


def test_read_passages_duplicate_id_raises(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", ['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'])
    with pytest.raises(TrainingDataError, match="duplicate passage id 'a'"):
        read_passages(path)


def test_read_passages_missing_id_raises(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", ['{"text": "x"}'])
    with pytest.raises(TrainingDataError, match=r"p\.jsonl:1: passage has no 'id'"):
        read_passages(path)


def test_read_passages_empty_file_raises(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [""])
    with pytest.raises(TrainingDataError, match="contains no passages"):
        read_passages(path)


def test_choose_contexts_random_negatives_exclude_positives():
    example = TrainingExample("q", None, None, ("a", "b"))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        contexts = choose_contexts(example, ["a", "b", "c", "d", "e"], 3, generator)
        assert contexts[0] in ("a", "b")
        assert sorted(contexts[1:]) == ["c", "d", "e"]


def test_choose_contexts_prefers_row_negatives():
    example = TrainingExample("q", None, None, ("a",), ("d",))
    contexts = choose_contexts(example, ["a", "b", "c", "d"], 1, torch.Generator().manual_seed(0))
    assert contexts == ["a", "d"]


def test_choose_contexts_too_many_negatives_raises():
    example = TrainingExample("q", None, None, ("a",))
    with pytest.raises(ValueError, match="3 negatives requested but only 2 passages"):
        choose_contexts(example, ["a", "b", "c"], 3, torch.Generator())


# ----------------------------------------------------------------- trainer


def test_parameter_groups_default_trains_mapping_only(problem):
    model = build_tiny_model(problem["vocab"])
    groups = parameter_groups(model, TrainingConfig())
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert [group["name"] for group in groups] == ["mapping"]
    assert groups[0]["lr"] == 1e-4
    assert all(name.startswith(("query_vision_projection", "transformer_mapping", "query_text_encoder_linear", "context_text_encoder_linear")) for name in trainable)
    assert not any(name.startswith("query_vision_encoder") for name in trainable)


def test_parameter_groups_encoder_learning_rate(problem):
    model = build_tiny_model(problem["vocab"])
    groups = parameter_groups(model, TrainingConfig(train_text_encoders=True))
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates == {"mapping": 1e-4, "text": 1e-5}


def test_training_config_rejects_nothing_to_train():
    with pytest.raises(ValueError, match="nothing to train"):
        TrainingConfig(train_mapping_networks=False)


def test_trainer_loss_decreases(problem, tmp_path):
    model = build_tiny_model(problem["vocab"])
    config = make_config(tmp_path / "run", max_steps=80, batch_size=4, num_negatives=1, distinct_positives=True)
    result = ContrastiveTrainer(model, problem["passages"], problem["examples"], config).train()
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.7 * first


def test_trainer_evaluates_recall(problem, tmp_path):
    model = build_tiny_model(problem["vocab"])
    config = make_config(tmp_path / "run", max_steps=4, eval_every=2)
    result = ContrastiveTrainer(model, problem["passages"], problem["examples"], config, eval_examples=problem["examples"]).train()
    assert [evaluation["step"] for evaluation in result.evaluations] == [2, 4]
    assert 0.0 <= result.evaluations[-1]["recall@1"] <= result.evaluations[-1]["recall@2"] <= 1.0


def test_trainer_bfloat16_autocast_runs(problem, tmp_path):
    model = build_tiny_model(problem["vocab"])
    result = ContrastiveTrainer(model, problem["passages"], problem["examples"], make_config(tmp_path / "run", max_steps=3, bf16=True)).train()
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_trainer_gradient_checkpointing_matches_plain(problem, tmp_path):
    plain = build_tiny_model(problem["vocab"])
    ContrastiveTrainer(plain, problem["passages"], problem["examples"], make_config(tmp_path / "a", max_steps=2)).train()
    checkpointed = build_tiny_model(problem["vocab"])
    config = make_config(tmp_path / "b", max_steps=2, gradient_checkpointing=True)
    ContrastiveTrainer(checkpointed, problem["passages"], problem["examples"], config).train()
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(checkpointed.state_dict()[name], tensor, rtol=0, atol=1e-5, msg=name)


def test_trainer_cached_text_encoders_match_uncached(problem, tmp_path):
    runs = []
    for name, cache in (("plain", False), ("cached", True)):
        model = build_tiny_model(problem["vocab"])
        config = make_config(tmp_path / name, max_steps=3, train_text_encoders=False, cache_frozen_text_encoders=cache)
        runs.append(ContrastiveTrainer(model, problem["passages"], problem["examples"], config).train().losses)
    assert runs[1] == pytest.approx(runs[0], abs=1e-5)


class Interrupted(Exception):
    pass


def test_trainer_resume_matches_uninterrupted_run(problem, tmp_path):
    uninterrupted = build_tiny_model(problem["vocab"])
    ContrastiveTrainer(uninterrupted, problem["passages"], problem["examples"], make_config(tmp_path / "a", save_every=3)).train()

    interrupted = build_tiny_model(problem["vocab"])
    trainer = ContrastiveTrainer(interrupted, problem["passages"], problem["examples"], make_config(tmp_path / "b", save_every=3))
    original_step = trainer._optimizer_step

    def stop_after_checkpoint(step):
        if step == 4:
            raise Interrupted
        return original_step(step)

    trainer._optimizer_step = stop_after_checkpoint
    with pytest.raises(Interrupted):
        trainer.train()
    assert (tmp_path / "b" / "checkpoint-3" / "training_state.pt").is_file()

    resumed = build_tiny_model(problem["vocab"], seed=123)
    result = ContrastiveTrainer(resumed, problem["passages"], problem["examples"], make_config(tmp_path / "b", save_every=3)).train(resume_from="latest")
    assert result.step == 6
    expected, actual = uninterrupted.state_dict(), resumed.state_dict()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_resume_missing_checkpoint_raises(problem, tmp_path):
    trainer = ContrastiveTrainer(build_tiny_model(problem["vocab"]), problem["passages"], problem["examples"], make_config(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no checkpoint-<step> folder"):
        trainer.train(resume_from="latest")


def test_training_state_loads_weights_only(problem, tmp_path):
    model = build_tiny_model(problem["vocab"])
    ContrastiveTrainer(model, problem["passages"], problem["examples"], make_config(tmp_path / "run", max_steps=4, save_every=2)).train()
    state = torch.load(tmp_path / "run" / "checkpoint-2" / "training_state.pt", weights_only=True)
    assert state["step"] == 2
    assert isinstance(state["torch_rng_state"], torch.Tensor)


def test_saved_model_reloads_and_matches(problem, tmp_path):
    model = build_tiny_model(problem["vocab"])
    ContrastiveTrainer(model, problem["passages"], problem["examples"], make_config(tmp_path / "run")).train()
    reloaded = FLMRModelForRetrieval.from_pretrained(tmp_path / "run")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert (tmp_path / "run" / "preprocessor_config.json").is_file()

    tokens = reloaded.query_tokenizer(["using the provided image: what colour is the shape?"])
    pixels = reloaded.image_processor(images=[Image.open(problem["examples"][0].image)], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = model.eval().query(**tokens, pixel_values=pixels).late_interaction_output
        actual = reloaded.query(**tokens, pixel_values=pixels).late_interaction_output
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_text_cache_matches_encoder(problem):
    model = build_tiny_model(problem["vocab"]).eval()
    model.requires_grad_(False)
    tokens = model.query_tokenizer(["what colour is the shape?", "what is the shape?", "what colour is the shape?"])
    expected = model.query(**tokens).late_interaction_output
    cache = FrozenTextEncoderCache()
    with cached_text_encoders(model, cache):
        first = model.query(**tokens).late_interaction_output
        second = model.query(**tokens).late_interaction_output
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(second, expected, rtol=0, atol=1e-6)
    assert (cache.misses, cache.hits) == (3, 3)


def test_text_cache_rejects_trainable_encoder(problem):
    model = build_tiny_model(problem["vocab"])
    with pytest.raises(ValueError, match="is being trained"):
        with cached_text_encoders(model, FrozenTextEncoderCache()):
            pass


# ----------------------------------------------------------------- command line


def test_train_command_writes_loadable_model(problem, tmp_path, capsys):
    from flmr_rag.cli import main

    start = tmp_path / "start"
    build_tiny_model(problem["vocab"]).save_pretrained(start)
    clip_image_processor(32).save_pretrained(start)
    output = tmp_path / "out"
    status = main([
        "train", str(problem["folder"] / "train.jsonl"), "--passages", str(problem["folder"] / "passages.jsonl"),
        "--model", str(start), "--output", str(output), "--steps", "3", "--batch-size", "4",
        "--eval", str(problem["folder"] / "train.jsonl"), "--device", "cpu", "--quiet",
    ])
    assert status == 0
    assert "recall@1" in capsys.readouterr().out
    assert FLMRModelForRetrieval.from_pretrained(output).config.dim == 16


def test_train_command_bad_steps_is_usage_error(problem, tmp_path):
    from flmr_rag.cli import main

    status = main(["train", str(problem["folder"] / "train.jsonl"), "--passages", "p.jsonl", "--output", str(tmp_path), "--steps", "0"])
    assert status == 2


def test_train_command_bad_row_fails_with_line(problem, tmp_path, capsys):
    from flmr_rag.cli import main

    bad = write_lines(tmp_path / "bad.jsonl", ['{"question": "q", "positive_ids": ["purple"]}'])
    status = main(["train", str(bad), "--passages", str(problem["folder"] / "passages.jsonl"), "--output", str(tmp_path / "o")])
    assert status == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
