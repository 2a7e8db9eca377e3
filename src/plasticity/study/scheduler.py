"""Execute a plan's pending nodes: a scheduler that starts every node whose inputs are done, on an engine.

Engines: ``local`` (a pool of spawn worker processes, CPU threads split evenly between them) and ``ray``
(one Ray task per node with its CPU/GPU needs; connects to ``RAY_ADDRESS`` or starts a local Ray). A failed
node's dependents are skipped; every other node goes on. A node another process is running is waited for.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from plasticity.files import tail_text
from plasticity.hardware import connect_ray
from plasticity.study.plan import Node, Plan
from plasticity.study.worker import die_with_parent, pid_path, run_node

HEARTBEAT_S = 30.0


def duration(seconds: float) -> str:
    """Seconds as a person reads them: ``42s``, ``17m05s``, ``4h27m``."""
    s = int(round(seconds))
    if s < 90:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def visible_gpus() -> int:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES applied); 0 without CUDA."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver: schedule as a CPU machine
        return 0


class LocalEngine:
    """`workers` spawn processes with `threads` torch threads each. On a GPU machine a node starts only when its
    GPUs (``resources.*_gpus``) are free, and runs on those GPUs alone (CUDA_VISIBLE_DEVICES for its torchrun
    processes, the current device in-process); on a CPU machine GPU needs are ignored."""

    def __init__(self, workers: int, threads: int, gpus: int | None = None):
        import multiprocessing as mp

        self.slots, self.threads = workers, threads
        self.free_gpus = list(range(visible_gpus() if gpus is None else gpus))
        self.total_gpus = len(self.free_gpus)
        self.held: dict[Any, list[int]] = {}
        self.pool = mp.get_context("spawn").Pool(workers, initializer=die_with_parent)
        self.lost = False  # a worker died under a node (its task was settled by hand)

    def _need(self, node: Node) -> int:
        return min(node.gpus, self.total_gpus)  # more than the machine has: all of them (the sizing warns first)

    def fits(self, node: Node) -> bool:
        return self._need(node) <= len(self.free_gpus)

    def submit(self, node: Node, root: str, log_path: str):
        pid_path(Path(root), node.id).unlink(missing_ok=True)  # a killed earlier study's: not this worker's
        devices = [self.free_gpus.pop(0) for _ in range(self._need(node))]
        h = _Handle(self.pool.apply_async(run_node, (asdict(node), root, self.threads, log_path, devices or None)),
                    node, Path(root), log_path)
        self.held[h] = devices
        return h

    def finished(self, handles: list, timeout: float) -> list:
        end = time.time() + timeout
        while True:
            done = [h for h in handles if h.ready() or h.worker_died()]
            if done or time.time() >= end:
                return done
            time.sleep(0.1)

    def result(self, handle) -> dict[str, Any]:
        self.free_gpus = sorted(self.free_gpus + self.held.pop(handle, []))
        if handle.ready():
            return handle.async_result.get()
        # the pool replaces a dead worker but never answers for its task: the node fails and the study goes on
        from plasticity.study.state import write_marker

        reason = (f"the worker process running it died (killed by a signal: out of memory?); see "
                  f"{handle.log_path}")
        write_marker(handle.root, handle.node, "failed", reason=reason)
        # settle the task the pool will never answer for: a pending task keeps the pool replacing workers
        # (close + join would wait forever, terminate can block on the task queue's lock an idle worker holds)
        handle.async_result._set(0, (False, RuntimeError(reason)))
        pid_path(handle.root, handle.node.id).unlink(missing_ok=True)
        self.lost = True
        return {"status": "failed", "reason": reason}

    def close(self) -> None:
        self.pool.close()
        self.pool.join()  # every worker and handler thread has ended here
        if getattr(self, "lost", False):
            # the pool's finalizer would run its terminate step again when the pool is collected, and that step
            # waits for the task queue's lock, which the killed worker may have died holding: nothing is left
            # for it to do after join, so it is cancelled
            self.pool._terminate.cancel()


class _Handle:
    """A node submitted to the local pool: its pending result, and the worker's pid file to see it die."""

    def __init__(self, async_result, node: Node, root: Path, log_path: str):
        self.async_result, self.node, self.root, self.log_path = async_result, node, root, log_path
        self.pid: int | None = None

    def ready(self) -> bool:
        return self.async_result.ready()

    def worker_died(self) -> bool:
        """Whether the worker that took this node is gone (its pid file names a process that no longer runs)."""
        if self.pid is None:
            try:
                self.pid = int(pid_path(self.root, self.node.id).read_text())
            except (OSError, ValueError):
                return False  # not started yet (or finished: then ready() says so)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return not self.ready()
        except PermissionError:
            return False
        return False


