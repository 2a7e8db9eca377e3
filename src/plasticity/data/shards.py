"""Shard jobs: tokenize one part of a corpus into its own train/validation shard files.

A job is either a list of local file pieces (``plasticity.data.pieces``: the job reads them itself, so jobs run
in any process or on any Ray node that sees the files) or a chunk of documents streamed by the driver (Hub and
packaged sources, or a ``data.max_documents`` cap). Every document goes to train or validation by the hash of its
text as it streams. A job writes ``train-<key>.bin`` / ``val-<key>.bin`` under temp names, renames them, and
then writes ``job-<key>.json`` (its token/document counts and sha256s): a job with a valid marker is done, so a
killed preparation resumes from its finished shards. The token stream of the cache is the concatenation of the
shards in job order, which depends on the corpus alone (never on the number of workers or on which ran what).

This module imports no torch or transformers: spawn workers and Ray tasks start in well under a second.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plasticity.data.pieces import PIECE_CHARS, FileStats, Piece, read_piece, safe_char_cuts
from plasticity.errors import DataError
from plasticity.files import write_json
from plasticity.hashing import hash_fraction, sha256_file

BATCH_CHARS = 1 << 21  # documents are encoded in batches of about this many characters
BATCH_DOCS = 512


def is_val(doc: str, fraction: float) -> bool:
    """The content-hash validation split (first 4096 characters; the rule every cache has used)."""
    return hash_fraction(doc[:4096], bits=32) < fraction


@dataclass
class Job:
    """One shard job. ``role``: ``split`` (hash split), ``train`` or ``val`` (all documents to one side)."""

    key: str
    role: str
    pieces: list[Piece] | None = None
    docs: list[str] | None = None
    size: int = 0  # input bytes (pieces) or characters (docs): progress


@dataclass
class JobSpec:
    """What every job of one preparation shares (small: shipped to each worker / Ray task)."""

    out_dir: str
    tokenizer_file: str
    eos_id: int
    dtype: str
    val_fraction: float
    text_field: str
    extra: dict = field(default_factory=dict)


class Encoder:
    """Batch encoding with the Rust tokenizer; documents longer than PIECE_CHARS are encoded in safe-cut pieces
    (a continuation piece is encoded the way that reproduces the whole document's tokens for this tokenizer)."""

    def __init__(self, tokenizer_file: str):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(tokenizer_file)
        self.strip_continuation = self._probe()

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def _probe(self) -> bool:
        """Does a continuation piece ``" word ..."`` have to lose its leading space (tokenizers that prepend a
        word-boundary marker to every input, as Llama's SentencePiece-style one does)?"""
        pairs = [("The cat sat on", "the mat, again."), ("Numbers 12 and", "34 follow here"), ("x", "y")]
        keep = strip = True
        for a, b in pairs:
            whole, left, right, bare = self._ids([a + " " + b, a, " " + b, b])
            keep &= whole == left + right
            strip &= whole == left + bare
        return strip and not keep

    def encode(self, segments: list[tuple[str, bool]]) -> list[list[int]]:
        """Token ids of each ``(text, continues_a_document)`` segment; long ones in safe-cut pieces."""
        parts: list[str] = []
        owner: list[int] = []
        for i, (text, cont) in enumerate(segments):
            cuts = safe_char_cuts(text) if len(text) > PIECE_CHARS else [0, len(text)]
            for j in range(len(cuts) - 1):
                part = text[cuts[j]: cuts[j + 1]]
                if (j > 0 or cont) and self.strip_continuation and part.startswith(" "):
                    part = part[1:]
                parts.append(part)
                owner.append(i)
        out: list[list[int]] = [[] for _ in segments]
        for i, ids in zip(owner, self._ids(parts), strict=True):
            out[i].extend(ids)
        return out


class ShardWriter:
    """Token ids appended to a temp file, hashed as written; `close` renames it (only when non-empty)."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, dtype
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.f = None
        self.sha = hashlib.sha256()
        self.tokens = self.documents = self.last_doc_tokens = 0
        self.last_doc_whole = True  # the shard's last document started in this job

    def write(self, ids: np.ndarray) -> None:
        if self.f is None:
            self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        b = ids.astype(self.dtype, copy=False).tobytes()
        self.f.write(b)
        self.sha.update(b)
        self.tokens += ids.size

    def close(self) -> dict[str, Any]:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            os.replace(self.tmp, self.path)
        return dict(file=self.path.name if self.tokens else None, tokens=self.tokens, documents=self.documents,
                    sha256=self.sha.hexdigest() if self.tokens else None, last_doc_tokens=self.last_doc_tokens,
                    last_doc_whole=self.last_doc_whole)

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            self.tmp.unlink(missing_ok=True)


def _documents(job: Job, spec: JobSpec, stats: dict[str, FileStats]) -> Iterator[tuple[str, bool, bool, str | None]]:
    """``(text, starts_document, ends_document, head)``: `head` is the start of a text file's document when a
    job begins in its middle (its split side is decided by the document's first characters, as everywhere)."""
    if job.docs is not None:
        for d in job.docs:
            yield d, True, True, None
        return
    for p in job.pieces or []:
        head = _file_head(p.path) if p.kind == "text" and p.start > 0 else None
        for text, starts, ends in read_piece(p, spec.text_field, stats.setdefault(p.path, FileStats())):
            yield text, starts, ends, head
            head = None


def _file_head(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(4 * 4096 + 4).decode("utf-8", errors="ignore")[:4096]


def run_job(job: Job, spec: JobSpec, progress: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
    """Tokenize one job into its shards and write its marker; returns the marker (or ``{"error": ...}`` for
    bad input, so that every executor reports it the same way). `progress(documents, tokens, input size)`."""
    try:
        return _run_job(job, spec, progress)
    except DataError as e:
        return {"key": job.key, "error": str(e)}


def _run_job(job: Job, spec: JobSpec, progress) -> dict[str, Any]:
    out = Path(spec.out_dir)
    enc = Encoder(spec.tokenizer_file)
    dtype = np.dtype(spec.dtype)
    writers = {side: ShardWriter(out / f"{side}-{job.key}.bin", dtype) for side in ("train", "val")}
    stats: dict[str, FileStats] = {}
    batch: list[tuple[str, bool, bool, str]] = []  # (text, starts, ends, side)
    pending = 0
    sent = [0]  # progress reported in characters read; the job's input size is settled at its end

    def side_of(text: str) -> str:
        if job.role != "split":
            return job.role
        return "val" if is_val(text, spec.val_fraction) else "train"

    def flush() -> None:
        nonlocal pending
        if not batch:
            return
        ids = enc.encode([(t, not starts) for t, starts, _, _ in batch])
        n_docs = tokens = 0
        out: dict[str, list[list[int]]] = {"train": [], "val": []}
        for (_, starts, ends, s), doc_ids in zip(batch, ids, strict=True):
            w = writers[s]
            if ends:
                doc_ids.append(spec.eos_id)
            out[s].append(doc_ids)
            w.last_doc_tokens = (0 if starts else w.last_doc_tokens) + len(doc_ids)
            w.last_doc_whole = starts or w.last_doc_whole
            tokens += len(doc_ids)
            if ends:
                w.documents += 1
                n_docs += 1
        for s, lists in out.items():  # one array and one write per side and batch
            if lists:
                n = sum(len(x) for x in lists)
                writers[s].write(np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=n))
        if progress is not None:
            progress(n_docs, tokens, pending)
            sent[0] += pending
        batch.clear()
        pending = 0

    side = None
    try:
        for text, starts, ends, head in _documents(job, spec, stats):
            if starts:
                side = side_of(text)
            elif side is None:
                side = side_of(head or "")
                writers[side].last_doc_whole = False
            batch.append((text, starts, ends, side))
            pending += len(text)
            if pending >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
                flush()
        flush()
        if progress is not None and job.size != sent[0]:
            progress(0, 0, job.size - sent[0])
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    marker = dict(key=job.key, role=job.role, size=job.size, train=writers["train"].close(),
                  val=writers["val"].close(), files={k: vars(v) for k, v in stats.items()})
    write_json(out / f"job-{job.key}.json", marker)
    return marker


def job_done(out: Path, key: str) -> dict[str, Any] | None:
    """The marker of a finished job whose shards are intact (sizes and sha256 match), else None."""
    path = out / f"job-{key}.json"
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for side in ("train", "val"):
        s = marker.get(side) or {}
        if s.get("tokens"):
            f = out / str(s.get("file"))
            if not f.is_file() or sha256_file(f) != s.get("sha256"):
                return None
    return marker


# ------------------------------------------------------------------------------------- worker processes

_QUEUE = None


def init_worker(queue=None) -> None:
    """Spawn-pool initializer: one tokenizer thread per worker process (workers are the parallelism)."""
    global _QUEUE
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    _QUEUE = queue


def pool_job(job: Job, spec: JobSpec) -> dict[str, Any]:
    """A job in a pool worker, reporting progress through the pool's queue."""
    q = _QUEUE
    return run_job(job, spec, (lambda d, t, c: q.put((d, t, c))) if q is not None else None)


def ray_job(job: Job, spec: JobSpec) -> dict[str, Any]:
    """A job as a Ray task (one CPU, one tokenizer thread)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return run_job(job, spec)
