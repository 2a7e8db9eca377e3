"""Where the local dataset folder (Hub field names, JSONL/parquet) lives."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PLASTICITY_DATA_ROOT"


def _checkout_sibling() -> Path | None:
    """``<checkout>/../shared/data`` when this package is imported from a source checkout (src layout)."""
    here = Path(__file__).resolve()
    if len(here.parents) < 4:
        return None
    repo = here.parents[3]
    if not (repo / "pyproject.toml").is_file():
        return None
    candidate = repo.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def resolve_data_root(explicit: str | Path | None = None) -> Path | None:
    """The local data folder: `explicit`, else ``$PLASTICITY_DATA_ROOT``, else ``../shared/data`` relative to
    the current directory if it exists, else the checkout's sibling ``shared/data``; None if none is found.

    An explicit path or the environment variable is returned even if it does not exist, so the caller can
    report it; the two automatic guesses are only returned when they are directories.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    cwd_candidate = Path.cwd().parent / "shared" / "data"
    if cwd_candidate.is_dir():
        return cwd_candidate.resolve()
    return _checkout_sibling()
