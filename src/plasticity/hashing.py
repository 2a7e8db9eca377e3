"""Deterministic hashes (sha256: stable across runs, processes and platforms) for splits and cache keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal


def hash_fraction(key: str, seed: int | None = None, bits: Literal[32, 64] = 64) -> float:
    """A deterministic number in [0, 1] for `key` (under `seed`). ``bits=64``: the first 8 bytes / 2**64, in
    [0, 1) (task partitions); ``bits=32``: the first 4 bytes / (2**32 - 1), the scale the pretraining-data and
    probe hold-out splits have always used (kept so cached splits do not move)."""
    text = key if seed is None else f"{seed}\0{key}"
    digest = hashlib.sha256(text.encode("utf-8", errors="replace")).digest()
    if bits == 32:
        return int.from_bytes(digest[:4], "big") / 0xFFFFFFFF
    return int.from_bytes(digest[:8], "big") / 2**64


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes (read in 4 MB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `obj` as canonical JSON (sorted keys, str() fallback)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]
