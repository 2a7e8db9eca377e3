"""What every study stage is: a node kind with its config, identity, run, outputs check and result columns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class Node:
    id: str  # "<kind>-<hash>"
    kind: str
    deps: list[str]
    out: str  # output directory
    config: dict[str, Any]  # everything the node's stage needs to run it (JSON-serialisable)
    label: str  # the axis values it stands for, e.g. "optim.weight_decay=0.1"
    est_tokens: int | None = None
    est_flops: float | None = None
    gpus: int = 0
    nproc: int = 1
    # the study's tracking context (`plasticity.tracking`): backends, group (study name), name, axes; not hashed
    track: dict[str, Any] | None = None


@dataclass
class RunContext:
    """What a worker gives a stage's `run`: the node log, torch threads, the log file (for subprocesses)."""

    log: Callable[[str], None]
    threads: int
    log_path: str


def node_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Stage:
    """One node kind. Subclasses set `kind` and `config_type` (their `plasticity.config` dataclass) and define
    `identity` (the JSON value hashed into the node id: the resolved config and the inputs' ids), `run`,
    `outputs_present` and `metrics` (the columns the node contributes to its results row)."""

    kind: ClassVar[str]
    config_type: ClassVar[type | None] = None

    def node_id(self, identity: Any) -> str:
        return f"{self.kind}-{node_hash(identity)}"

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    def outputs_present(self, node: Node, out: Path) -> bool:
        """Whether a done node's main output (`out`: the marker's ``out`` or the node's) is still there."""
        return out.is_dir()

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        return {}

    def tracked(self, node: Node, result: dict[str, Any]) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
        """What a study's tracker logs for a finished node that is not a training run: (final numbers,
        {step: numbers} series). Training nodes log their own steps (``plasticity.train.run``)."""
        return dict(result.get("metrics") or {}), {}


def completed_run(out: Path) -> bool:
    """A training node's outputs: ``summary.json`` parses and says completed, and ``final/`` has its manifest (a
    damaged summary is not a done node: its row would have no numbers)."""
    from ...checkpoints import RunDir

    return RunDir(out).completed()
def torchrun(node: Node, ctx: RunContext, args: list[str]) -> int:
    """Run ``python -m ARGS`` as `node.nproc` torchrun processes on this machine (the node's GPUs: those the
    executor gave it); output to the node's log. Returns the exit code."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={node.nproc}",
           "-m", *args]
    with open(ctx.log_path, "a", encoding="utf-8") as f:
        env = dict(os.environ, OMP_NUM_THREADS=str(ctx.threads))
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def run_summary(summary: dict[str, Any], out: str, metric: str) -> dict[str, Any]:
    """A node result from a training run's summary (completed / interrupted / failed)."""
    status = summary.get("status")
    if status == "completed":
        return {"status": "done", "out": out, "metrics": {metric: summary.get(metric)}}
    if status == "interrupted":
        return {"status": "interrupted", "reason": "interrupted by a signal (resumes on the next run)"}
    return {"status": "failed", "reason": str(summary.get("reason") or status)}
