"""Prepare a token cache in bounded memory: plan shard jobs, run them (in this process, a pool of spawn workers,
or Ray tasks), resume from finished shards, and write ``meta.json`` last.

Local files (without ``data.max_documents``) are planned into jobs from file sizes and parquet footers alone, and
each job reads its own pieces: reading is parallel too. Hub and packaged sources, and any source capped by
``data.max_documents``, are streamed by this process in chunks of ``data.shard_mb`` and tokenized by the workers;
at most two chunks per worker are in flight, so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plasticity.data.pieces import FileStats, first_line, group_jobs, local_files, plan_pieces
from plasticity.data.runners import InProcess, LocalPool, Progress, RayTasks
from plasticity.data.shards import Job, JobSpec, job_done
from plasticity.data.sources import iter_documents
from plasticity.errors import DataError
from plasticity.files import atomic_path, write_json
from plasticity.hardware import usable_cpus

FORMAT = 2


def is_streamed(source: str | list[str], limit: int | None) -> bool:
    return isinstance(source, str) and source.startswith(("hf:", "packaged:")) or limit is not None


def resolve_hub_revision(dataset_id: str, revision: str | None) -> str:
    """The commit a Hub dataset revision (branch, tag or None = main) points to now: the cache streams exactly
    that commit, also when a killed preparation resumes later."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(dataset_id, revision=revision).sha
    except Exception as e:  # noqa: BLE001 - offline, gated, missing: one line
        raise DataError(f"hf:{dataset_id}: cannot resolve revision {revision or 'main'} on the Hub: "
                        f"{first_line(e)}") from None


@dataclass
class SourcePlan:
    """The jobs of one source (index 0: `data.source`, 1: `data.val_source`)."""

    index: int
    role: str
    describe: dict
    jobs: list[Job] | None = None  # planned local jobs
    stream: Callable[[], Iterator[str]] | None = None  # streamed documents
    total_size: int | None = None

    def iter_jobs(self, shard_chars: int) -> Iterator[Job]:
        if self.jobs is not None:
            yield from self.jobs
            return
        chunk: list[str] = []
        size = k = 0
        assert self.stream is not None
        for doc in self.stream():
            chunk.append(doc)
            size += len(doc)
            if size >= shard_chars:
                yield Job(f"{self.index}-{k:06d}", self.role, docs=chunk, size=size)
                chunk, size, k = [], 0, k + 1
        if chunk:
            yield Job(f"{self.index}-{k:06d}", self.role, docs=chunk, size=size)


def plan_source(data, index: int, previous: dict | None, warn: Callable[[str], None]) -> SourcePlan:
    """Jobs of `data.source` (index 0) or `data.val_source` (1). Local files are checked and planned here, before
    anything is written; a Hub source is pinned to a commit (the one in `previous`, a resumed plan, if any)."""
    source = data.source if index == 0 else data.val_source
    role = ("train" if data.val_source else "split") if index == 0 else "val"
    limit = data.max_documents if index == 0 else None
    split = data.hf_split if index == 0 else "validation"
    shard_bytes = max(1, int(data.shard_mb * 2**20))
    if is_streamed(source, limit):
        revision = data.hf_revision
        if isinstance(source, str) and source.startswith("hf:"):
            revision = (previous or {}).get("hf_revision") or resolve_hub_revision(source[3:], data.hf_revision)

        def stream() -> Iterator[str]:
            return iter_documents(source, data.text_field, data.hf_config, split, revision, limit, warn)

        return SourcePlan(index, role, dict(source=source, streamed=True, hf_revision=revision, limit=limit),
                          stream=stream)
    files = local_files(source)
    pieces = plan_pieces(files, shard_bytes, data.text_field)
    jobs = [Job(f"{index}-{k:06d}", role, pieces=g, size=sum(p.size for p in g))
            for k, g in enumerate(group_jobs(pieces, shard_bytes))]
    return SourcePlan(index, role, dict(source=source, streamed=False, pieces=[p.to_dict() for p in pieces]),
                      jobs=jobs, total_size=sum(p.size for p in pieces))


def shard_plan(d) -> dict[str, Any]:
    """What preparing the config's corpus would read, without reading it: local files, input bytes and jobs; a
    streamed source (Hub, packaged, capped by data.max_documents) says why its size is unknown."""
    if is_streamed(d.source, d.max_documents):
        if isinstance(d.source, str) and d.source.startswith("hf:"):
            what = f"{d.source}" + (f" ({d.hf_config})" if d.hf_config else "")
            why = f"corpus size unknown without the Hub: {what} is streamed when prepared"
        elif d.max_documents is not None:
            why = f"streamed: the first {d.max_documents:,} documents of {d.source}"
        else:
            why = f"streamed: {d.source}"
        return dict(streamed=True, note=why)
    files = local_files(d.source)
    shard_bytes = max(1, int(d.shard_mb * 2**20))
    pieces = plan_pieces(files, shard_bytes, d.text_field)
    return dict(streamed=False, files=len(files), input_bytes=sum(p.size for p in pieces),
                jobs=len(group_jobs(pieces, shard_bytes)), shard_mb=d.shard_mb)


