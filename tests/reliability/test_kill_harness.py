"""Kill harness (issue #8): SIGKILL the real CLI at seeded random points, resume, and demand the result of an
uninterrupted run, bit for bit.

Each kill point starts ``plasticity pretrain | finetune | study`` in a subprocess with its own process group and
kills the whole group with SIGKILL (odd study points: only the main process, as the OOM killer would; its
workers must die with it) after a delay drawn by ``random.Random(f"{SEED}:{kind}:{index}")`` over the
measured duration of the uninterrupted reference run. The delays are stratified so the points cover the run:
even points count from process start (startup, data preparation, model build, training, exit), odd points
(pretrain, finetune) from the moment training starts (``<run>/.lock`` appears) up to ``summary.json``, so they
land mid-step and inside checkpoint writes (``train.checkpoint_every`` = 2); the last pretrain/finetune point
counts from the start of the final save (``.final.tmp-<pid>`` appears; about 50 ms long) over its measured
length. A kill before anything was written still counts (``no_progress``); a run that finished before its kill is
retried from scratch with half the delay, so every point is a real kill. Some points kill the resumed run again.

After every kill and after the last resume, every checkpoint directory on disk must be complete (manifest,
sha256 of every file, weights and trainer state load) or ignored by the loader, temp directories are never
listed, and the loader must pick the newest valid checkpoint with trainer state; the CLI's ``resumed from`` line
must name exactly that one. The finished run must equal the reference: every tensor of ``final/`` (and of the
snapshot checkpoints), ``metrics.jsonl`` and ``summary.json`` minus timing fields; for a study, ``results.csv``
and every run directory under the study.

Every point prints one ``KILLPOINT {json}`` line; the session ends with a tally (tests/reliability/conftest.py).
The fast subset (``FAST``) runs by default, the full set with ``-m slow``. ``PLASTICITY_KILL_SEED`` draws other
points.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from plasticity.train import checkpoint_writer as ckpt
from tests.conftest import tiny_overrides

SEED = int(os.environ.get("PLASTICITY_KILL_SEED", "8"))
POINTS = {"pretrain": 10, "finetune": 8, "study": 6}
FAST = {"pretrain": (4, 7), "finetune": (5,), "study": (3,)}
SECOND_KILL = 0.4  # share of points whose resumed run is killed again
TIMING = ("tok_per_s", "elapsed", "train_time", "wall_time")
TIMEOUT = 600.0

PRETRAIN = {"data.source": "packaged:bbc_news", "tokenizer.train_documents": 150, "train.checkpoint_every": 2}
FINETUNE = {"task": "demo_arith", "task_options.n_train": 32, "task_options.n_test": 8, "cutoff_len": 256,
            "optim.lr": 1e-3, "train.micro_batch_size": 4, "train.grad_accum": 1, "train.epochs": 2,
            "train.log_every": 2, "train.checkpoint_every": 2, "train.threads": 1}
STUDY = {
    "name": "kill",
    "axes": {"optim.weight_decay": [0.0, 1.0]},
    "analyze": ["norms"],
    "base": {
        "model": {"preset": "llama2-tiny"},
        "tokenizer": {"vocab_size": 512, "train_documents": 150},
        "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
        "optim": {"lr": 0.01},
        "train": {"micro_batch_size": 4, "max_steps": 20, "log_every": 5, "eval_sequences": 8,
                  "eval_max_sequences": 16, "checkpoint_every": 3, "threads": 1},
    },
    "finetune": {"task": "demo_arith", "task_options": {"n_train": 16, "n_test": 4}, "cutoff_len": 256,
                 "optim": {"lr": 0.001}, "train": {"micro_batch_size": 4, "grad_accum": 1, "epochs": 2,
                                                   "log_every": 2, "checkpoint_every": 2, "threads": 1}},
    "evaluate": {"k": 2, "max_questions": 4, "max_new_tokens": 12, "batch_size": 8},
}
RESUMED = re.compile(r"resumed from (\S+) \(step (\d+)\)")


# ------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """One CLI invocation: `args` starts a fresh run into `root`; `args` + `resume_flag` continues it."""

    kind: str
    root: Path  # the run directory (pretrain, finetune) or the study's out_dir
    args: tuple[str, ...]
    resume_flag: tuple[str, ...]

    def argv(self, resume: bool) -> list[str]:
        return [sys.executable, "-m", "plasticity.cli", *self.args, *(self.resume_flag if resume else ())]


def pretrain_command(out: Path) -> Command:
    return Command("pretrain", out, ("pretrain", *tiny_overrides(out, **PRETRAIN)), ("--resume",))


def finetune_command(base: Path, out: Path) -> Command:
    args = [f"{k}={v}" for k, v in dict(FINETUNE, init_from=base, out_dir=out).items()]
    return Command("finetune", out, ("finetune", *args), ("--resume",))


def study_command(tmp: Path) -> Command:
    """The study's out_dir holds nodes/, runs/ (every pretrain/finetune/evaluate node) and <name>/results.csv."""
    spec = tmp / "study.yaml"
    spec.write_text(yaml.safe_dump(dict(STUDY, out_dir=str(tmp / "studies"))))
    return Command("study", tmp / "studies", ("study", str(spec), "--workers", "2"), ())


