"""Tokenize documents once into cached token streams (numpy memmap) and serve fixed-length packed sequences.

Cache layout (``<cache>/tokens/<key>/``): ``train.bin`` and ``val.bin`` (flat token ids, documents joined
with EOS), ``meta.json``. The key hashes the source, split rule and tokenizer, so a changed source or
tokenizer never reuses stale tokens. Validation documents are split off *before* tokenization and never
enter ``train.bin``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from ..config import DataConfig, TokenizerConfig
from ..errors import DataError
from ..hashing import hash_fraction, stable_hash
from ..io import atomic_path, write_json
from ..tokenizer import load_tokenizer, tokenizer_fingerprint, train_bpe
from .cache_check import read_meta, verify_cache
from .sources import iter_documents, source_fingerprint


def cache_root(cfg_dir: str | None = None) -> Path:
    if cfg_dir:
        return Path(os.path.expanduser(cfg_dir))
    env = os.environ.get("PLASTICITY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "plasticity"


def _is_val(doc: str, fraction: float) -> bool:
    return hash_fraction(doc[:4096], bits=32) < fraction


def split_documents(data: DataConfig) -> tuple[list[str], list[str]]:
    """Training and validation documents. With ``val_source`` the validation text comes from there;
    otherwise a deterministic (content-hashed) ``val_fraction`` of documents is held out."""
    docs = list(iter_documents(data.source, data.text_field, data.hf_config, data.hf_split, data.hf_revision,
                               data.max_documents))
    if not docs:
        raise DataError(f"{data.source}: no documents")
    if data.val_source:
        val = list(iter_documents(data.val_source, data.text_field, data.hf_config, "validation",
                                  data.hf_revision, None))
        train = docs
    else:
        train = [d for d in docs if not _is_val(d, data.val_fraction)]
        val = [d for d in docs if _is_val(d, data.val_fraction)]
        if not val:  # tiny corpora: hold out the last document
            train, val = docs[:-1], docs[-1:]
    if not train or not val:
        raise DataError(f"{data.source}: need at least 2 documents to split train/validation")
    return train, val


@dataclass
class PreparedData:
    tokenizer_dir: Path
    train_bin: Path
    val_bin: Path
    meta: dict

    def tokenizer(self):
        return load_tokenizer(self.tokenizer_dir)


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


def prepare_tokenizer(data: DataConfig, tok_cfg: TokenizerConfig, log=print) -> tuple[Path, list | None]:
    """Train (or reuse) the BPE tokenizer, or fetch and store a pretrained one. Returns (its cache dir, the
    split documents if they had to be read)."""
    docs = None
    tok_dir = tokenizer_dir(data, tok_cfg)
    if tok_dir is not None:
        with FileLock(str(tok_dir) + ".lock"):
            if not (tok_dir / "tokenizer.json").exists():
                docs = split_documents(data)
                log(f"training byte-level BPE (vocab {tok_cfg.vocab_size}) on {len(docs[0])} documents")
                tmp = tok_dir.with_name(tok_dir.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                train_bpe(docs[0][: tok_cfg.train_documents], tok_cfg.vocab_size, tmp)
                os.replace(tmp, tok_dir)
        return tok_dir, docs
    tok = load_tokenizer(tok_cfg.name, revision=tok_cfg.revision)
    tok_dir = cache_root(data.cache_dir) / "tokenizers" / f"ext-{tokenizer_fingerprint(tok)}"
    with FileLock(str(tok_dir) + ".lock"):
        if not (tok_dir / "tokenizer_config.json").exists():
            tmp = tok_dir.with_name(tok_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tok.save_pretrained(str(tmp))
            os.replace(tmp, tok_dir)
    return tok_dir, docs


def token_cache_dir(data: DataConfig, tok) -> Path:
    """Cache directory of this data tokenized with `tok`."""
    return cache_root(data.cache_dir) / "tokens" / stable_hash(dict(source_key(data), tok=tokenizer_fingerprint(tok)))


def prepare_tokens(data: DataConfig, tok_dir: Path, log=print, docs=None) -> PreparedData:
    """Tokenize (or reuse) the train/validation token streams with the tokenizer in `tok_dir`."""
    tok = load_tokenizer(tok_dir)
    out = token_cache_dir(data, tok)
    with FileLock(str(out) + ".lock"):
        meta_path = out / "meta.json"
        if not meta_path.exists():
            if docs is None:
                docs = split_documents(data)
            out.mkdir(parents=True, exist_ok=True)
            dtype = np.uint16 if len(tok) <= 65535 else np.uint32
            log(f"tokenizing {len(docs[0])} train / {len(docs[1])} validation documents")
            n_train = _write_tokens(docs[0], tok, out / "train.bin", dtype)
            n_val = _write_tokens(docs[1], tok, out / "val.bin", dtype)
            meta = dict(source=data.source, text_field=data.text_field, train_tokens=n_train, val_tokens=n_val,
                        train_documents=len(docs[0]), val_documents=len(docs[1]), dtype=np.dtype(dtype).name,
                        eos_id=tok.eos_token_id, vocab=len(tok), tokenizer_fingerprint=tokenizer_fingerprint(tok))
            write_json(meta_path, meta)  # written last: its presence marks a complete cache
        meta = read_meta(out)
        verify_cache(out, meta, len(tok))
    return PreparedData(tokenizer_dir=tok_dir, train_bin=out / "train.bin", val_bin=out / "val.bin", meta=meta)


def prepare_data(data: DataConfig, tok_cfg: TokenizerConfig, log=print) -> PreparedData:
    """Build (or reuse) the tokenizer and the token caches for a data config."""
    tok_dir, docs = prepare_tokenizer(data, tok_cfg, log)
    return prepare_tokens(data, tok_dir, log, docs)


def _write_tokens(docs: list[str], tok, path: Path, dtype) -> int:
    eos = tok.eos_token_id
    backend = tok.backend_tokenizer
    total = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for i in range(0, len(docs), 512):
            encs = backend.encode_batch(docs[i: i + 512], add_special_tokens=False)
            ids = []
            for e in encs:
                ids.extend(e.ids)
                ids.append(eos)
            arr = np.asarray(ids, dtype=dtype)
            f.write(arr.tobytes())
            total += arr.size
    return total


class PackedSequences:
    """Fixed-length views ``tokens[i*L:(i+1)*L]`` of a token stream (the last partial chunk is dropped)."""

    def __init__(self, path: str | Path, seq_len: int, dtype: str):
        self.tokens = np.memmap(path, dtype=np.dtype(dtype), mode="r")
        self.seq_len = seq_len
        self.n = len(self.tokens) // seq_len
        if self.n == 0:
            raise DataError(f"{path}: only {len(self.tokens)} tokens, fewer than one sequence of {seq_len}")

    def __len__(self) -> int:
        return self.n

    def get(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        L = self.seq_len
        rows = [np.asarray(self.tokens[i * L: (i + 1) * L], dtype=np.int64) for i in indices]
        return torch.from_numpy(np.stack(rows))


class PretrainBatches:
    """Deterministic batches by step: sample g of the run is sequence perm_epoch[g % n] with a seeded
    permutation per epoch, so the data position is the step itself and resuming needs no extra state."""

    def __init__(self, seqs: PackedSequences, micro_batch_size: int, grad_accum: int, seed: int):
        self.seqs, self.bs, self.accum, self.seed = seqs, micro_batch_size, grad_accum, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.seqs.n)}
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
