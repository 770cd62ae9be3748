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
import shutil
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


def check_new_index_directory(directory: Path) -> None:
    """Raise FileExistsError unless ``directory`` is missing or empty."""
    if (directory / SETTINGS_FILE).exists():
        stored = read_settings(directory).get("model")
        raise FileExistsError(
            f"{directory} already contains an index built with model {stored!r}; open it with "
            "FLMRRetriever.open (or `flmr-rag add`), or choose a new directory"
        )
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"index directory {directory} is not empty; choose a new or empty directory")


def load_model_for_new_index(
    model: Any,
    directory: Path,
    device: str | None,
    dtype: str | None,
    image_processor: Any,
    model_path: str | os.PathLike[str] | None,
) -> tuple[str, Any, Any]:
    """Return the reference to store for ``model``, the model in eval mode and its image processor.

    ``model`` is a hub id, a checkpoint folder (stored as its absolute path) or an
    ``FLMRModelForRetrieval`` instance (see :func:`reference_of_instance`).

    Raises:
        FileNotFoundError, ValueError: the model folder is missing or not an FLMR checkpoint.
    """
    if isinstance(model, (str, os.PathLike)):
        reference = str(model)
        if is_local_reference(reference):
            check_model_folder(Path(reference).expanduser())
            reference = str(Path(reference).expanduser().resolve())
        loaded, processor = load_model_and_processor(reference, directory, device, dtype)
        return reference, loaded, processor

    loaded = model.eval()
    reference, processor = reference_of_instance(model, directory, image_processor, model_path)
    return reference, loaded, processor


def reference_of_instance(
    model: Any, directory: Path, image_processor: Any, model_path: str | os.PathLike[str] | None
) -> tuple[str, Any]:
    """Return the reference and image processor for a model instance.

    The reference is ``model_path``, else the model's ``name_or_path`` when that is a checkpoint
    folder. Otherwise the model and its processor are saved into ``directory/model/`` and the
    reference is ``"model"``.
    """
    from flmr_rag.models import load_image_processor

    if model_path is not None:
        source = Path(model_path).expanduser()
        check_model_folder(source)
    else:
        source = Path(str(getattr(model, "name_or_path", "") or ""))
    if str(source) not in ("", ".") and (source / "config.json").is_file():
        check_model_folder(source)
        processor = image_processor or load_image_processor(source, model.config)
        return str(source.resolve()), processor

    target = directory / MODEL_FOLDER
    model.save_pretrained(str(target))
    processor = image_processor or load_image_processor(None, model.config)
    processor.save_pretrained(str(target))
    logger.info("saved the in-memory model into %s", target)
    return MODEL_FOLDER, processor


def remove_partial_index(directory: Path, existed: bool) -> None:
    """Remove what a failed create wrote: the whole directory when it did not exist before,
    else only the index files inside it."""
    if not existed:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for name in (INDEX_FOLDER, IMAGES_FOLDER, MODEL_FOLDER):
        shutil.rmtree(directory / name, ignore_errors=True)
    for name in (DOCSTORE_FILE, f"{DOCSTORE_FILE}-wal", f"{DOCSTORE_FILE}-shm"):
        (directory / name).unlink(missing_ok=True)


def check_requested_model(stored: str, requested: str | os.PathLike[str] | None, index_dir: Path) -> None:
    """Raise ValueError when ``requested`` is given and names another model than ``stored``."""
    if requested is not None and not same_model(stored, str(requested), index_dir):
        raise ValueError(
            f"index {index_dir} was built with model {stored!r}, not {str(requested)!r}; "
            f"open it with --model {stored} (or without --model), or build a new index for the other model"
        )


def check_model_dim(index_dir: Path, settings: dict[str, Any], model: Any) -> None:
    """Raise ValueError when ``model`` produces another embedding dim than the index stores."""
    if int(model.config.dim) != int(settings["dim"]):
        raise ValueError(
            f"index {index_dir} has dim {settings['dim']}, but model {str(settings['model'])!r} now produces dim "
            f"{model.config.dim}; rebuild the index with this model"
        )


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
