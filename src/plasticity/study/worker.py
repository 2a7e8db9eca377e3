"""Run one study node in a worker process (local pool or Ray task): take its lock, run its stage
(`plasticity.study.stages`), write its marker. A node that fails (bad input, divergence, a crash) is recorded
with its reason; an interrupted node (SIGTERM/SIGINT) records nothing, so the next study run resumes it from
its newest checkpoint."""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from plasticity.errors import DivergenceError, UserError
from plasticity.study.stages.base import Node, RunContext


def die_with_parent() -> None:
    """Pool initializer: a worker is killed when the study process dies (Linux), so a killed study never
    leaves workers training in the background (and holding node locks). An idle worker ignores Ctrl-C (the
    terminal sends SIGINT to every process of the study: an idle one would print a KeyboardInterrupt traceback);
    `run_node` takes it while a node runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def pid_path(root: Path, node_id: str) -> Path:
    """``<out_dir>/nodes/<id>.pid``: the worker running the node (so the study sees a worker that died)."""
    return root / "nodes" / f"{node_id}.pid"


@contextlib.contextmanager
def on_gpus(devices: list[int] | None) -> Iterator[None]:
    """Run a node on `devices` (indices among this process's visible GPUs): its torchrun processes see only
    those (CUDA_VISIBLE_DEVICES), an in-process run uses the first as the current device."""
    if not devices:
        yield
        return
    import os

    import torch

    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = old.split(",") if old else [str(i) for i in range(torch.cuda.device_count())]
    torch.cuda.init()  # this process keeps the view it started with (CUDA reads the variable once, here) ...
    torch.cuda.set_device(devices[0])
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(physical[i] for i in devices)  # ... its subprocesses get these
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


def run_node(node: dict[str, Any], root: str, threads: int, log_path: str, devices: list[int] | None = None
             ) -> dict[str, Any]:
    """Run a node (a `plan.Node` as a dict); returns {status: done|failed|interrupted|busy, ...}. `devices`:
    the GPUs the local executor gave it."""
    with on_gpus(devices):
        return _run_node(node, root, threads, log_path)


def _run_node(node: dict[str, Any], root: str, threads: int, log_path: str) -> dict[str, Any]:
    import torch
    from filelock import FileLock, Timeout
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    n = Node(**node)
    rootp = Path(root)
    (rootp / "nodes").mkdir(parents=True, exist_ok=True)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(rootp / "nodes" / f"{n.id}.lock"), timeout=5)
    try:
        lock.acquire()
    except Timeout:
        return {"status": "busy", "reason": f"another plasticity process is running {n.id}"}
    t0 = time.time()
    import os

    pid_file = pid_path(rootp, n.id)
    pid_file.write_text(f"{os.getpid()}\n")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: this node stops, quietly
    with lock, open(log_path, "a", encoding="utf-8") as f:
        def log(msg: str) -> None:
            f.write(msg + "\n")
            f.flush()

        result = _attempt(n, RunContext(log, threads, log_path))
        result["seconds"] = round(time.time() - t0, 2)
        _record(rootp, n, result, log)
        signal.signal(signal.SIGINT, previous)
        pid_file.unlink(missing_ok=True)
        return result


def _attempt(n: Node, ctx: RunContext) -> dict[str, Any]:
    """Run the node's stage; a failure (with its reason) or an interruption is a result, not an exception."""
    from plasticity.errors import InterruptedRun
    from plasticity.study.stages import STAGES
    from plasticity.tracking import node_context

    try:
        with node_context(n.track):  # training nodes mirror their steps to the study's trackers
            return STAGES[n.kind].run(n, ctx)
    except InterruptedRun as e:
        return {"status": "interrupted", "reason": f"{e} (resumes on the next run)", "signal": e.signum}
    except KeyboardInterrupt:
        return {"status": "interrupted", "reason": "interrupted (Ctrl-C); resumes on the next run",
                "signal": int(signal.SIGINT)}
    except (UserError, DivergenceError) as e:
        return {"status": "failed", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - a failed node is recorded; the other nodes go on
        ctx.log(traceback.format_exc().rstrip())  # a crash (not a user error): its traceback goes to the node's log
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}


def _record(root: Path, n: Node, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """A done or failed node's marker (a done one's numbers to the trackers); an interrupted one leaves none."""
    from plasticity.study.state import clear_marker, write_marker

    if result["status"] == "done":
        write_marker(root, n, **result)
        _track_result(n, result, log)
    elif result["status"] == "failed":
        log(f"{n.id} failed: {result['reason']}")
        write_marker(root, n, **result)
    else:
        clear_marker(root, n.id)


def _track_result(node: Node, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """The numbers of a node that is not a training run (`Stage.tracked`) as a run of the study's trackers
    (training nodes log their own steps)."""
    from plasticity.study.stages import STAGES

    numbers = STAGES[node.kind].tracked(node, result)
    if numbers is None or not (node.track or {}).get("backends"):
        return
    from plasticity.tracking import node_context, open_run

    final, series = numbers
    try:
        with node_context(node.track):
            trackers = open_run([], Path(node.out), node.kind, dict(node.config), warn=log)
    except UserError as e:  # the node is done: a tracker that cannot start costs its mirror only
        log(f"warning: {e}")
        return
    if trackers is None:
        return
    try:
        for step, nums in sorted(series.items()):
            trackers.log(nums, step)
        trackers.summary(final)
    finally:
        trackers.close()