class RayEngine:
    """One Ray task per node, scheduled by Ray with `num_cpus` = threads and `num_gpus` = the node's GPUs."""

    def __init__(self, workers: int, threads: int):
        self.ray = ray = connect_ray(workers * threads)
        self.slots = max(workers, int(ray.cluster_resources().get("CPU", workers)) // max(threads, 1))
        self.threads = threads
        self.remote = ray.remote(max_retries=0)(run_node)

    def fits(self, node: Node) -> bool:
        return True  # Ray queues a task until a node of the cluster has its CPUs and GPUs

    def submit(self, node: Node, root: str, log_path: str):
        opts: dict[str, Any] = {"num_cpus": self.threads * max(1, node.nproc if not node.gpus else 1)}
        if node.gpus:
            opts["num_gpus"] = node.gpus
        return self.remote.options(**opts).remote(asdict(node), os.path.abspath(root), self.threads,
                                                  os.path.abspath(log_path))

    def finished(self, handles: list, timeout: float) -> list:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return done

    def result(self, handle) -> dict[str, Any]:
        try:
            return self.ray.get(handle)
        except Exception as e:  # noqa: BLE001 - a lost worker is a failed node, not a failed study
            return {"status": "failed", "reason": f"ray task failed: {type(e).__name__}: {str(e)[:300]}"}

    def close(self) -> None:
        pass  # a Ray instance we started stays up for the process; ray.shutdown() is the caller's choice


def make_engine(kind: str, workers: int, threads: int):
    return RayEngine(workers, threads) if kind == "ray" else LocalEngine(workers, threads)


def execute_plan(plan: Plan, todo: list[str], done: set[str], engine, log: Callable[[str], None] = print,
                 on_finished: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run the `todo` nodes (inputs in `done` or run here). Returns {node id: result} for every todo node,
    with status done / failed / skipped / interrupted. `on_finished` is called after each batch of nodes that
    finished (the study refreshes results.csv with it)."""
    root = str(plan.root)
    pending = list(todo)
    running: dict[Any, str] = {}
    results: dict[str, dict[str, Any]] = {}
    retry_at: dict[str, float] = {}
    progress = _Progress(plan, todo, log)
    last_beat = time.time()
    try:
        while pending or running:
            for nid in list(pending):
                node = plan.nodes[nid]
                bad = [d for d in node.deps if results.get(d, {}).get("status") in ("failed", "skipped",
                                                                                       "interrupted")]
                if bad:
                    pending.remove(nid)
                    results[nid] = {"status": "skipped", "reason": f"input {bad[0]} did not finish"}
                    log(f"  skip  {nid}: input {bad[0]} did not finish")
                    continue
                ready = all(d in done or results.get(d, {}).get("status") == "done" for d in node.deps)
                if (ready and len(running) < engine.slots and retry_at.get(nid, 0) <= time.time()
                        and engine.fits(node)):
                    pending.remove(nid)
                    running[engine.submit(node, root, _log_path(plan, nid))] = nid
                    progress.started(node)
            if not running:
                time.sleep(0.5)  # only nodes waiting for another process remain
                continue
            finished = ctrl_c = False
            for h in engine.finished(list(running), timeout=1.0):
                nid = running.pop(h)
                res = engine.result(h)
                if res.get("status") == "busy":  # another study process runs it: wait for it, then re-check
                    pending.append(nid)
                    retry_at[nid] = time.time() + 5
                    continue
                results[nid] = res
                progress.finished(plan.nodes[nid], res)
                finished = True
                ctrl_c = ctrl_c or (res.get("status") == "interrupted" and res.get("signal") == signal.SIGINT)
            if finished and on_finished is not None:
                on_finished()
            if ctrl_c:  # a node stopped on Ctrl-C: the study stops too, even if its own SIGINT got lost
                raise KeyboardInterrupt
            if time.time() - last_beat > HEARTBEAT_S:
                last_beat = time.time()
                progress.heartbeat([running[h] for h in running])
    finally:
        engine.close()
    return results


def _log_path(plan: Plan, node_id: str) -> str:
    return str(plan.root / "logs" / f"{node_id}.log")


class _Progress:
    """Per-node start/finish lines and an overall ETA from estimated FLOPs done per second."""

    def __init__(self, plan: Plan, todo: list[str], log: Callable[[str], None]):
        self.plan, self.log, self.t0 = plan, log, time.time()
        self.total = len(todo)
        self.work = {nid: plan.nodes[nid].est_flops or 0.0 for nid in todo}
        self.done_work = 0.0
        self.n_done = 0

    def started(self, node: Node) -> None:
        self.log(f"  start {node.id} [{node.label}] (log: {_log_path(self.plan, node.id)})")

    def finished(self, node: Node, res: dict[str, Any]) -> None:
        self.n_done += 1
        self.done_work += self.work.get(node.id, 0.0)
        metric = ", ".join(f"{k} {_fmt(v)}" for k, v in list((res.get("metrics") or {}).items())[:3])
        what = res.get("status") if res.get("status") != "done" else "done "
        extra = f": {res.get('reason')}" if res.get("status") != "done" else (f" {metric}" if metric else "")
        took = res.get("seconds", 0)
        self.log(f"  {what} {node.id} in {took:.1f}s" + (f" ({duration(took)})" if took >= 90 else "") + f"{extra}   "
                 f"[{self.n_done}/{self.total} nodes, {self.eta()}]")

    def eta(self) -> str:
        left = sum(self.work.values()) - self.done_work
        elapsed = time.time() - self.t0
        if self.done_work <= 0 or left <= 0:
            return f"elapsed {duration(elapsed)}"
        return f"elapsed {duration(elapsed)}, ETA ~{duration(left * elapsed / self.done_work)}"

    def heartbeat(self, running: list[str]) -> None:
        for nid in running:
            last = _last_line(Path(_log_path(self.plan, nid)))
            self.log(f"  ..... {nid}: {last.removeprefix(f'[{nid}] ')}")  # the run's own lines start with its name


def _last_line(path: Path) -> str:
    try:
        lines = tail_text(path, 400).strip().splitlines()
    except OSError:
        return "(starting)"
    return lines[-1][:160] if lines else "(starting)"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
