"""The demo's model cache: the user's cache folder, one subfolder per recipe."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# Bump when the demo's data preparation or model code changes what a recipe produces.
CACHE_FORMAT = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the demo's cache folder.

    Order: ``cache_dir``; ``$FLMR_RAG_CACHE``; ``$XDG_CACHE_HOME/flmr-rag``;
    ``~/.cache/flmr-rag``. The folder is not created here.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("FLMR_RAG_CACHE"):
        return Path(os.environ["FLMR_RAG_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "flmr-rag"
    return Path.home() / ".cache" / "flmr-rag"


def recipe_key(kind: str, recipe: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """Return ``"<kind>-<16 hex digits>"``, a hash of the recipe, the extra inputs and the cache format."""
    payload = json.dumps({"format": CACHE_FORMAT, "kind": kind, "recipe": recipe, "extra": extra or {}}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"
