"""Token caches verify themselves before use: ``meta.json`` must parse and describe the shard files beside it,
each shard must hold exactly the tokens its meta entry counts (and the shards of a split add up to the split's
count), and every token id must fit the tokenizer. A cache that fails is one line naming it (never a run trained
on 480 tokens while ``run_info.json`` claims 134,970). The sha256 of each shard (in meta.json and its job marker)
is checked when a killed preparation resumes, not on every use: sizes and ids are one sequential read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from plasticity.errors import DataError

DTYPES = ("uint16", "uint32")
_CHUNK = 1 << 24  # tokens per range check read (32-64 MB)


def read_meta(cache: Path) -> dict[str, Any]:
    """The cache's ``meta.json`` (format 2), checked for the fields the loaders use."""
    try:
        meta = json.loads((cache / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise damaged(cache, f"meta.json does not parse ({type(e).__name__})") from None
    ok = (isinstance(meta, dict) and meta.get("dtype") in DTYPES
          and all(isinstance(meta.get(k), int) and meta[k] >= 0 for k in ("train_tokens", "val_tokens", "vocab")))
    if not ok:
        raise damaged(cache, "meta.json lacks dtype/train_tokens/val_tokens/vocab")
    shards = meta.get("shards")
    if not (isinstance(shards, dict) and all(isinstance(shards.get(s), list) for s in ("train", "val"))
            and all(_shard_ok(x) for s in ("train", "val") for x in shards[s])):
        raise damaged(cache, "meta.json lacks its shard lists")
    return meta


def _shard_ok(entry: Any) -> bool:
    name = entry.get("file") if isinstance(entry, dict) else None
    return (isinstance(name, str) and bool(name) and "/" not in name and name not in (".", "..")
            and isinstance(entry.get("tokens"), int) and entry["tokens"] >= 0)


def verify_cache(cache: Path, meta: dict[str, Any], vocab: int) -> None:
    """Sizes against the meta (cheap: a stat per shard), then token ids against `vocab` (one sequential read)."""
    dtype = np.dtype(meta["dtype"])
    if meta["vocab"] > vocab:
        raise damaged(cache, f"meta.json says a vocabulary of {meta['vocab']} but the tokenizer has {vocab}")
    for split in ("train", "val"):
        entries = meta["shards"][split]
        if sum(e["tokens"] for e in entries) != meta[f"{split}_tokens"]:
            raise damaged(cache, f"its {split} shards hold {sum(e['tokens'] for e in entries):,} tokens, meta.json "
                                 f"says {meta[f'{split}_tokens']:,}")
        for e in entries:
            f = cache / e["file"]
            want = e["tokens"] * dtype.itemsize
            have = f.stat().st_size if f.is_file() else None
            if have != want:
                got = "missing" if have is None else f"{have:,} bytes"
                raise damaged(cache, f"{f.name} is {got}, meta.json says {want:,} ({e['tokens']:,} tokens)")
            tokens = np.memmap(f, dtype=dtype, mode="r") if want else np.zeros(0, dtype)
            for start in range(0, tokens.size, _CHUNK):
                top = int(tokens[start: start + _CHUNK].max())
                if top >= vocab:
                    raise damaged(cache, f"{f.name} holds token id {top}, outside the tokenizer's {vocab}")


def damaged(cache: Path, what: str) -> DataError:
    return DataError(f"{cache}: token cache is damaged ({what}); delete that folder and it is rebuilt")
