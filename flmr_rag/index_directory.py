"""The layout of an index directory, its settings file, and the model it was built with.

An index directory holds::

    flmr_rag.json      the model id or folder and the settings the index was built with
    index/             the multi-vector index (manifest.json and immutable segments)
    docstore.sqlite    passages, metadata and image references (SQLite, WAL mode)
    images/            PNG copies of images that were given as bytes or PIL images
    model/             the model, when an in-memory model without a folder was given
    writer.lock        held (``fcntl.flock``) by the process that is adding or deleting
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "LinWeizheDragon/PreFLMR_ViT-L"
SETTINGS_FILE = "flmr_rag.json"
SETTINGS_FORMAT = "flmr-rag-retriever"
SETTINGS_VERSION = 1
INDEX_FOLDER = "index"
DOCSTORE_FILE = "docstore.sqlite"
IMAGES_FOLDER = "images"
MODEL_FOLDER = "model"
WRITER_LOCK_FILE = "writer.lock"


def is_local_reference(model: str) -> bool:
    path = Path(model).expanduser()
    return path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1


def check_model_folder(folder: Path) -> None:
    """Raise unless ``folder`` contains an FLMR checkpoint (config.json with model_type "flmr")."""
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist; pass a checkpoint folder or a hub id such as {DEFAULT_MODEL}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"model folder {folder} is not an FLMR checkpoint: it has no config.json; pass a folder written by "
            f"FLMRModelForRetrieval.save_pretrained or a hub id such as {DEFAULT_MODEL}"
        )
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"model folder {folder} has an unreadable config.json ({error}); it is not an FLMR checkpoint") from error
    if model_type != "flmr":
        raise ValueError(
            f"model folder {folder} is not an FLMR checkpoint: its config.json has model_type {model_type!r}, "
            f"expected 'flmr'; pass an FLMR or PreFLMR checkpoint such as {DEFAULT_MODEL}"
        )


def same_model(stored: str, requested: str, index_dir: Path) -> bool:
    def normal(reference: str) -> str:
        if reference == MODEL_FOLDER or is_local_reference(reference):
            base = index_dir if reference == MODEL_FOLDER else Path.cwd()
            return str((base / Path(reference).expanduser()).resolve())
        return reference

    return normal(stored) == normal(requested)


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_settings(index_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the settings stored in an index directory.

    Raises:
        FileNotFoundError: the directory or its settings file is missing.
        ValueError: the settings file is not valid or has a newer format version.
    """
    directory = Path(index_dir)
    settings_file = directory / SETTINGS_FILE
    if not directory.is_dir():
        raise FileNotFoundError(f"index directory {directory} does not exist; create it with FLMRRetriever.create or `flmr-rag index`")
    if not settings_file.is_file():
        raise FileNotFoundError(f"{directory} is not an flmr-rag index directory: {SETTINGS_FILE} is missing")
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"index settings {settings_file} are not valid JSON ({error}); restore the file from a backup") from error
    if not isinstance(settings, dict) or settings.get("format") != SETTINGS_FORMAT:
        raise ValueError(f"{settings_file} is not an flmr-rag retriever settings file")
    if int(settings.get("format_version", 0)) > SETTINGS_VERSION:
        raise ValueError(f"{settings_file} has format version {settings['format_version']}, newer than this flmr-rag reads; upgrade flmr-rag")
    return settings


def load_model_and_processor(reference: str, index_dir: Path, device: str | None, dtype: str | None) -> tuple[Any, Any]:
    """Load the model and its image processor from a stored reference (a folder, "model" or a hub id)."""
    from flmr_rag.encoding import resolve_device, resolve_dtype
    from flmr_rag.models import FLMRModelForRetrieval, load_image_processor
    from flmr_rag.models.checkpoint import resolve_checkpoint_folder

    if reference == MODEL_FOLDER:
        folder = index_dir / MODEL_FOLDER
    elif is_local_reference(reference):
        folder = Path(reference).expanduser()
    else:
        folder = resolve_checkpoint_folder(reference)
    check_model_folder(folder)

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    model = FLMRModelForRetrieval.from_pretrained(str(folder), torch_dtype=torch_dtype)
    model = model.to(device=torch_device, dtype=torch_dtype).eval()
    return model, load_image_processor(folder, model.config)


@contextmanager
def writer_lock(index_dir: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold the exclusive writer lock of an index directory; yield whether it was acquired.

    With ``blocking=False`` the lock is only taken when free, and False is yielded otherwise.
    The operating system releases an flock when the process that holds it exits, so on a local
    file system a crashed writer does not block the next one.
    """
    with open(index_dir / WRITER_LOCK_FILE, "a+b") as handle:
        flags = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(handle.fileno(), flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
