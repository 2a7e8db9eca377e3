"""Tokenize documents once into a sharded token cache (memory-mapped) and serve fixed-length packed sequences.

Cache layout (``<cache>/tokens/<key>/``): ``train-<job>.bin`` / ``val-<job>.bin`` shards (flat token ids,
documents joined with EOS), ``job-<job>.json`` markers, ``plan.json``, ``prepare.json`` and ``meta.json``
(written last; lists the shards in order). The train stream is the concatenation of the train shards (the
documents in source order), so its packed sequences do not depend on the shard size or the number of workers.
The key hashes the source, split rule, tokenizer and cache format, so a changed source or tokenizer never reuses
stale tokens. Validation documents are split off by content hash *before* tokenization and never enter the train
shards. Preparation itself lives in ``plasticity.data.prepare``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from plasticity.config import DataConfig, TokenizerConfig
from plasticity.data.cache_check import read_meta, verify_cache
from plasticity.data.pieces import PIECE_CHARS, safe_char_cuts
from plasticity.data.prepare import FORMAT, prepare_cache
from plasticity.data.shards import is_val
from plasticity.data.sources import iter_documents, source_fingerprint
from plasticity.errors import DataError
from plasticity.hashing import stable_hash
from plasticity.tokenizer import load_tokenizer, tokenizer_fingerprint, train_bpe


def cache_root(cfg_dir: str | None = None) -> Path:
    if cfg_dir:
        return Path(os.path.expanduser(cfg_dir))
    env = os.environ.get("PLASTICITY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "plasticity"


def _is_val(doc: str, fraction: float) -> bool:
    return is_val(doc, fraction)


def training_documents(data: DataConfig, limit: int | None) -> Iterator[str]:
    """The first `limit` training documents (all with None), streamed: what the BPE tokenizer trains on. The
    same documents the token cache puts in its train split (a corpus with no hash-held-out document at all keeps
    its last one for validation, so that one is left out here too)."""
    docs = iter_documents(data.source, data.text_field, data.hf_config, data.hf_split, data.hf_revision,
                          data.max_documents, warn=lambda m: None)  # the token cache reports skipped lines
    if data.val_source:
        yield from itertools.islice(docs, limit)
        return
    held = None  # the latest training document, yielded once another document follows it
    n = 0
    seen_val = False
    for doc in docs:
        if held is not None:
            yield held
            n += 1
            held = None
            if limit is not None and n >= limit:
                return
        if _is_val(doc, data.val_fraction):
            seen_val = True
        else:
            held = doc
    if held is not None and seen_val:
        yield held


@dataclass
class PreparedData:
    """A prepared token cache: `meta` is meta.json with shard counts instead of its shard lists (`shards`)."""

    tokenizer_dir: Path
    dir: Path
    meta: dict
    shards: dict = field(default_factory=dict)

    def tokenizer(self):
        return load_tokenizer(self.tokenizer_dir)

    @property
    def train_shards(self) -> list[Path]:
        return [self.dir / s["file"] for s in self.shards["train"]]

    @property
    def val_shards(self) -> list[Path]:
        return [self.dir / s["file"] for s in self.shards["val"]]

    def sequences(self, split: str, seq_len: int) -> PackedSequences:
        """The packed sequences of the ``train`` or ``val`` stream."""
        return PackedSequences(self.train_shards if split == "train" else self.val_shards, seq_len,
                               self.meta["dtype"])


def source_key(data: DataConfig) -> dict:
    """What identifies a data source's documents (keys the tokenizer and token caches)."""
    return dict(source=source_fingerprint(data.source), field=data.text_field, hf=[data.hf_config,
                data.hf_split, data.hf_revision], max_docs=data.max_documents,
                val=[data.val_source and source_fingerprint(data.val_source), data.val_fraction])


def tokenizer_dir(data: DataConfig, tok_cfg: TokenizerConfig) -> Path | None:
    """Cache directory of a BPE tokenizer trained on this data (None for a pretrained tokenizer: its
    directory is named by its fingerprint, known once loaded)."""
    if tok_cfg.name != "bpe":
        return None
    key = stable_hash(dict(source_key(data), vocab=tok_cfg.vocab_size, n=tok_cfg.train_documents))
    return cache_root(data.cache_dir) / "tokenizers" / key


