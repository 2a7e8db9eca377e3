"""Where the local dataset folder (Hub field names, JSONL/parquet; layout in the README) lives."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PLASTICITY_DATA_ROOT"


def default_data_root() -> Path:
    """``$PLASTICITY_CACHE/data``, i.e. ``~/.cache/plasticity/data`` unless ``PLASTICITY_CACHE`` moves the cache
    (the same cache root as the token cache, `plasticity.data.packed.cache_root`)."""
    cache = os.environ.get("PLASTICITY_CACHE", "").strip()
    return (Path(cache).expanduser() if cache else Path.home() / ".cache" / "plasticity") / "data"


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The local data folder: `explicit` (``--data-root`` / ``data_root``), else ``$PLASTICITY_DATA_ROOT``, else
    :func:`default_data_root`. The folder need not exist: a task whose files are missing there is not
    ``local_available`` and loading it names the missing file."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return default_data_root()


def where_to_put_data(root: Path) -> str:
    """The hint a missing local file's error ends with."""
    return (f"the local data root is {root}: choose another with --data-root, data_root=... or ${ENV_VAR}, "
            "or load from the Hub (data_source=hub)")