# ------------------------------------------------------------------------------------------- the driver


@dataclass
class Prepared:
    meta: dict
    stats: dict


def prepare_cache(data, out: Path, tokenizer_file: Path, eos_id: int, vocab: int, fingerprint: str,
                  log: Callable[[str], None] = print, executor: str = "local", bar: bool = False) -> Prepared:
    """Tokenize `data` into the shard cache `out` (the caller holds its lock). Bad input: DataError and no
    cache directory left; an interruption leaves finished shards for the next call to resume from."""
    t0 = time.time()
    previous = _read_json(out / "plan.json")
    prev_sources = (previous or {}).get("sources") or [None, None]
    warn = log
    plans = [plan_source(data, 0, prev_sources[0], warn)]
    if data.val_source:
        plans.append(plan_source(data, 1, prev_sources[1], warn))
    dtype = "uint16" if vocab <= 65535 else "uint32"
    plan = dict(format=FORMAT, shard_mb=data.shard_mb, dtype=dtype, sources=[p.describe for p in plans])
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if previous != plan:
            _clear(out)
            write_json(out / "plan.json", plan)
        for tmp in out.glob(".*.tmp"):  # a killed worker's unfinished shard (we hold the lock: nobody writes)
            tmp.unlink(missing_ok=True)
        spec = JobSpec(str(out), str(tokenizer_file), eos_id, dtype, data.val_fraction, data.text_field)
        workers = data.num_workers or usable_cpus()
        totals = [p.total_size for p in plans]
        progress = Progress(None if None in totals else sum(t or 0 for t in totals), log, bar)
        try:
            markers, resumed = _execute(plans, spec, workers, executor, progress, data.shard_mb)
        finally:
            progress.close()
        meta = _finalize(out, data, markers, dtype, eos_id, vocab, fingerprint, plan, log)
        secs = time.time() - t0
        new_tokens = progress.session_tokens
        stats = dict(seconds=round(secs, 3), tokens_per_second=round(new_tokens / max(secs, 1e-9), 1),
                     workers=workers, executor=executor, jobs=len(markers), resumed_jobs=resumed,
                     tokens_this_run=new_tokens)
        write_json(out / "prepare.json", stats)
        write_json(out / "meta.json", meta)  # written last: its presence marks a complete cache
        return Prepared(meta, stats)
    except DataError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            _clear(out)
        raise


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _clear(out: Path) -> None:
    """Remove a stale or failed preparation's files (another plan's shards must never be reused)."""
    for f in out.iterdir():
        if f.is_file() and (f.suffix in (".bin", ".json", ".tmp") or f.name.startswith(".")):
            f.unlink(missing_ok=True)


def _execute(plans: list[SourcePlan], spec: JobSpec, workers: int, executor: str, progress: Progress,
             shard_mb: float) -> tuple[list[dict], int]:
    """Run every job not already done; returns all markers in job order and how many were resumed."""
    out = Path(spec.out_dir)
    shard_chars = max(1, int(shard_mb * 2**20))
    markers: dict[str, dict] = {}
    resumed = 0

    def todo() -> Iterator[Job]:
        nonlocal resumed
        for p in plans:
            for job in p.iter_jobs(shard_chars):
                m = job_done(out, job.key)
                if m is not None:
                    markers[job.key] = m
                    resumed += 1
                    progress.add(m["train"]["documents"] + m["val"]["documents"],
                                 m["train"]["tokens"] + m["val"]["tokens"], m.get("size", 0), resumed=True)
                else:
                    yield job

    jobs = todo()
    head = list(itertools.islice(jobs, 2))
    if executor == "ray" and head:
        runner: Any = RayTasks(workers, progress)
    elif workers <= 1 or len(head) <= 1:
        runner = InProcess(progress, threads=workers)
    elif mp.current_process().daemon:  # a study's pool worker may not start processes: Rust threads instead
        progress.log(f"tokenizing in this process with {workers} tokenizer threads (a pool worker cannot start "
                     "worker processes; `plasticity data` prepares with processes)")
        runner = InProcess(progress, threads=workers)
    else:
        runner = LocalPool(workers, progress)
    inflight: list = []
    try:
        for job in itertools.chain(head, jobs):
            while len(inflight) >= workers + 2:  # a bounded window: streamed chunks carry their text
                _collect(runner, inflight, markers)
            inflight.append(runner.submit(job, spec))
        while inflight:
            _collect(runner, inflight, markers)
    finally:
        runner.close()
    return [markers[k] for k in sorted(markers, key=_order)], resumed