# ------------------------------------------------------------------------------------------- processes


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ),
                                start_new_session=True)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process of the group exists (Linux /proc; elsewhere: assume gone)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill(p: subprocess.Popen, group: bool = True) -> None:
    """SIGKILL the process group (a crash, a stopped container), or only the main process (the OOM killer): its
    children (study workers) must then die with it. Waits until the whole group is gone (its locks released)."""
    if group:
        os.killpg(p.pid, signal.SIGKILL)
    else:
        p.kill()
    p.wait()
    deadline = time.time() + 30
    while _group_alive(p.pid) and time.time() < deadline:
        time.sleep(0.02)
    assert not _group_alive(p.pid), "children outlived the killed process by 30 s"


def _run_and_kill(argv: list[str], log: Path, delay: float, ready: Callable[[], bool] | None,
                  group: bool = True) -> int | None:
    """Run `argv`; SIGKILL it (see `_kill`) `delay` s after start (or after `ready()` turns true). None if
    killed, else the exit code of a run that ended first."""
    p = _spawn(argv, log)
    deadline = time.time() + TIMEOUT
    while ready is not None and p.poll() is None and not ready() and time.time() < deadline:
        time.sleep(0.002)
    try:
        return p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        _kill(p, group)
        return None


def _run(argv: list[str], log: Path) -> int:
    p = _spawn(argv, log)
    try:
        return p.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(p)
        raise


# ------------------------------------------------------------------------------------------- reference runs


@dataclass(frozen=True)
class Reference:
    cmd: Command
    span: float  # seconds from start to exit
    train_at: float  # seconds until training began (`.lock` appeared); 0 for a study
    done_at: float  # seconds until summary.json (a study: its exit)
    final_save: float = 0.05  # seconds from the first sight of `.final.tmp-<pid>` to `final/`


def _training(root: Path) -> bool:
    return (root / ".lock").exists()


def _saving_final(root: Path) -> bool:
    return any(root.glob(".final.tmp-*"))


EVENTS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("train", _training), ("final_tmp", _saving_final), ("final", lambda r: (r / "final").exists()),
    ("done", lambda r: (r / "summary.json").exists()))


def _reference(cmd: Command, log: Path) -> Reference:
    """Run `cmd` uninterrupted and time it (start, training start, final save, summary.json, exit)."""
    t0 = time.perf_counter()
    p = _spawn(cmd.argv(False), log)
    t: dict[str, float] = {}
    while p.poll() is None and time.perf_counter() - t0 < TIMEOUT:
        now = time.perf_counter() - t0
        for name, seen in EVENTS:
            if name not in t and seen(cmd.root):
                t[name] = now
        time.sleep(0.002)
    span = time.perf_counter() - t0
    assert p.wait(timeout=5) == 0, log.read_text()[-3000:]
    final_save = t["final"] - t["final_tmp"] if "final_tmp" in t and "final" in t else 0.05
    return Reference(cmd, span, t.get("train", 0.0), t.get("done", span), max(final_save, 0.01))