def prepare_tokenizer(data: DataConfig, tok_cfg: TokenizerConfig, log=print) -> Path:
    """Train (or reuse) the BPE tokenizer on a streamed sample of `tokenizer.train_documents` training documents,
    or fetch and store a pretrained one. Returns its cache dir."""
    tok_dir = tokenizer_dir(data, tok_cfg)
    if tok_dir is not None:
        with FileLock(str(tok_dir) + ".lock"):
            if not (tok_dir / "tokenizer.json").exists():
                n = [0]

                cap = f"the first {tok_cfg.train_documents:,}" if tok_cfg.train_documents else "all"

                def sample() -> Iterator[str]:
                    for doc in training_documents(data, tok_cfg.train_documents):
                        if n[0] == 0:  # once the source proved readable
                            log(f"training byte-level BPE (vocab {tok_cfg.vocab_size}) on {cap} training documents")
                        n[0] += 1
                        if len(doc) <= PIECE_CHARS:
                            yield doc
                        else:  # in the pieces tokenization uses: the trainer's per-byte work stays bounded
                            cuts = safe_char_cuts(doc)
                            yield from (doc[a:b] for a, b in itertools.pairwise(cuts))

                tmp = tok_dir.with_name(tok_dir.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                train_bpe(sample(), tok_cfg.vocab_size, tmp)
                if n[0] == 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise DataError(f"{source_label(data.source)}: no training documents (the validation split "
                                    "takes whole documents, and a .txt file is one document: give several files "
                                    "or a .jsonl of documents, or set data.val_source)")
                os.replace(tmp, tok_dir)
                log(f"BPE trained on {n[0]:,} documents")
        return tok_dir
    tok = load_tokenizer(tok_cfg.name, revision=tok_cfg.revision)
    tok_dir = cache_root(data.cache_dir) / "tokenizers" / f"ext-{tokenizer_fingerprint(tok)}"
    with FileLock(str(tok_dir) + ".lock"):
        if not (tok_dir / "tokenizer_config.json").exists():
            tmp = tok_dir.with_name(tok_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tok.save_pretrained(str(tmp))
            os.replace(tmp, tok_dir)
    return tok_dir


def source_label(source: str | list[str]) -> str:
    return source if isinstance(source, str) else ", ".join(source)


def token_cache_dir(data: DataConfig, tok) -> Path:
    """Cache directory of this data tokenized with `tok` (in the current cache format)."""
    key = dict(source_key(data), tok=tokenizer_fingerprint(tok), format=FORMAT)
    return cache_root(data.cache_dir) / "tokens" / stable_hash(key)


def load_prepared(out: Path, tok_dir: Path) -> PreparedData | None:
    """A complete cache (its meta.json), or None."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    shards = meta.pop("shards")
    meta["shards"] = {k: len(v) for k, v in shards.items()}
    return PreparedData(tokenizer_dir=tok_dir, dir=out, meta=meta, shards=shards)


def prepare_tokens(data: DataConfig, tok_dir: Path, log=print, executor: str = "local",
                   bar: bool = False) -> PreparedData:
    """Tokenize (or reuse) the train/validation shards with the tokenizer in `tok_dir`. A second process
    preparing the same cache waits for the first (file lock) and then reuses its cache."""
    tok = load_tokenizer(tok_dir)
    out = token_cache_dir(data, tok)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "meta.json").exists():  # complete (meta.json is written last): verify it before any use
            verify_cache(out, read_meta(out), len(tok))
        done = load_prepared(out, tok_dir)
        if done is not None:
            return done
        tok_file = tok_dir / "tokenizer.json"
        if not tok_file.is_file():
            raise DataError(f"{tok_dir}: no tokenizer.json (a fast tokenizer is needed to tokenize a corpus)")
        log(f"tokenizing {source_label(data.source)} into {out}")
        res = prepare_cache(data, out, tok_file, tok.eos_token_id, len(tok), tokenizer_fingerprint(tok), log,
                            executor, bar)
        m, st = res.meta, res.stats
        log(f"token cache: {m['train_documents']:,} train / {m['val_documents']:,} validation documents, "
            f"{m['train_tokens']:,} / {m['val_tokens']:,} tokens in {len(m['shards']['train'])} + "
            f"{len(m['shards']['val'])} shards, {st['seconds']:.1f}s, {st['tokens_per_second']:,.0f} tok/s "
            f"({st['workers']} workers, {st['executor']}"
            + (f", {st['resumed_jobs']} of {st['jobs']} jobs resumed" if st["resumed_jobs"] else "") + ")")
        done = load_prepared(out, tok_dir)
        assert done is not None
        return done


def prepare_data(data: DataConfig, tok_cfg: TokenizerConfig, log=print, executor: str = "local",
                 bar: bool = False) -> PreparedData:
    """Build (or reuse) the tokenizer and the token caches for a data config."""
    tok_dir = prepare_tokenizer(data, tok_cfg, log)
    return prepare_tokens(data, tok_dir, log, executor, bar)


class PackedSequences:
    """Fixed-length views ``tokens[i*L:(i+1)*L]`` of a token stream: one file, or shards memory-mapped and read
    as one stream in order (a sequence may span shards). The last partial chunk is dropped."""

    def __init__(self, paths: str | Path | list[Path], seq_len: int, dtype: str):
        self.paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
        self.dtype = np.dtype(dtype)
        sizes = [p.stat().st_size // self.dtype.itemsize for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._maps: dict[int, np.memmap] = {}
        self.seq_len = seq_len
        self.n_tokens = int(self.starts[-1])
        self.n = self.n_tokens // seq_len
        if self.n == 0:
            where = self.paths[0] if len(self.paths) == 1 else (self.paths[0].parent if self.paths else "data")
            raise DataError(f"{where}: only {self.n_tokens} tokens, fewer than one sequence of {seq_len}")

    @property
    def tokens(self) -> np.ndarray:
        """The whole stream (a memmap with one shard; a copy otherwise: for small corpora and tests)."""
        if len(self.paths) == 1:
            return self._map(0)
        return self.read(0, self.n_tokens)

    def _map(self, i: int) -> np.memmap:
        if i not in self._maps:
            self._maps[i] = np.memmap(self.paths[i], dtype=self.dtype, mode="r")
        return self._maps[i]

    def read(self, a: int, b: int) -> np.ndarray:
        """Tokens [a, b) of the stream as int64."""
        i = int(np.searchsorted(self.starts, a, side="right")) - 1
        parts = []
        while a < b:
            lo = a - int(self.starts[i])
            hi = min(b, int(self.starts[i + 1])) - int(self.starts[i])
            if hi > lo:
                parts.append(np.asarray(self._map(i)[lo:hi], dtype=np.int64))
                a += hi - lo
            i += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __len__(self) -> int:
        return self.n

    def get(self, indices: np.ndarray | list[int] | range) -> torch.Tensor:
        L = self.seq_len
        return torch.from_numpy(np.stack([self.read(i * L, (i + 1) * L) for i in indices]))


class PretrainBatches:
    """Deterministic batches by step: sample g of the run is sequence perm_epoch[g % n] with a seeded
    permutation per epoch, so the data position is the step itself and resuming needs no extra state."""

    def __init__(self, seqs: PackedSequences, micro_batch_size: int, grad_accum: int, seed: int):
        self.seqs, self.bs, self.accum, self.seed = seqs, micro_batch_size, grad_accum, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.seqs.n)
            self._perms = {epoch: perm.astype(np.uint32) if self.seqs.n < 2**32 else perm}  # 4 B/sequence held
        return self._perms[epoch]

    def tokens_per_step(self) -> int:
        return self.bs * self.accum * self.seqs.seq_len

    def indices(self, step: int, micro: int) -> list[int]:
        start = (step * self.accum + micro) * self.bs
        n = self.seqs.n
        return [int(self._perm(g // n)[g % n]) for g in range(start, start + self.bs)]

    def step_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        out = []
        for m in range(self.accum):
            ids = self.seqs.get(self.indices(step, m))
            out.append({"input_ids": ids, "labels": ids})
        return out