def _order(key: str) -> tuple[int, int]:
    a, b = key.split("-")
    return int(a), int(b)


def _collect(runner, inflight: list, markers: dict) -> None:
    for h in runner.wait(inflight):
        inflight.remove(h)
        res = runner.result(h)
        if "error" in res:
            raise DataError(res["error"])
        markers[res["key"]] = res


def _finalize(out: Path, data, markers: list[dict], dtype: str, eos_id: int, vocab: int, fingerprint: str,
              plan: dict, log: Callable[[str], None]) -> dict:
    _check_files(markers, data.text_field, log)
    label = data.source if isinstance(data.source, str) else ", ".join(data.source)
    n = {s: sum(m[s]["documents"] for m in markers) for s in ("train", "val")}
    if n["train"] + n["val"] == 0:
        raise DataError(f"{label}: no documents")
    if n["val"] == 0 and not data.val_source:  # tiny corpora: hold out the last document
        _move_last_document(out, markers, dtype)
    n = {s: sum(m[s]["documents"] for m in markers) for s in ("train", "val")}
    if n["train"] == 0 or n["val"] == 0:
        raise DataError(f"{label}: need at least 2 documents to split train/validation")
    shards = {s: [dict(file=m[s]["file"], tokens=m[s]["tokens"], documents=m[s]["documents"],
                       sha256=m[s]["sha256"]) for m in markers if m[s]["tokens"]] for s in ("train", "val")}
    return dict(format=FORMAT, source=data.source, text_field=data.text_field,
                train_tokens=sum(s["tokens"] for s in shards["train"]),
                val_tokens=sum(s["tokens"] for s in shards["val"]),
                train_documents=n["train"], val_documents=n["val"], dtype=dtype, eos_id=eos_id, vocab=vocab,
                tokenizer_fingerprint=fingerprint, shard_mb=data.shard_mb,
                hf_revision=[s.get("hf_revision") for s in plan["sources"]], shards=shards)


def _check_files(markers: list[dict], text_field: str, log: Callable[[str], None]) -> None:
    """Per local file, over all its jobs: no usable line is an error, skipped lines one warning line."""
    files: dict[str, FileStats] = {}
    for m in markers:
        for path, st in m.get("files", {}).items():
            files.setdefault(path, FileStats()).add(st)
    for path, st in files.items():
        bad = {"not UTF-8": st.not_utf8, "not JSON": st.not_json, f"without a string '{text_field}'": st.no_field}
        detail = ", ".join(f"{v} {k}" for k, v in bad.items() if v)
        if st.good == 0 and path.endswith((".jsonl", ".json")):
            raise DataError(f"{path}: no usable lines with a string field '{text_field}' ({detail or 'no lines'})")
        if st.good and sum(bad.values()):
            log(f"warning: {path}: skipped {sum(bad.values())} bad lines ({detail}); {st.good} documents read")


def _move_last_document(out: Path, markers: list[dict], dtype: str) -> None:
    """The last training document becomes the validation split (a corpus too small for the hash split)."""
    last = next((m for m in reversed(markers) if m["train"]["documents"]), None)
    if last is None:
        return
    t = last["train"]
    if not t["last_doc_whole"]:
        raise DataError("the corpus is a single long document spread over several shards: set data.val_source "
                        "or raise data.val_fraction so that the validation split is not empty")
    tokens = np.fromfile(out / t["file"], dtype=dtype)
    keep, moved = tokens[: len(tokens) - t["last_doc_tokens"]], tokens[len(tokens) - t["last_doc_tokens"]:]
    import hashlib

    key = last["key"]
    val_name = f"val-{key}.bin"
    with atomic_path(out / val_name) as tmp:
        moved.tofile(tmp)
    if keep.size:
        with atomic_path(out / t["file"]) as tmp:
            keep.tofile(tmp)
    else:
        (out / t["file"]).unlink()
    last["val"] = dict(file=val_name, tokens=int(moved.size), documents=1,
                       sha256=hashlib.sha256(moved.tobytes()).hexdigest(), last_doc_tokens=int(moved.size),
                       last_doc_whole=True)
    last["train"] = dict(t, file=t["file"] if keep.size else None, tokens=int(keep.size), documents=t["documents"] - 1,
                         sha256=hashlib.sha256(keep.tobytes()).hexdigest() if keep.size else None, last_doc_tokens=0)
    write_json(out / f"job-{key}.json", last)
