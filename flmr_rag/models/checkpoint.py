"""Reading and writing FLMR checkpoints (safetensors only, single file or sharded).

Official checkpoints store each shared module once, under one of its two names (transformers
4.37 kept the ``query_*`` name). :func:`load_checkpoint_into_model` accepts either name for a
shared module, fills every parameter of the model exactly once and otherwise raises
:class:`CheckpointMismatchError` listing the missing and unexpected keys.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"

# Files a checkpoint download needs; nothing else of the repository is fetched.
CHECKPOINT_FILE_PATTERNS = [
    CONFIG_NAME,
    WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    "model-*.safetensors",
    "preprocessor_config.json",
    "query_tokenizer/*",
    "context_tokenizer/*",
]

# Module names that may alias each other when query and document sides share a module.
SHARED_MODULE_PAIRS = {
    "text": (("query_text_encoder.", "context_text_encoder."), ("query_text_encoder_linear.", "context_text_encoder_linear.")),
    "vision": (("query_vision_encoder.", "context_vision_encoder."), ("query_vision_projection.", "context_vision_projection.")),
}


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model's parameters one to one."""


def resolve_checkpoint_folder(
    folder_or_hub_id: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Return a local folder for a checkpoint: the folder itself, or a download of the hub repository.

    Only the named repository is fetched, and only the files a checkpoint needs
    (config, safetensors weights, tokenizer folders, image processor).

    Raises:
        FileNotFoundError: if the path does not exist and no hub repository of that name could be fetched.
    """
    path = Path(folder_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(folder_or_hub_id)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"checkpoint {name!r} is not a folder and not a Hugging Face hub id (owner/name); "
            "pass the folder that contains config.json and model.safetensors"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        downloaded = snapshot_download(
            repo_id=name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            allow_patterns=CHECKPOINT_FILE_PATTERNS,
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise FileNotFoundError(hub_failure_message("checkpoint", name, error)) from error
    return Path(downloaded)


def hub_failure_message(kind: str, name: str, error: BaseException) -> str:
    """Return a one-line message for a failed hub download of ``name`` (the hub's own messages span lines)."""
    detail = " ".join(str(error).split())
    return (
        f"{kind} {name!r} is not a local folder and downloading it from the Hugging Face hub failed "
        f"({type(error).__name__}: {detail}); check the name and the network, or pass a local folder"
    )


def checkpoint_weight_files(folder: Path) -> list[Path]:
    """Return the safetensors files of a checkpoint folder (one file, or the shards of its index).

    Raises:
        FileNotFoundError: if the folder contains no safetensors weights.
    """
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are missing in {folder}: {missing}")
        return [folder / shard for shard in shards]
    pickles = [name for name in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (folder / name).exists()]
    hint = (
        f" It contains {pickles[0]}, a pickle, which flmr-rag does not load; convert it to safetensors first."
        if pickles
        else ""
    )
    raise FileNotFoundError(f"no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} in {folder}.{hint}")


def read_state_dict(files: list[Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor of the given safetensors files on the CPU, cast to ``dtype`` if given
    (floating-point tensors only).

    Raises:
        ValueError: a file is truncated or is not a safetensors file.
    """
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    tensor = handle.get_tensor(key)
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    state[key] = tensor
        except SafetensorError as error:
            raise ValueError(
                f"weights file {file} is truncated or corrupt ({error}); re-download the checkpoint or re-save it with save_pretrained"
            ) from error
    return state


def _is_ignored_key(key: str) -> bool:
    """Masked-LM heads (``cls.*``) and old position-id buffers are not model parameters."""
    return key.split(".")[0] == "cls" or ".cls." in key or key.endswith("embeddings.position_ids")


def _candidate_names(key: str, shared: dict[str, bool]) -> list[str]:
    """Return the names under which the model may hold the tensor stored as ``key``."""
    names = [key]
    for part, pairs in SHARED_MODULE_PAIRS.items():
        if not shared.get(part):
            continue
        for first, second in pairs:
            if key.startswith(second):
                names.append(first + key[len(second):])
            elif key.startswith(first):
                names.append(second + key[len(first):])
    # Newer upstream code also registers the BERT module as ``text_model``.
    names += [name.replace("_text_encoder.text_model.", "_text_encoder.bert_model.") for name in names if ".text_model." in name]
    return names


def map_checkpoint_keys(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], shared: dict[str, bool]
) -> dict[str, torch.Tensor]:
    """Rename checkpoint tensors to the model's parameter names and check the match.

    Args:
        state: tensors as stored in the checkpoint.
        expected: the model's ``state_dict()`` (names, shapes).
        shared: ``{"text": bool, "vision": bool}``, whether that module pair is shared.

    Returns:
        The tensors under the model's names, each name exactly once.

    Raises:
        CheckpointMismatchError: on missing or unexpected keys, shape mismatches, or two
            different tensors stored for one shared parameter.
    """
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    conflicts: list[str] = []
    shapes: list[str] = []
    for key, tensor in state.items():
        if _is_ignored_key(key):
            continue
        target = next((name for name in _candidate_names(key, shared) if name in expected), None)
        if target is None:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[target].shape):
            shapes.append(f"{key}: checkpoint {tuple(tensor.shape)}, model {tuple(expected[target].shape)}")
            continue
        if target in mapped:
            # Both names of one shared module were stored; they must hold the same values.
            if not torch.equal(mapped[target], tensor):
                conflicts.append(f"{key} (differs from the tensor already loaded into {target})")
            continue
        mapped[target] = tensor
    missing = sorted(set(expected) - set(mapped) - {name for name in expected if _is_ignored_key(name)})

    if missing or unexpected or shapes or conflicts:
        raise CheckpointMismatchError(_mismatch_message(missing, sorted(unexpected), shapes, conflicts))
    return mapped


def _mismatch_message(missing: list[str], unexpected: list[str], shapes: list[str], conflicts: list[str], limit: int = 20) -> str:
    lines = ["the checkpoint does not match the model built from its config.json:"]
    for title, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
        ("conflicting shared tensors", conflicts),
    ):
        if keys:
            shown = ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
            lines.append(f"  {len(keys)} {title}: {shown}")
    lines.append("Check that config.json belongs to these weights (for example dim, layer counts, vocab_size, separate_query_and_context_*).")
    return "\n".join(lines)


def materialize_meta_buffers(model: nn.Module, device: torch.device | str) -> None:
    """Recreate non-persistent buffers left on the meta device after an ``assign`` load.

    Raises:
        RuntimeError: for a meta buffer whose content is not known here.
    """
    for module_name, module in model.named_modules():
        for buffer_name, buffer in list(module._buffers.items()):
            if buffer is None or not buffer.is_meta:
                continue
            if buffer_name.endswith("position_ids"):
                value = torch.arange(buffer.shape[-1], device=device).expand(buffer.shape).clone()
            elif buffer_name.endswith("token_type_ids"):
                value = torch.zeros(buffer.shape, dtype=buffer.dtype, device=device)
            else:
                raise RuntimeError(f"buffer {module_name}.{buffer_name} is not in the checkpoint and cannot be rebuilt")
            module._buffers[buffer_name] = value.to(buffer.dtype)


def load_checkpoint_into_model(model: nn.Module, state: dict[str, torch.Tensor], shared: dict[str, bool]) -> None:
    """Fill every parameter of ``model`` (possibly built on the meta device) from ``state``.

    Raises:
        CheckpointMismatchError: see :func:`map_checkpoint_keys`.
    """
    expected = model.state_dict()
    mapped = map_checkpoint_keys(state, expected, shared)
    for name in expected:
        if name not in mapped:  # only ignored names (position ids) can be absent here
            mapped[name] = expected[name]
    model.load_state_dict(mapped, strict=True, assign=True)


def save_state_dict_atomic(state: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write ``state`` as ``folder/model.safetensors`` through a temporary file and a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / WEIGHTS_NAME
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
    handle, temporary = tempfile.mkstemp(prefix=".model-", suffix=".safetensors.tmp", dir=folder)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"format": "pt"})
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target
