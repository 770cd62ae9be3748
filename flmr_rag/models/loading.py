"""Loading and saving of FLMR checkpoints for ``FLMRModelForRetrieval`` (a mixin)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    CONFIG_NAME,
    checkpoint_weight_files,
    load_checkpoint_into_model,
    materialize_meta_buffers,
    read_state_dict,
    resolve_checkpoint_folder,
    save_state_dict_atomic,
)
from .configuration_flmr import FLMRConfig
from .tokenization_flmr import FLMRContextEncoderTokenizer, FLMRQueryEncoderTokenizer


class FLMRPretrainedIO:
    """``from_pretrained`` / ``save_pretrained`` for the official FLMR checkpoint layout.

    Expects the host class to be a ``PreTrainedModel`` built as ``cls(config,
    query_tokenizer=..., context_tokenizer=...)`` with a ``shared_modules`` property.
    """

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: FLMRConfig | None = None,
        query_tokenizer: FLMRQueryEncoderTokenizer | None = None,
        context_tokenizer: FLMRContextEncoderTokenizer | None = None,
        torch_dtype: torch.dtype | str | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Load a checkpoint folder or hub repository (``config.json`` + safetensors weights).

        Args:
            pretrained_model_name_or_path: a local folder, or a hub id such as
                ``"LinWeizheDragon/PreFLMR_ViT-L"`` (only that repository is downloaded).
            query_tokenizer / context_tokenizer: default: loaded from the checkpoint's
                ``query_tokenizer/`` and ``context_tokenizer/`` subfolders.
            torch_dtype (or ``dtype``): e.g. ``torch.bfloat16`` or ``"float16"``; default: float32.
            device: where to put the model; default: CPU.

        Raises:
            FileNotFoundError: if the folder, its weights, or its tokenizer subfolders (when no
                tokenizer is passed) are missing.
            CheckpointMismatchError: if the weights do not fill every parameter exactly once.
        """
        if model_args:
            raise TypeError(f"unexpected positional arguments {model_args}; pass options by keyword")
        ignored = sorted(set(kwargs) - HUB_KEYWORDS_ACCEPTED)
        if ignored:
            raise TypeError(f"unexpected keyword arguments {ignored} for FLMRModelForRetrieval.from_pretrained")
        folder = resolve_checkpoint_folder(pretrained_model_name_or_path, revision, cache_dir, token, local_files_only)
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{folder} is not an FLMR checkpoint: it has no {CONFIG_NAME}")
        if config is None:
            model_type = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("model_type")
            if model_type != FLMRConfig.model_type:
                raise ValueError(
                    f"{folder} is not an FLMR checkpoint: its config.json has model_type {model_type!r}, expected 'flmr'; "
                    "pass the folder of an FLMR or PreFLMR checkpoint"
                )
            config = FLMRConfig.from_pretrained(str(folder))
        target_dtype = _resolve_dtype(torch_dtype if torch_dtype is not None else dtype)

        tokenizers = {}
        for name, given, tokenizer_class in (("query_tokenizer", query_tokenizer, FLMRQueryEncoderTokenizer), ("context_tokenizer", context_tokenizer, FLMRContextEncoderTokenizer)):
            if given is None:
                if not (folder / name).is_dir():
                    raise FileNotFoundError(
                        f"the checkpoint folder {folder} has no {name}/ folder; copy the tokenizer folders from the "
                        f"original checkpoint (or pass {name}={tokenizer_class.__name__}.from_pretrained(...) in Python)"
                    )
                given = tokenizer_class.from_pretrained(str(folder), subfolder=name)
            tokenizers[name] = given

        with torch.device("meta"):
            model = cls(config, **tokenizers)
        state = read_state_dict(checkpoint_weight_files(folder), dtype=target_dtype)
        load_checkpoint_into_model(model, state, model.shared_modules)
        target_device = torch.device(device) if device is not None else torch.device("cpu")
        materialize_meta_buffers(model, "cpu")
        model.to(target_device)
        if (folder / "preprocessor_config.json").is_file():
            from .image_processing import load_image_processor

            model.image_processor = load_image_processor(folder, config)
        model.config._name_or_path = str(pretrained_model_name_or_path)
        model.name_or_path = str(pretrained_model_name_or_path)
        model.eval()
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:  # type: ignore[override]
        """Write ``config.json``, ``model.safetensors`` (written atomically), both tokenizer
        subfolders when set, and ``preprocessor_config.json`` when the model has an image processor."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config
        config.architectures = [type(self).__name__]
        auto_map = getattr(config, "auto_map", None)
        if auto_map is not None:
            # The remote-code files that auto_map names are not written, so the entry would dangle.
            del config.auto_map
        config.save_pretrained(str(folder))
        save_state_dict_atomic(self.state_dict(), folder)
        if self.query_tokenizer is not None:
            self.query_tokenizer.save_pretrained(str(folder / "query_tokenizer"))
        if self.context_tokenizer is not None:
            self.context_tokenizer.save_pretrained(str(folder / "context_tokenizer"))
        if self.image_processor is not None:
            self.image_processor.save_pretrained(str(folder))


# Keyword arguments that transformers' AutoModel.from_pretrained forwards; they change nothing here.
HUB_KEYWORDS_ACCEPTED = {"trust_remote_code", "force_download", "proxies", "subfolder", "_from_auto", "code_revision", "adapter_kwargs", "_commit_hash"}


def _resolve_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, torch.dtype):
        return value
    resolved = getattr(torch, str(value).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"torch_dtype={value!r} is not a torch dtype; use e.g. torch.float32, 'bfloat16' or 'float16'")
    return resolved


