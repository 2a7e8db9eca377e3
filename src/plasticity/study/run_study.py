"""``plasticity study``: plan -> run what is not done -> results.csv -> report, top to bottom.

Layout (see docs/artifacts.md): ``<out_dir>/runs/<kind>-<hash>/`` node outputs (shared by every study with
the same ``out_dir``), ``<out_dir>/nodes/<id>.json|.lock`` node state, ``<out_dir>/logs/<id>.log`` node logs,
``<out_dir>/<name>/`` the study: ``study.json``, ``results.csv``, ``report/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plasticity.checkpoints import RunDir
from plasticity.errors import UserError
from plasticity.files import tail_text, write_json, write_text
from plasticity.hardware import usable_cpus
from plasticity.study.plan import Plan, build_plan
from plasticity.study.results import collect_rows, to_csv
from plasticity.study.scheduler import execute_plan, make_engine
from plasticity.study.spec import StudySpec, all_axes
from plasticity.study.stages import STAGES
from plasticity.study.state import FORMAT_VERSION, check_study_dir, clear_marker, node_states


@dataclass
class StudyOutcome:
    study_dir: Path
    rows: list[dict[str, Any]]
    states: dict[str, str]
    ran: dict[str, dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(s == "done" for s in self.states.values())


def choose_workers(requested: int | None, spec: StudySpec) -> tuple[int, int]:
    """(worker processes, torch threads each). Default: one 1-thread worker per core — on 2-core machines two
    1-thread processes gave 1.16-1.26x the study throughput of one 2-thread process (benchmarks/bench_workers.py).
    Threads depend only on the worker count, never on how many nodes are left, so results do not depend on
    where a study was interrupted."""
    cpus = usable_cpus()
    workers = max(1, requested or spec.workers or cpus)
    return workers, max(1, cpus // workers)


def row_axes(spec: StudySpec) -> list[str]:
    """The axis columns of results.csv: those the stages add (a checkpoint study's entry name), then the grid's
    axes."""
    return [k for s in STAGES.values() for k in s.row_keys(spec)] + list(all_axes(spec))


def study_dir_of(spec: StudySpec) -> Path:
    return Path(spec.out_dir) / spec.name


class ResultsRefresh:
    """Rewrites results.csv while a study runs (after the first finished node, then at most every
    `interval` seconds), so `plasticity report` can show a long study's finished rows before it ends; the
    unfinished rows say `pending`. A failed refresh is logged once and never stops the study."""

    def __init__(self, write: Callable[[], None], log: Callable[[str], None], interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.write, self.log, self.interval, self.clock = write, log, interval, clock
        self.last: float | None = None
        self.warned = False

    def __call__(self) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            return
        self.last = now
        try:
            self.write()
        except (OSError, ValueError, KeyError) as e:  # a file being replaced under us: the next refresh retries
            if not self.warned:
                self.log(f"  note: results.csv not refreshed mid-study ({type(e).__name__}: {e}); it is written "
                         "at the end")
                self.warned = True


def run_study(spec: StudySpec, workers: int | None = None, executor: str | None = None, retry_failed: bool = False,
              log: Callable[[str], None] = print) -> StudyOutcome:
    """Run every node that is not done (failed nodes only with `retry_failed`); write results.csv."""
    from filelock import FileLock, Timeout

    from plasticity.tracking import backend_names, require

    require(backend_names(spec.tracker))  # a missing tracker package: one line before any node runs
    plan = build_plan(spec)
    sdir = study_dir_of(spec)
    check_study_dir(sdir, plan.root)
    sdir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(sdir / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{sdir}: another plasticity study process is running this study") from None
    try:
        write_json(sdir / "study.json", dict(format_version=FORMAT_VERSION, name=spec.name, spec=asdict(spec),
                                             nodes=list(plan.nodes), written=time.strftime("%Y-%m-%dT%H:%M:%S")))
        states = _starting_states(plan, retry_failed)
        todo = [nid for nid, s in states.items() if s in ("pending", "running")]
        done = {nid for nid, s in states.items() if s == "done"}
        w, threads = choose_workers(workers, spec)
        kind = executor or spec.executor
        log(f"study '{spec.name}': {len(plan.nodes)} nodes ({len(plan.rows)} result rows): {len(done)} cached, "
            f"{_count(states, 'failed')} failed before and {_count(states, 'skipped')} skipped (--retry-failed to "
            f"re-run), {len(todo)} to run ({kind} executor, {w} workers x {threads} threads)")

        def write_results(states: dict[str, str]) -> list[dict[str, Any]]:
            rows = collect_rows(plan, states, sdir)
            write_text(sdir / "results.csv", to_csv(rows, row_axes(spec)))
            return rows

        refresh = ResultsRefresh(lambda: write_results(node_states(plan)), log)
        ran = execute_plan(plan, todo, done, make_engine(kind, w, threads), log, refresh) if todo else {}
        states = node_states(plan)
        for nid, res in ran.items():  # nodes this run skipped or that were interrupted keep that state
            if res["status"] in ("skipped", "interrupted") and states[nid] == "pending":
                states[nid] = res["status"]
        rows = write_results(states)
        for s in STAGES.values():
            s.review(rows, log)
        return StudyOutcome(study_dir=sdir, rows=rows, states=states, ran=ran)
    finally:
        lock.release()


def _starting_states(plan: Plan, retry_failed: bool) -> dict[str, str]:
    """Every node's state before the run (failed nodes' markers cleared first with `retry_failed`)."""
    states = node_states(plan)
    if retry_failed and "failed" in states.values():
        for nid, s in states.items():
            if s == "failed":
                clear_marker(plan.root, nid)
        states = node_states(plan)
    return states


def _count(states: dict[str, str], state: str) -> int:
    return sum(s == state for s in states.values())


def training_progress(run_dir: Path, running: bool) -> str | None:
    """Where a training node's run stands, from its ``run_info.json`` (total steps) and the last logged step of
    ``metrics.jsonl``: ``step 1800/2413 (75%), ~24 min left`` while it runs (from the last logged tok/s),
    ``stopped at step 1800/2413`` for an interrupted one (it resumes from its newest checkpoint). None before
    its first logged step."""
    try:
        run = RunDir(run_dir)
        total = int(json.loads(run.run_info_path.read_text())["total_steps"])
        tail = tail_text(run.metrics_path, 8192).splitlines()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    last = None
    for line in reversed(tail):
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a partial line (the start of the tail, or one being written)
        if isinstance(rec, dict) and {"tok_per_s", "step", "tokens"} <= rec.keys():
            last = rec
            break
    if last is None or total <= 0:
        return None
    step = int(last["step"])
    where = f"step {step:,}/{total:,} ({100 * step / total:.0f}%)"
    if not running:
        return f"stopped at {where}"
    rate = float(last["tok_per_s"]) / max(1.0, float(last["tokens"]) / max(step, 1))  # steps per second
    return where + (f", ~{(total - step) / rate / 60:.0f} min left" if rate > 0 else "")


def plan_table(plan: Plan, states: dict[str, str]) -> list[dict[str, Any]]:
    """One record per node for `status` / `--dry-run`: state, key metric, estimated tokens/FLOPs."""
    from plasticity.study.state import read_marker

    out = []
    for n in plan.nodes.values():
        m = read_marker(plan.root, n.id) or {}
        metric = m.get("reason") if states[n.id] == "failed" else next(
            (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (m.get("metrics") or {}).items()), "")
        if states[n.id] in ("running", "pending") and STAGES[n.kind].trains:
            metric = training_progress(Path(n.out), running=states[n.id] == "running") or metric
        out.append(dict(node=n.id, kind=n.kind, state=states[n.id], label=n.label, metric=metric or "",
                        est_tokens=n.est_tokens, est_flops=n.est_flops, out=m.get("out") or n.out))
    return out
