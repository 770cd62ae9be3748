"""Progress bars shared by every long loop (tqdm), switched off by ``--quiet``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_enabled = os.environ.get("FLMR_RAG_PROGRESS", "1") != "0"


def set_progress_enabled(enabled: bool) -> None:
    """Turn every progress bar of this process on or off."""
    global _enabled
    _enabled = enabled


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """Wrap ``iterable`` in a tqdm bar that respects ``--quiet``; kwargs go to tqdm."""
    kwargs.setdefault("disable", not _enabled)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
