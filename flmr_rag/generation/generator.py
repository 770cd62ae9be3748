"""``AnswerGenerator``: one answer per retrieved passage from any Hugging Face generator, then one choice.

Supported readers:

* encoder-decoder text models (T5, Flan-T5, BART, ...), including models trained on a BERT
  vocabulary: the special token ids come from the model's generation config and config, never
  from assumptions about the tokenizer;
* decoder-only causal LMs (GPT-2 style): prompts are left-padded, and the prompt is cut from the
  output;
* vision-language models that take the query image: BLIP-2 (``Blip2ForConditionalGeneration``)
  and models loaded with ``AutoModelForImageTextToText`` and their processor.

Every passage gives one prompt; the prompts of a question are decoded together in batches of
``batch_size`` with beam search (``num_beams``, ``max_new_tokens``, no sampling), so the output is
deterministic. Each answer's token log-probabilities come from the beam search scores
(``compute_transition_scores``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from flmr_rag.generation.answer import Answer, AnswerCandidate
from flmr_rag.generation.loading import load_image, load_model_and_processor, resolve_device, resolve_dtype
from flmr_rag.generation.prompts import RAVQA_V2_TEMPLATE, PromptTemplate
from flmr_rag.generation.scoring import SELECTIONS, choose_answer, generation_score, retrieval_log_probs
from flmr_rag.types import ImageInput

logger = logging.getLogger(__name__)

SEQ2SEQ = "seq2seq"
CAUSAL = "causal"
VISION = "vision"


def _as_id_list(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(item) for item in value]


class AnswerGenerator:
    """A RA-VQA reader: generates one answer per passage and picks one by joint score or majority.

    Args:
        model: a Hugging Face generation model (``.generate`` and ``.compute_transition_scores``).
        processor: its tokenizer, or for vision-language models its processor.
        prompt_template: how the question, image text and passage become a prompt (RA-VQA-v2 by default).
        num_beams: beams per passage; 1 is greedy decoding.
        max_new_tokens: maximum answer length in tokens (VQA answers are short).
        length_normalize: True scores an answer by its mean token log-probability, False by the sum.
        selection: "joint" (best log p(passage | query) + generation score) or "majority".
        batch_size: prompts decoded together; memory grows with it, the answers do not change.
        max_input_length: prompts longer than this many tokens are truncated (on the right for
            encoder-decoder models, on the left for decoder-only ones); None uses the
            tokenizer's limit, capped at 512.
        device: where to run; None keeps the model where it is.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        prompt_template: PromptTemplate | None = None,
        num_beams: int = 5,
        max_new_tokens: int = 10,
        length_normalize: bool = True,
        selection: str = "joint",
        batch_size: int = 8,
        max_input_length: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if num_beams < 1 or max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"num_beams, max_new_tokens and batch_size must be at least 1, got {num_beams}, {max_new_tokens} and {batch_size}"
            )

        self.model = model.eval()
        if device is not None:
            self.model.to(resolve_device(device))
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.prompt_template = prompt_template or RAVQA_V2_TEMPLATE
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens
        self.length_normalize = length_normalize
        self.selection = selection
        self.batch_size = batch_size

        config = model.config
        if getattr(config, "vision_config", None) is not None:
            self.kind = VISION
        elif config.is_encoder_decoder:
            self.kind = SEQ2SEQ
        else:
            self.kind = CAUSAL
        text_config = config.get_text_config(decoder=True) if self.kind == VISION else config
        self.decoder_only = not getattr(text_config, "is_encoder_decoder", False)

        limit = min(int(getattr(self.tokenizer, "model_max_length", None) or 512), 512)
        positions = getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
        if self.decoder_only and positions:
            # Prompt and answer share the position embeddings of a decoder-only model.
            limit = min(limit, int(positions) - max_new_tokens)
        self.max_input_length = max_input_length or limit
        self._set_special_token_ids(text_config)
        if self.decoder_only:
            # The answer continues the prompt's last token, so padding and truncation both go on
            # the left. NOTE: an over-long prompt then loses its start (the question) first.
            self.tokenizer.padding_side = "left"
            self.tokenizer.truncation_side = "left"

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_folder: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> AnswerGenerator:
        """Load a generator by hub id or local folder; ``kwargs`` go to ``AnswerGenerator``.

        ``device`` None picks CUDA when available; ``dtype`` None picks float32 on the CPU and
        bfloat16 (float16 without bf16 support) on CUDA.
        """
        resolved_device = resolve_device(device)
        model, processor = load_model_and_processor(model_id_or_folder, resolve_dtype(dtype, resolved_device))
        return cls(model, processor, device=resolved_device, **kwargs)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def accepts_images(self) -> bool:
        """Whether the model takes the query image."""
        return self.kind == VISION

    def generate(
        self,
        question: str,
        passages: Sequence[str],
        image: ImageInput | None = None,
        retrieval_scores: Sequence[float] | None = None,
        caption: str | None = None,
        objects: Sequence[str] | None = None,
        ocr: str | Sequence[str] | None = None,
        passage_ids: Sequence[str] | None = None,
        selection: str | None = None,
    ) -> Answer:
        """Answer ``question`` once per passage and choose the final answer.

        Args:
            question: the question text; must not be empty.
            passages: retrieved passage texts, best retrieved first; at least one.
            image: the query image (path, PIL image or bytes); only for vision-language models.
            retrieval_scores: the retriever's scores, one per passage (higher is better); their
                log-softmax is log p(passage | query). None means a uniform retrieval term.
            caption, objects, ocr: optional text describing the image, placed in the prompt.
            passage_ids: ids copied onto the candidates, one per passage.
            selection: overrides the generator's selection rule for this call.

        Returns:
            an ``Answer`` whose ``candidates`` keep retrieval order.

        Raises:
            ValueError: empty question, no passages, mismatched scores or ids, or an image given
                to a text-only model.
        """
        self._check_inputs(question, passages, image, passage_ids)
        log_priors = retrieval_log_probs(retrieval_scores, len(passages))
        pil_image = load_image(image) if image is not None else None

        prompts = [
            self.prompt_template.format(question, passage=passage, caption=caption, objects=objects, ocr=ocr)
            for passage in passages
        ]
        decoded: list[tuple[str, float, list[int]]] = []
        for start in range(0, len(prompts), self.batch_size):
            decoded.extend(self._decode_batch(prompts[start : start + self.batch_size], pil_image))

        candidates = []
        for index, (text, log_prob, token_ids) in enumerate(decoded):
            score = generation_score(log_prob, len(token_ids), self.length_normalize)
            candidates.append(
                AnswerCandidate(
                    answer=text,
                    passage=passages[index],
                    passage_index=index,
                    passage_id=None if passage_ids is None else passage_ids[index],
                    retrieval_score=None if retrieval_scores is None else float(retrieval_scores[index]),
                    retrieval_log_prob=log_priors[index],
                    generation_log_prob=log_prob,
                    num_tokens=len(token_ids),
                    token_ids=token_ids,
                    generation_score=score,
                    joint_score=log_priors[index] + score,
                )
            )
        return choose_answer(candidates, selection or self.selection)

    def _check_inputs(
        self, question: str, passages: Sequence[str], image: ImageInput | None, passage_ids: Sequence[str] | None
    ) -> None:
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question is empty ({question!r}); pass the question text")
        if isinstance(passages, str):
            raise TypeError("passages must be a list of passage texts, got one string; wrap it in a list")
        if len(passages) == 0:
            raise ValueError("passages is empty; retrieve at least one passage (k >= 1) before generating")
        if passage_ids is not None and len(passage_ids) != len(passages):
            raise ValueError(f"passage_ids has {len(passage_ids)} ids but there are {len(passages)} passages; give one id per passage")
        if image is not None and not self.accepts_images:
            raise ValueError(
                f"image was given, but {type(self.model).__name__} is a text-only generator and cannot take it; "
                "drop the image, or load a vision-language generator such as Salesforce/blip2-flan-t5-xl"
            )
        if image is None and hasattr(self.model, "query_tokens"):
            raise ValueError(f"{type(self.model).__name__} needs the query image; pass image=")

    def _set_special_token_ids(self, text_config: Any) -> None:
        generation_config = getattr(self.model, "generation_config", None)

        def lookup(name: str) -> Any:
            value = getattr(generation_config, name, None)
            return value if value is not None else getattr(text_config, name, None)

        self.eos_token_ids = _as_id_list(lookup("eos_token_id")) or _as_id_list(self.tokenizer.eos_token_id)
        if not self.eos_token_ids and self.tokenizer.sep_token_id is not None:
            self.eos_token_ids = [self.tokenizer.sep_token_id]
        if not self.eos_token_ids:
            raise ValueError(f"{type(self.model).__name__} has no eos_token_id in its config or tokenizer; set model.generation_config.eos_token_id")

        pad = lookup("pad_token_id")
        if pad is None:
            pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_ids[0]
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.pad_token_id
        self.decoder_start_token_id = lookup("decoder_start_token_id")

    def _encode(self, prompts: list[str], image: Any) -> dict[str, torch.Tensor]:
        if self.kind == VISION:
            return self._encode_multimodal(prompts, image)

        encoded = self.tokenizer(prompts, truncation=True, max_length=self.max_input_length, return_token_type_ids=False)
        rows = encoded["input_ids"]
        if self.decoder_only:
            # A prompt ending in the end-of-sequence token (BERT-style tokenizers append [SEP]) would
            # end generation before it starts.
            rows = [self._strip_trailing_eos(row) for row in rows]
        batch = self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def _encode_multimodal(self, prompts: list[str], image: Any) -> dict[str, torch.Tensor]:
        texts = prompts
        chat_template = getattr(self.processor, "chat_template", None)
        if chat_template and not hasattr(self.model, "query_tokens"):
            # NOTE: image-text-to-text models other than BLIP-2 are driven through their chat
            # template with one image slot before the prompt; only BLIP-2 runs in the tests.
            texts = [
                self.processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
                    add_generation_prompt=True,
                )
                for prompt in prompts
            ]
        images = None if image is None else [image] * len(texts)
        batch = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
        return {name: value for name, value in batch.items() if name != "token_type_ids"}

    def _strip_trailing_eos(self, ids: list[int]) -> list[int]:
        while len(ids) > 1 and ids[-1] in self.eos_token_ids:
            ids = ids[:-1]
        return ids

    @torch.inference_mode()
    def _decode_batch(self, prompts: list[str], image: Any) -> list[tuple[str, float, list[int]]]:
        """Return (answer text, summed token log-probability, answer token ids) for each prompt."""
        inputs = self._encode(prompts, image)
        # The input embeddings carry the model's working dtype. BLIP-2 keeps its Q-Former in
        # float32 on purpose, so the first parameter's dtype can be the wrong one.
        dtype = self.model.get_input_embeddings().weight.dtype
        inputs = {
            name: value.to(self.device, dtype=dtype) if value.is_floating_point() else value.to(self.device)
            for name, value in inputs.items()
        }

        options: dict[str, Any] = {
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
            "num_return_sequences": 1,
            "output_scores": True,
            "return_dict_in_generate": True,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        }
        if not self.decoder_only and self.decoder_start_token_id is not None:
            options["decoder_start_token_id"] = self.decoder_start_token_id
        output = self.model.generate(**inputs, **options)

        # Beam search stores log-softmax scores; greedy search stores raw logits.
        transition = self.model.compute_transition_scores(
            output.sequences,
            output.scores,
            getattr(output, "beam_indices", None) if self.num_beams > 1 else None,
            normalize_logits=self.num_beams == 1,
        )
        generated = output.sequences[:, output.sequences.shape[1] - transition.shape[1] :]

        results = []
        for tokens, token_scores in zip(generated.tolist(), transition.float().cpu(), strict=True):
            length = len(tokens)
            for position, token in enumerate(tokens):
                if token in self.eos_token_ids:
                    length = position + 1
                    break
            text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True).strip()
            results.append((text, float(token_scores[:length].sum()), tokens[:length]))
        return results