@pytest.fixture(scope="module")
def pretrain_ref(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    d = tmp_path_factory.mktemp("pretrain_ref")
    return _reference(pretrain_command(d / "run"), d / "log.txt")


@pytest.fixture(scope="module")
def finetune_ref(tmp_path_factory: pytest.TempPathFactory, pretrain_ref: Reference) -> Reference:
    d = tmp_path_factory.mktemp("finetune_ref")  # fine-tunes the pretraining reference model
    return _reference(finetune_command(pretrain_ref.cmd.root, d / "run"), d / "log.txt")


@pytest.fixture(scope="module")
def study_ref(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    d = tmp_path_factory.mktemp("study_ref")
    return _reference(study_command(d), d / "log.txt")


# ------------------------------------------------------------------------------------------- kill plans


@dataclass(frozen=True)
class Plan:
    anchor: str  # "start" (delay from process start), "train" (from `.lock`: training starts) or "final"
    # (from `.final.tmp-<pid>`: the final save starts)
    delay: float
    second_delay: float | None  # kill the first resume too, this long after its start
    group: bool = True  # SIGKILL the process group; False: the main process only (odd study points)


def plan(kind: str, index: int, ref: Reference) -> Plan:
    """Seeded, stratified kill delays over the measured reference run (see the module docstring)."""
    rng = random.Random(f"{SEED}:{kind}:{index}")
    if kind != "study" and index == POINTS[kind] - 1:  # the last point aims at the final save (~50 ms)
        return Plan("final", ref.final_save * rng.random(), None)
    anchored = kind != "study" and index % 2 == 1
    n = POINTS[kind] // 2 if kind != "study" else POINTS[kind]
    stratum = index // 2 if kind != "study" else index
    span = ref.done_at - ref.train_at if anchored else ref.span
    delay = span * (stratum + rng.random()) / n
    second = rng.random() * ref.span if rng.random() < SECOND_KILL else None
    return Plan("train" if anchored else "start", delay, second, group=not (kind == "study" and index % 2))


# ------------------------------------------------------------------------------------------- on-disk checks


def _run_dirs(root: Path) -> list[Path]:
    """Every run directory (it holds config.yaml) at or under `root`."""
    return sorted(p.parent for p in root.rglob("config.yaml")) if root.exists() else []


def _temp_entries(root: Path) -> set[str]:
    """Temp files/dirs of atomic writes (`.x.tmp-PID`, `.x.old-PID`, `.x.*.tmp`) under `root`."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob(".*") if re.search(r"\.(tmp|old)(-\d+)?$", p.name)}


def _has_state(d: Path) -> bool:
    """Trainer state covered by the manifest (an uncovered trainer_state.pt must never be read)."""
    return ckpt.TRAINER_STATE in (ckpt.read_manifest(d) or {}).get("files", {})


def _load_checkpoint(d: Path) -> None:
    """A checkpoint that verifies must really load: weights, and trainer state of the same step."""
    load_file(str(d / "model.safetensors"))
    if _has_state(d):
        assert ckpt.load_trainer_state(d)["loop"]["step"] == int(d.name.split("_")[1]), d


def check_checkpoints(run: Path) -> tuple[int | None, list[str]]:
    """Every checkpoint dir of `run` is valid or ignored by the loader, and the loader picks the newest valid one
    with trainer state. Returns (the step `--resume` must start from, what is left on disk besides valid
    checkpoints: invalid dirs, trainer states the manifest does not cover, temp dirs)."""
    root = run / "checkpoints"
    listed = [d for _, d in ckpt.list_checkpoints(root)]
    assert all(d.name.startswith("step_") for d in listed), listed  # temp dirs are never listed
    valid, invalid = {}, []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith("."):
            assert re.search(r"\.(tmp|old)-\d+$", d.name), d  # only our temp names hide here
            invalid.append(str(d.relative_to(run)))
            continue
        if ckpt.verify_checkpoint(d) is None:
            _load_checkpoint(d)
            valid[int(d.name.split("_")[1])] = d
            if (d / ckpt.TRAINER_STATE).exists() and not _has_state(d):
                invalid.append(str((d / ckpt.TRAINER_STATE).relative_to(run)))
        else:
            invalid.append(str(d.relative_to(run)))
            assert d not in listed, f"{d}: listed although it does not verify"
    if (run / "final").exists():
        assert ckpt.verify_checkpoint(run / "final") is None, "final/ is never partial"
        _load_checkpoint(run / "final")
    resumable = [s for s, d in valid.items() if _has_state(d)]
    found = ckpt.latest_resumable(root, log=lambda _: None)
    assert (found[0] if found else None) == (max(resumable) if resumable else None), (found, resumable)
    done = _completed(run)
    return (None if done or not resumable else max(resumable)), invalid


def _completed(run: Path) -> bool:
    s = run / "summary.json"
    return s.exists() and json.loads(s.read_text()).get("status") == "completed"


def check_all(root: Path) -> dict[Path, int | None]:
    """check_checkpoints for every run under `root`: {run dir: the step its resume must start from}."""
    return {run: check_checkpoints(run)[0] for run in _run_dirs(root)}


def check_resume_line(log_text: str, expected: dict[Path, int | None], kind: str) -> None:
    """The CLI says it resumed from exactly the checkpoint the loader must pick (pretrain/finetune runs)."""
    if kind == "study":
        return  # study workers log into each run's train.log; check_all covered the loader's choice
    ((run, step),) = expected.items() or ((None, None),)
    m = RESUMED.search(log_text)
    got = (Path(m.group(1)).name, int(m.group(2))) if m else None
    assert got == (None if step is None else (ckpt.step_dir_name(step), step)), (got, step, run)


def _disk(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `root`: what a run attempt changed."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {k for k in after if after[k] != before.get(k)} | (set(before) - set(after))


def landed(cmd: Command, before: dict[str, tuple[int, int]]) -> str:
    """Where a kill landed, judged from what the killed attempt changed on disk: startup (nothing written),
    setup, training, checkpoint-write, final-save, after-completion; a study: training while a run is unfinished,
    after-training, after-results."""
    root = cmd.root
    changed = _changed(before, _disk(root))
    if not changed:
        return "startup"
    temps = [k for k in changed if re.search(r"/\.[^/]*\.(tmp|old)-\d+(/|$)", "/" + k)]
    if any(re.search(r"\.final\.(tmp|old)-", k) for k in temps):
        return "final-save"
    if temps:
        return "checkpoint-write"
    if cmd.kind == "study":
        runs = _run_dirs(root)
        if not runs or not all(_completed(r) and (r / "final").exists() for r in runs):
            return "training"
        return "after-results" if any(k.endswith("results.csv") for k in changed) else "after-training"
    if _completed(root):
        return "after-completion"
    if (root / "final").exists():
        return "final-save"
    return "training" if any(k.startswith(("metrics.jsonl", "checkpoints/")) for k in changed) else "setup"


# ------------------------------------------------------------------------------------------- comparison


def _strip(obj: Any, roots: tuple[Path, Path]) -> Any:
    """Drop timing fields (at any depth); write the run root as <root> so runs in different directories compare."""
    def drop(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: drop(v) for k, v in o.items() if k not in TIMING}
        return [drop(v) for v in o] if isinstance(o, list) else o

    return drop(json.loads(json.dumps(obj).replace(str(roots[0]), "<root>").replace(str(roots[1]), "<root>")))


def _json_files(d: Path, roots: tuple[Path, Path]) -> dict[str, Any]:
    """Every .json / .jsonl file directly in `d`, parsed and stripped (analysis and evaluation outputs)."""
    out: dict[str, Any] = {}
    for f in sorted(d.glob("[!.]*.json*")) if d.is_dir() else []:
        text = f.read_text()
        out[f.name] = _strip([json.loads(x) for x in text.splitlines() if x.strip()] if f.suffix == ".jsonl"
                             else json.loads(text), roots)
    return out


def _metrics(run: Path, roots: tuple[Path, Path]) -> list[dict[str, Any]]:
    return [_strip(json.loads(x), roots) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys(), (a, b)
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{b}: tensors differ from the reference: {different[:5]}"


def assert_same_run(ref: Path, run: Path, roots: tuple[Path, Path]) -> None:
    """Final weights, snapshot checkpoints, metric records and summary equal the reference's."""
    assert_same_weights(ref / "final", run / "final")
    snaps = [[d.name for _, d in ckpt.list_checkpoints(r / "checkpoints")] for r in (ref, run)]
    assert snaps[0] == snaps[1], snaps
    for name in snaps[0]:
        assert_same_weights(ref / "checkpoints" / name, run / "checkpoints" / name)
    assert _metrics(ref, roots) == _metrics(run, roots)
    summaries = [_strip(json.loads((r / "summary.json").read_text()), roots) for r in (ref, run)]
    assert summaries[0] == summaries[1]
    assert _json_files(ref / "analysis", roots) == _json_files(run / "analysis", roots)


def _results(out_dir: Path, roots: tuple[Path, Path]) -> list[dict[str, Any]]:
    with open(out_dir / STUDY["name"] / "results.csv", newline="") as f:
        return [_strip(row, roots) for row in csv.DictReader(f)]


def assert_same_outcome(ref: Path, run: Path, kind: str) -> None:
    """A run: assert_same_run. A study: results.csv rows, and every node directory under runs/ (training runs
    with assert_same_run, evaluation outputs file by file)."""
    roots = (ref, run)
    if kind != "study":
        assert_same_run(ref, run, roots)
        return
    assert _results(ref, roots) == _results(run, roots)
    names = [sorted(p.name for p in (root / "runs").iterdir()) for root in roots]
    assert names[0] == names[1] and names[0], names
    for name in names[0]:
        a, b = ref / "runs" / name, run / "runs" / name
        if (a / "config.yaml").exists():
            assert_same_run(a, b, roots)
        else:
            assert _json_files(a, roots) == _json_files(b, roots) != {}, name


# ------------------------------------------------------------------------------------------- one kill point


def _kill_once(cmd: Command, resume: bool, delay: float, anchor: str, log: Path,
               group: bool = True) -> dict[str, Any] | int:
    """One attempt: the kill record, or the exit code when the run ended before the kill."""
    before = _disk(cmd.root)
    ready = {"start": None, "train": lambda: _training(cmd.root), "final": lambda: _saving_final(cmd.root)}[anchor]
    rc = _run_and_kill(cmd.argv(resume), log, delay, ready, group)
    if rc is not None:
        return rc
    where = landed(cmd, before)
    wrote = sorted(_changed(before, _disk(cmd.root)))
    return {"resume": resume, "anchor": anchor, "delay": round(delay, 3), "killed": "group" if group else "main",
            "landed": where, "no_progress": where == "startup", "wrote": len(wrote), "e.g.": wrote[-3:]}


def first_kill(cmd: Command, p: Plan, log: Path) -> dict[str, Any]:
    """Kill a fresh run; a run that finished first is wiped and retried with half the delay."""
    delay = p.delay
    for attempt in range(1, 7):
        res = _kill_once(cmd, False, delay, p.anchor, log, p.group)
        if isinstance(res, dict):
            return dict(res, attempts=attempt)
        assert res == 0, f"run failed on its own (exit {res}): {log.read_text()[-3000:]}"
        shutil.rmtree(cmd.root, ignore_errors=True)
        delay /= 2
    raise AssertionError(f"the run always finished before its kill (last delay {delay:.2f}s)")


def resume_until_done(cmd: Command, p: Plan, log_dir: Path, kills: list[dict[str, Any]]) -> None:
    """Resume (kill it again when planned) until a resume exits 0; check disk and loader after every stop."""
    second = p.second_delay
    for attempt in range(1, 4):
        expected = check_all(cmd.root)
        log = log_dir / f"resume{attempt}.txt"
        if second is not None:
            res = _kill_once(cmd, True, second, "start", log, p.group)
            second = None
            if isinstance(res, dict):
                kills.append(res)
                if "resumed from" in log.read_text():
                    check_resume_line(log.read_text(), expected, cmd.kind)
                continue
            rc = res
        else:
            rc = _run(cmd.argv(True), log)
        assert rc == 0, f"resume exited {rc}: {log.read_text()[-3000:]}"
        check_resume_line(log.read_text(), expected, cmd.kind)
        return
    raise AssertionError("unreachable: the last resume is never killed")


def kill_point(kind: str, index: int, ref: Reference, make: Callable[[Path], Command], tmp: Path,
               records: list[dict[str, Any]]) -> None:
    p = plan(kind, index, ref)
    cmd = make(tmp)
    t0 = time.perf_counter()
    kills = [first_kill(cmd, p, tmp / "run1.txt")]
    resume_until_done(cmd, p, tmp, kills)
    runs = _run_dirs(cmd.root)
    leftovers = sorted({*_temp_entries(cmd.root), *(str(r.relative_to(cmd.root) / x) for r in runs
                                                     for x in check_checkpoints(r)[1])})
    rec = {"kind": kind, "point": index, "seed": SEED, "reference_s": round(ref.span, 2), "kills": kills,
           "leftovers": leftovers, "identical": False}
    try:
        assert_same_outcome(ref.cmd.root, cmd.root, kind)
        in_runs = [x for x in leftovers if any(r == cmd.root or x.startswith(f"{r.relative_to(cmd.root)}/")
                                               for r in runs)]
        assert not in_runs, f"a finished run keeps leftovers of killed writes: {in_runs}"
        rec["identical"] = True
    finally:
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        records.append(rec)
        print("KILLPOINT " + json.dumps(rec))


def _points(kind: str) -> list:
    return [pytest.param(i, id=f"{kind}-{i:02d}", marks=() if i in FAST[kind] else pytest.mark.slow)
            for i in range(POINTS[kind])]


# ------------------------------------------------------------------------------------------- tests


def test_plans_cover_the_run() -> None:
    """The seeded plans are reproducible, stratified over the whole reference run, and 24+ points in all."""
    ref = Reference(Command("pretrain", Path("x"), (), ()), span=30.0, train_at=18.0, done_at=26.0, final_save=0.05)
    plans = [plan("pretrain", i, ref) for i in range(POINTS["pretrain"])]
    assert plans == [plan("pretrain", i, ref) for i in range(POINTS["pretrain"])]
    start = sorted(x.delay for x in plans if x.anchor == "start")
    train = sorted(x.delay for x in plans if x.anchor == "train")
    final = [x.delay for x in plans if x.anchor == "final"]
    assert start[0] < 6 and start[-1] > 24 and train[0] < 1.6 and train[-1] > 4.8 and 0 <= final[0] < 0.05
    assert any(x.second_delay is not None for x in plans) and sum(POINTS.values()) >= 24


@pytest.mark.parametrize("index", _points("pretrain"))
def test_pretrain_kill_point(index: int, pretrain_ref: Reference, tmp_path: Path,
                             kill_records: list[dict[str, Any]]) -> None:
    kill_point("pretrain", index, pretrain_ref, lambda d: pretrain_command(d / "run"), tmp_path, kill_records)


@pytest.mark.parametrize("index", _points("finetune"))
def test_finetune_kill_point(index: int, pretrain_ref: Reference, finetune_ref: Reference, tmp_path: Path,
                             kill_records: list[dict[str, Any]]) -> None:
    make = lambda d: finetune_command(pretrain_ref.cmd.root, d / "run")  # noqa: E731
    kill_point("finetune", index, finetune_ref, make, tmp_path, kill_records)


@pytest.mark.parametrize("index", _points("study"))
def test_study_kill_point(index: int, study_ref: Reference, tmp_path: Path,
                          kill_records: list[dict[str, Any]]) -> None:
    kill_point("study", index, study_ref, study_command, tmp_path, kill_records)
