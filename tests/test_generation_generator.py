"""AnswerGenerator over tiny randomly initialised T5, GPT-2 and BLIP-2 models (no downloads)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from flmr_rag.generation import AnswerGenerator, PromptTemplate

VOCAB_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "preflmr-tiny" / "query_tokenizer"
QUESTION = "what colour is the shape?"
PASSAGES = [
    "the sky is blue on a clear day",
    "grass is green and grows in fields",
    "a red car parked by the road",
    "bananas are a yellow fruit",
    "snow is white and cold",
]
SEP_ID = 102  # [SEP] in the bert-base-uncased vocabulary, used as the end of an answer


@pytest.fixture(scope="module")
def bert_tokenizer() -> BertTokenizer:
    if not (VOCAB_FOLDER / "vocab.txt").is_file():
        pytest.skip(f"vocabulary folder {VOCAB_FOLDER} is absent")
    return BertTokenizer.from_pretrained(str(VOCAB_FOLDER))


def build_t5(vocab_size: int, seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        decoder_start_token_id=0, eos_token_id=SEP_ID, pad_token_id=0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config)


@pytest.fixture(scope="module")
def t5_generator(bert_tokenizer: BertTokenizer) -> AnswerGenerator:
    return AnswerGenerator(build_t5(len(bert_tokenizer)), bert_tokenizer, num_beams=3, max_new_tokens=6, batch_size=8)


@pytest.fixture(scope="module")
def gpt2_generator(bert_tokenizer: BertTokenizer) -> AnswerGenerator:
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=len(bert_tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=101, eos_token_id=SEP_ID, pad_token_id=0,
    )  # fmt: skip
    tokenizer = BertTokenizer.from_pretrained(str(VOCAB_FOLDER))
    return AnswerGenerator(GPT2LMHeadModel(config), tokenizer, num_beams=3, max_new_tokens=6, batch_size=8)


@pytest.fixture(scope="module")
def blip2_generator() -> AnswerGenerator:
    if not (VOCAB_FOLDER / "vocab.txt").is_file():
        pytest.skip(f"vocabulary folder {VOCAB_FOLDER} is absent")
    tokenizer = BertTokenizer.from_pretrained(str(VOCAB_FOLDER))
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    torch.manual_seed(2)
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        qformer_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 4, "intermediate_size": 64, "encoder_hidden_size": 32},
        text_config={"model_type": "t5", "vocab_size": len(tokenizer), "d_model": 32, "d_kv": 8, "d_ff": 64,
                     "num_layers": 1, "num_heads": 4, "decoder_start_token_id": 0, "eos_token_id": SEP_ID,
                     "pad_token_id": 0},
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    return AnswerGenerator(Blip2ForConditionalGeneration(config), processor, num_beams=2, max_new_tokens=5)


def build_blip2_opt() -> AnswerGenerator:
    tokenizer = BertTokenizer.from_pretrained(str(VOCAB_FOLDER))
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    torch.manual_seed(6)
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        qformer_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 4, "intermediate_size": 64, "encoder_hidden_size": 32},
        text_config={"model_type": "opt", "vocab_size": len(tokenizer), "hidden_size": 32, "ffn_dim": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 4, "word_embed_proj_dim": 32,
                     "max_position_embeddings": 256, "bos_token_id": 101, "eos_token_id": SEP_ID, "pad_token_id": 0},
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    return AnswerGenerator(Blip2ForConditionalGeneration(config), processor, num_beams=2, max_new_tokens=4)


@pytest.fixture(scope="module")
def query_image() -> Image.Image:
    image = Image.new("RGB", (40, 40), (240, 240, 230))
    for x in range(10, 30):
        for y in range(10, 30):
            image.putpixel((x, y), (200, 30, 30))
    return image


def teacher_forced_log_prob_seq2seq(generator: AnswerGenerator, prompt: str, answer_ids: list[int]) -> float:
    """Sum of log p(answer token | prompt, previous answer tokens) from one forward pass."""
    encoded = generator.tokenizer([prompt], return_tensors="pt", return_token_type_ids=False)
    labels = torch.tensor([answer_ids])
    with torch.no_grad():
        logits = generator.model(**encoded, labels=labels).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)[0]
    return float(log_probs[torch.arange(len(answer_ids)), labels[0]].sum())


def teacher_forced_log_prob_causal(generator: AnswerGenerator, prompt: str, answer_ids: list[int]) -> float:
    prompt_ids = generator.tokenizer(prompt)["input_ids"]
    while prompt_ids[-1] == SEP_ID:
        prompt_ids = prompt_ids[:-1]
    input_ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = generator.model(input_ids=input_ids).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)[0]
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(answer_ids))
    return float(log_probs[positions, torch.tensor(answer_ids)].sum())


def trade_off_scores(generation_scores: list[float]) -> list[float]:
    """Retrieval scores for which neither the best retrieved nor the best generated passage wins.

    The best-generating passage gets a low score. Passage j (the better of two others) is lifted
    above it by more than the generation gap. Passage i gets the top retrieval score, but too
    little to beat j.
    """
    order = sorted(range(len(generation_scores)), key=lambda index: -generation_scores[index])
    best, j, i = order[0], order[1], order[2]
    scores = [-5.0] * len(generation_scores)
    scores[best] = 0.0
    scores[j] = generation_scores[best] - generation_scores[j] + 1.0
    scores[i] = scores[j] + (generation_scores[j] - generation_scores[i]) / 2
    return scores


@pytest.mark.parametrize("length_normalize", [True, False])
def test_t5_joint_choice_matches_recomputed_scores(t5_generator: AnswerGenerator, length_normalize: bool) -> None:
    t5_generator.length_normalize = length_normalize
    try:
        uniform = t5_generator.generate(QUESTION, PASSAGES)
        retrieval_scores = trade_off_scores([candidate.generation_score for candidate in uniform.candidates])
        answer = t5_generator.generate(QUESTION, PASSAGES, retrieval_scores=retrieval_scores)
    finally:
        t5_generator.length_normalize = True

    priors = torch.log_softmax(torch.tensor(retrieval_scores, dtype=torch.float64), dim=0).tolist()
    recomputed = []
    for index, candidate in enumerate(answer.candidates):
        prompt = t5_generator.prompt_template.format(QUESTION, passage=PASSAGES[index])
        log_prob = teacher_forced_log_prob_seq2seq(t5_generator, prompt, candidate.token_ids)
        assert candidate.generation_log_prob == pytest.approx(log_prob, abs=1e-4)
        term = log_prob / len(candidate.token_ids) if length_normalize else log_prob
        recomputed.append(priors[index] + term)

    best = max(range(len(recomputed)), key=recomputed.__getitem__)
    assert answer.passage_index == best
    assert answer.answer == answer.candidates[best].answer
    assert best != max(range(len(retrieval_scores)), key=retrieval_scores.__getitem__)
    assert best != max(range(len(uniform.candidates)), key=lambda index: uniform.candidates[index].generation_score)


def test_t5_greedy_scores_match_teacher_forcing(t5_generator: AnswerGenerator, bert_tokenizer: BertTokenizer) -> None:
    greedy = AnswerGenerator(t5_generator.model, bert_tokenizer, num_beams=1, max_new_tokens=6)
    candidate = greedy.generate(QUESTION, PASSAGES[:1]).candidates[0]

    prompt = greedy.prompt_template.format(QUESTION, passage=PASSAGES[0])
    expected = teacher_forced_log_prob_seq2seq(greedy, prompt, candidate.token_ids)

    assert candidate.generation_log_prob == pytest.approx(expected, abs=1e-4)


def test_t5_candidate_scores_are_consistent(t5_generator: AnswerGenerator) -> None:
    answer = t5_generator.generate(QUESTION, PASSAGES[:3], retrieval_scores=[2.0, 1.0, 0.5], passage_ids=["a", "b", "c"])

    for candidate in answer.candidates:
        assert candidate.joint_score == pytest.approx(candidate.retrieval_log_prob + candidate.generation_score)
        assert candidate.generation_score == pytest.approx(candidate.generation_log_prob / candidate.num_tokens)
    assert [candidate.passage_id for candidate in answer.candidates] == ["a", "b", "c"]
    assert sum(math.exp(candidate.retrieval_log_prob) for candidate in answer.candidates) == pytest.approx(1.0)


def test_t5_batch_matches_one_at_a_time(t5_generator: AnswerGenerator) -> None:
    batched = t5_generator.generate(QUESTION, PASSAGES)

    for index, passage in enumerate(PASSAGES):
        single = t5_generator.generate(QUESTION, [passage]).candidates[0]
        assert single.answer == batched.candidates[index].answer
        assert single.generation_log_prob == pytest.approx(batched.candidates[index].generation_log_prob, abs=1e-4)


def test_t5_small_batch_size_gives_same_answers(t5_generator: AnswerGenerator) -> None:
    full = t5_generator.generate(QUESTION, PASSAGES[:3])
    t5_generator.batch_size = 2
    try:
        chunked = t5_generator.generate(QUESTION, PASSAGES[:3])
    finally:
        t5_generator.batch_size = 8

    assert [candidate.answer for candidate in chunked.candidates] == [candidate.answer for candidate in full.candidates]


def test_gpt2_joint_choice_matches_recomputed_scores(gpt2_generator: AnswerGenerator) -> None:
    uniform = gpt2_generator.generate(QUESTION, PASSAGES)
    retrieval_scores = trade_off_scores([candidate.generation_score for candidate in uniform.candidates])
    answer = gpt2_generator.generate(QUESTION, PASSAGES, retrieval_scores=retrieval_scores)

    priors = torch.log_softmax(torch.tensor(retrieval_scores, dtype=torch.float64), dim=0).tolist()
    recomputed = []
    for index, candidate in enumerate(answer.candidates):
        prompt = gpt2_generator.prompt_template.format(QUESTION, passage=PASSAGES[index])
        log_prob = teacher_forced_log_prob_causal(gpt2_generator, prompt, candidate.token_ids)
        assert candidate.generation_log_prob == pytest.approx(log_prob, abs=1e-4)
        recomputed.append(priors[index] + log_prob / len(candidate.token_ids))

    assert answer.passage_index == max(range(len(recomputed)), key=recomputed.__getitem__)


def test_gpt2_answer_is_only_new_tokens(gpt2_generator: AnswerGenerator) -> None:
    candidate = gpt2_generator.generate(QUESTION, PASSAGES[:1]).candidates[0]

    prompt_ids = gpt2_generator.tokenizer(gpt2_generator.prompt_template.format(QUESTION, PASSAGES[0]))["input_ids"][:-1]
    with torch.no_grad():
        sequence = gpt2_generator.model.generate(
            torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            num_beams=3, max_new_tokens=6, do_sample=False, eos_token_id=SEP_ID, pad_token_id=0,
        )[0].tolist()  # fmt: skip
    new_tokens = sequence[len(prompt_ids) :]
    if SEP_ID in new_tokens:
        new_tokens = new_tokens[: new_tokens.index(SEP_ID) + 1]

    assert candidate.token_ids == new_tokens
    assert candidate.answer == gpt2_generator.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def test_gpt2_batch_matches_one_at_a_time(gpt2_generator: AnswerGenerator) -> None:
    # Prompts of different lengths, so the batch has left padding.
    batched = gpt2_generator.generate(QUESTION, PASSAGES[:3])

    for index, passage in enumerate(PASSAGES[:3]):
        single = gpt2_generator.generate(QUESTION, [passage]).candidates[0]
        assert single.answer == batched.candidates[index].answer
        assert single.generation_log_prob == pytest.approx(batched.candidates[index].generation_log_prob, abs=1e-4)


def test_causal_tokenizer_without_pad_token() -> None:
    words = ["<eos>", "question:", "knowledge:", "answer:", "what", "colour", "red", "blue", "sky", "is", "the"]
    word_level = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="<eos>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, eos_token="<eos>")
    torch.manual_seed(5)
    config = GPT2Config(vocab_size=len(words), n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    generator = AnswerGenerator(GPT2LMHeadModel(config), tokenizer, num_beams=2, max_new_tokens=3)

    batched = generator.generate("what colour is the sky", ["the sky is blue", "red"])
    single = generator.generate("what colour is the sky", ["red"]).candidates[0]

    assert tokenizer.pad_token_id == 0
    assert batched.candidates[1].token_ids == single.token_ids
    assert generator.max_input_length == 64 - 3
    long_passage = generator.generate("what colour is the sky", ["the sky is blue " * 40]).candidates[0]
    assert 1 <= long_passage.num_tokens <= 3


def test_gpt2_uses_left_padding(gpt2_generator: AnswerGenerator) -> None:
    assert gpt2_generator.tokenizer.padding_side == "left"


def test_blip2_batch_matches_one_at_a_time(blip2_generator: AnswerGenerator, query_image: Image.Image) -> None:
    batched = blip2_generator.generate(QUESTION, PASSAGES[:3], image=query_image, retrieval_scores=[3.0, 2.0, 1.0])

    for index, passage in enumerate(PASSAGES[:3]):
        single = blip2_generator.generate(QUESTION, [passage], image=query_image).candidates[0]
        assert single.answer == batched.candidates[index].answer
        assert single.generation_log_prob == pytest.approx(batched.candidates[index].generation_log_prob, abs=1e-4)


def test_blip2_opt_batch_matches_one_at_a_time(bert_tokenizer: BertTokenizer, query_image: Image.Image) -> None:
    generator = build_blip2_opt()
    passages = [PASSAGES[0], "red"]
    batched = generator.generate(QUESTION, passages, image=query_image)

    assert generator.decoder_only
    for index, passage in enumerate(passages):
        single = generator.generate(QUESTION, [passage], image=query_image).candidates[0]
        assert single.token_ids == batched.candidates[index].token_ids
        assert single.generation_log_prob == pytest.approx(batched.candidates[index].generation_log_prob, abs=1e-4)


def test_blip2_answer_depends_on_image(blip2_generator: AnswerGenerator, query_image: Image.Image) -> None:
    other_image = Image.new("RGB", (40, 40), (10, 200, 40))

    first = blip2_generator.generate(QUESTION, PASSAGES[:1], image=query_image).candidates[0]
    second = blip2_generator.generate(QUESTION, PASSAGES[:1], image=other_image).candidates[0]

    assert first.generation_log_prob != pytest.approx(second.generation_log_prob, abs=1e-6)


def test_blip2_accepts_image_path(blip2_generator: AnswerGenerator, query_image: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "query.png"
    query_image.save(path)

    from_path = blip2_generator.generate(QUESTION, PASSAGES[:1], image=str(path)).candidates[0]
    from_pil = blip2_generator.generate(QUESTION, PASSAGES[:1], image=query_image).candidates[0]

    assert from_path.answer == from_pil.answer


def test_blip2_without_image_raises(blip2_generator: AnswerGenerator) -> None:
    with pytest.raises(ValueError, match="needs the query image"):
        blip2_generator.generate(QUESTION, PASSAGES[:1])


def test_majority_selection_picks_most_frequent(t5_generator: AnswerGenerator) -> None:
    answer = t5_generator.generate(QUESTION, PASSAGES[:3], selection="majority")
    answers = [candidate.answer.strip().lower() for candidate in answer.candidates]

    assert answer.selection == "majority"
    assert answers.count(answer.answer.strip().lower()) == max(answers.count(text) for text in answers)


def test_empty_passages_raise(t5_generator: AnswerGenerator) -> None:
    with pytest.raises(ValueError, match="passages is empty"):
        t5_generator.generate(QUESTION, [])


def test_single_string_passages_raise(t5_generator: AnswerGenerator) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        t5_generator.generate(QUESTION, "one passage")


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question_raises(t5_generator: AnswerGenerator, question: str) -> None:
    with pytest.raises(ValueError, match="question is empty"):
        t5_generator.generate(question, PASSAGES[:1])


def test_image_to_text_model_raises(t5_generator: AnswerGenerator, query_image: Image.Image) -> None:
    with pytest.raises(ValueError, match="text-only generator") as raised:
        t5_generator.generate(QUESTION, PASSAGES[:1], image=query_image)

    assert "T5ForConditionalGeneration" in str(raised.value)
    assert "vision-language generator" in str(raised.value)


def test_mismatched_retrieval_scores_raise(t5_generator: AnswerGenerator) -> None:
    with pytest.raises(ValueError, match="retrieval_scores has 1 values but there are 2 passages"):
        t5_generator.generate(QUESTION, PASSAGES[:2], retrieval_scores=[1.0])


def test_unknown_selection_raises(bert_tokenizer: BertTokenizer) -> None:
    with pytest.raises(ValueError, match="selection must be one of"):
        AnswerGenerator(build_t5(len(bert_tokenizer)), bert_tokenizer, selection="best")


def test_missing_image_file_raises(blip2_generator: AnswerGenerator, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        blip2_generator.generate(QUESTION, PASSAGES[:1], image=tmp_path / "missing.png")


def test_corrupt_image_raises(blip2_generator: AnswerGenerator, tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")

    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        blip2_generator.generate(QUESTION, PASSAGES[:1], image=path)


def test_from_pretrained_loads_bert_vocab_t5_folder(bert_tokenizer: BertTokenizer, tmp_path: Path) -> None:
    folder = tmp_path / "reader"
    model = build_t5(len(bert_tokenizer), seed=3)
    model.save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    original = AnswerGenerator(model, bert_tokenizer, num_beams=2, max_new_tokens=4)

    loaded = AnswerGenerator.from_pretrained(folder, device="cpu", num_beams=2, max_new_tokens=4)

    assert loaded.eos_token_ids == [SEP_ID]
    assert loaded.decoder_start_token_id == 0
    assert loaded.model.dtype == torch.float32
    expected = original.generate(QUESTION, PASSAGES[:2]).candidates
    actual = loaded.generate(QUESTION, PASSAGES[:2]).candidates
    assert [candidate.answer for candidate in actual] == [candidate.answer for candidate in expected]


def test_from_pretrained_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AnswerGenerator.from_pretrained(tmp_path / "no-such-reader")


def test_custom_prompt_template_is_used(bert_tokenizer: BertTokenizer) -> None:
    template = PromptTemplate(template="Context:{knowledge} Q: {question} A:", knowledge_section=" {passage}")
    generator = AnswerGenerator(build_t5(len(bert_tokenizer)), bert_tokenizer, prompt_template=template, num_beams=2, max_new_tokens=4)
    default = AnswerGenerator(generator.model, bert_tokenizer, num_beams=2, max_new_tokens=4)

    custom_score = generator.generate(QUESTION, PASSAGES[:1]).candidates[0].generation_log_prob
    default_score = default.generate(QUESTION, PASSAGES[:1]).candidates[0].generation_log_prob

    assert custom_score != pytest.approx(default_score, abs=1e-6)


def test_unreachable_hub_generator_names_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError) as error:
        AnswerGenerator.from_pretrained("flmr-rag-tests/no-such-generator")
    message = str(error.value)
    assert "\n" not in message
    assert "'flmr-rag-tests/no-such-generator'" in message
    assert "check the name and the network, or pass a local folder" in message
    assert error.value.__cause__ is not None
