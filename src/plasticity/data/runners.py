"""Where shard jobs run and how their progress is shown: this process, a pool of spawn workers (one tokenizer
thread each, progress through a queue), or Ray tasks; a rich bar on a terminal, else a log line every 30 s."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from plasticity.data.shards import Job, JobSpec, init_worker, pool_job, ray_job, run_job
from plasticity.hardware import connect_ray

HEARTBEAT_S = 30.0


# ------------------------------------------------------------------------------------------- progress


class Progress:
    """Documents, tokens, tokens/s and ETA: a rich bar on a terminal (`bar`), else a log line every 30 s."""

    def __init__(self, total_size: int | None, log: Callable[[str], None], bar: bool = False):
        self.total, self.log = total_size, log
        self.docs = self.tokens = self.size = 0
        self.t0 = self.last = time.time()
        self.session_tokens = 0
        self.bar = None
        if bar:
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            from plasticity.console import err

            self.bar = Bar(TextColumn("tokenizing"), BarColumn(), TextColumn("{task.fields[docs]} docs"),
                           TextColumn("{task.fields[tokens]} tokens"), TextColumn("{task.fields[rate]} tok/s"),
                           TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err)
            self.task = self.bar.add_task("tokenizing", total=total_size, docs="0", tokens="0", rate="-")
            self.bar.start()

    def add(self, docs: int, tokens: int, size: int, resumed: bool = False) -> None:
        self.docs += docs
        self.tokens += tokens
        self.size += size
        if not resumed:
            self.session_tokens += tokens
        now = time.time()
        rate = self.session_tokens / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.size, docs=f"{self.docs:,}", tokens=f"{self.tokens:,}",
                            rate=f"{rate:,.0f}")
        elif now - self.last >= HEARTBEAT_S:
            self.last = now
            eta = ""
            if self.total and self.size and not resumed:
                left = (self.total - self.size) * (now - self.t0) / max(self.size, 1)
                eta = f", {100 * self.size / self.total:.0f}% of the input, ETA {_duration(left)}"
            self.log(f"tokenizing: {self.docs:,} documents, {self.tokens:,} tokens, {rate:,.0f} tok/s{eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ------------------------------------------------------------------------------------------- executors


class InProcess:
    """Jobs run here, one after the other (one worker, or a single job)."""

    def __init__(self, progress: Progress, threads: int):
        self.progress, self.threads = progress, threads

    def submit(self, job: Job, spec: JobSpec):
        old = os.environ.get("TOKENIZERS_PARALLELISM")
        # one worker: one thread. Several: the Rust threads, unless the environment (or tokenizers' own fork
        # handler, after a fork that would leave its thread pool unusable) turned them off
        os.environ["TOKENIZERS_PARALLELISM"] = "false" if self.threads <= 1 else (old or "true")
        try:
            return run_job(job, spec, lambda d, t, c: self.progress.add(d, t, c))
        finally:
            if old is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = old

    def wait(self, handles: list) -> list:
        return list(handles)

    def result(self, handle) -> dict[str, Any]:
        return handle

    def close(self) -> None:
        pass


class LocalPool:
    """`workers` spawn processes, one tokenizer thread each; progress comes back through a queue."""

    def __init__(self, workers: int, progress: Progress):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.pool = ctx.Pool(workers, initializer=init_worker, initargs=(self.queue,))
        self.progress = progress

    def submit(self, job: Job, spec: JobSpec):
        return self.pool.apply_async(pool_job, (job, spec))

    def _drain(self) -> None:
        import queue

        while True:
            try:
                self.progress.add(*self.queue.get_nowait())
            except queue.Empty:
                return

    def wait(self, handles: list) -> list:
        while True:
            self._drain()
            done = [h for h in handles if h.ready()]
            if done:
                self._drain()
                return done
            time.sleep(0.05)

    def result(self, handle) -> dict[str, Any]:
        return handle.get()

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class RayTasks:
    """One Ray task per job (1 CPU each); connects to ``RAY_ADDRESS`` or starts a local Ray with `workers` CPUs."""

    def __init__(self, workers: int, progress: Progress):
        self.ray = ray = connect_ray(workers)
        self.remote = ray.remote(num_cpus=1, max_retries=2)(ray_job)
        self.progress = progress

    def submit(self, job: Job, spec: JobSpec):
        return self.remote.remote(job, spec)

    def wait(self, handles: list) -> list:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def result(self, handle) -> dict[str, Any]:
        res = self.ray.get(handle)
        if "error" not in res:
            self.progress.add(res["train"]["documents"] + res["val"]["documents"],
                              res["train"]["tokens"] + res["val"]["tokens"], res.get("size", 0))
        return res

    def close(self) -> None:
        pass  # a Ray instance we started stays up for the process; ray.shutdown() is the caller's choice
