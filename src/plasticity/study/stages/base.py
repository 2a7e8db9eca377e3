"""What every study stage is: a node kind with its config, its axes, how it builds its node from a grid point and
the nodes it is built on, how it runs, what it leaves on disk and which results columns it owns."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from plasticity.config import deep_merge, from_dict, set_dotted, to_dict, validate
from plasticity.errors import ConfigError

# `plasticity.study.spec.StudySpec`, not imported (the spec asks the stage registry; stages never import it)
StudySpec = Any


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


@dataclass
class GridPoint:
    """One grid point of a study and each stage's config for it (built and validated once, on first use).

    `axes` maps axis keys to values; keys no stage owns name the row's source (``checkpoint``: a checkpoint
    entry). `owners` maps each owned axis key to (stage kind, key within that stage's config)."""

    axes: dict[str, Any]
    grid: dict[str, list[Any]]  # every axis of the study with all its values
    owners: dict[str, tuple[str, str]]
    make_config: Callable[[str, dict[str, Any]], Any]  # (kind, {config key: value}) -> that stage's config
    column: str | None = None  # the results column label of this point's nodes (a fine-tuning task variant)
    track_axes: dict[str, Any] = field(default_factory=dict)  # axis values shown to trackers beside `axes`
    configs: dict[str, Any] = field(default_factory=dict)

    def values(self, kind: str) -> dict[str, Any]:
        """The axis values of stage `kind`, by key within its config."""
        return {self.owners[k][1]: v for k, v in self.axes.items() if self.owners.get(k, ("",))[0] == kind}

    def config(self, kind: str) -> Any:
        """Stage `kind`'s config at this point (validated where it is built, once)."""
        if kind not in self.configs:
            self.configs[kind] = self.make_config(kind, self.values(kind))
        return self.configs[kind]

    def variant(self, kind: str, cfg: Any, column: str, **track_axes: Any) -> GridPoint:
        """This point with stage `kind`'s config replaced (a task variant), its column label and tracker axes."""
        return replace(self, column=column, track_axes=dict(self.track_axes, **track_axes),
                       configs=dict(self.configs, **{kind: cfg}))

    def label(self, kinds: set[str] | None = None) -> str:
        """``key=value`` of the axes owned by `kinds` (None: every owned axis), or ``-``."""
        return " ".join(f"{k}={v}" for k, v in self.axes.items()
                        if k in self.owners and (kinds is None or self.owners[k][0] in kinds)) or "-"

    @property
    def source(self) -> str | None:
        """``key=value`` of the keys no stage owns (a checkpoint row's entry), None on a pretraining row."""
        return " ".join(f"{k}={v}" for k, v in self.axes.items() if k not in self.owners) or None

    def tracked(self, kinds: set[str]) -> dict[str, Any]:
        """The axis values a node of the stages `kinds` stands for, for its trackers."""
        axes = dict(self.axes, **self.track_axes)
        return {k: v for k, v in axes.items() if k not in self.owners or self.owners[k][0] in kinds}


@dataclass(frozen=True)
class Upstream:
    """What a node is built on: the nodes before it by what they provide (``tokenizer``, ``tokens``, ``model``,
    ``finetuned``), the directory its model is read from and that model's (param counts, shape) when known."""

    nodes: dict[str, Node] = field(default_factory=dict)
    model_dir: str = ""
    shape: Any = None

    def __getitem__(self, provides: str) -> Node:
        return self.nodes[provides]

    def add(self, provides: str, node: Node, **changes: Any) -> Upstream:
        return replace(self, nodes=dict(self.nodes, **{provides: node}), **changes)

    @property
    def kinds(self) -> set[str]:
        return {n.kind for n in self.nodes.values()}


def node_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Stage:
    """One node kind: everything the planner, the workers, the state and the results table know of it.

    Declared: `kind`; `config_type` (its `plasticity.config` dataclass) and `section` (the study field holding
    its base config); `consumes` / `provides` (what it is built on, what it gives the stages built on it: the
    planner chains stages through them); `axis_prefix` / `axis_aliases` (the axis keys it owns). Defined per
    stage: `build`, `run`, `outputs_present`, `columns`.

    A config's path: `config` types the study section with the point's axis values and validates it (once, at
    plan time); `build` puts it in the node as a JSON dict (workers run in other processes); `run` only
    deserialises it (`from_dict`), never validates it again."""

    kind: ClassVar[str]
    config_type: ClassVar[type | None] = None
    section: ClassVar[str | None] = None
    config_of: ClassVar[str | None] = None  # the stage whose config holds this one's (tokenizer, data: pretrain)
    consumes: ClassVar[str | None] = None
    provides: ClassVar[str] = ""
    axis_prefix: ClassVar[str | None] = None  # ``<prefix>.<key>`` sets <key> of this stage's config
    axis_aliases: ClassVar[dict[str, str]] = {}  # other axis keys it owns -> key within its config
    owns_unprefixed_axes: ClassVar[bool] = False  # axis keys no other stage owns are this stage's
    within_row: ClassVar[tuple[str, ...]] = ()  # its axis keys whose values share one results row (tasks)
    sweep_name: ClassVar[str] = ""  # what sweeping its axes does, for messages ("fine-tuning")
    trains: ClassVar[bool] = False  # a training run (its progress is in metrics.jsonl)
    in_tracker: ClassVar[bool] = True  # whether its nodes get the study's tracking context

    # ---- the spec side: axes, config, checks
    def axis_key(self, axis: str) -> str | None:
        """The key within this stage's config that axis key `axis` sets, None if another stage owns it."""
        if self.axis_prefix and axis.startswith(self.axis_prefix + "."):
            return axis[len(self.axis_prefix) + 1:]
        return self.axis_aliases.get(axis)

    def enabled(self, spec: StudySpec) -> bool:
        """Whether the study has this stage (its section is set)."""
        return self.section is None or bool(getattr(spec, self.section))

    def config(self, spec: StudySpec, values: dict[str, Any]) -> Any:
        """The validated config of this stage: its section of `spec` with axis `values` ({dotted key: value})."""
        assert self.config_type is not None
        try:
            cfg = from_dict(self.config_type, self.config_data(spec, overrides(values)))
            validate(cfg)
            return cfg
        except ConfigError as e:
            raise ConfigError(f"{self.section}.{e.key}", e.problem) from None

    def config_data(self, spec: StudySpec, over: dict[str, Any]) -> dict[str, Any]:
        """The mapping `config` types: this stage's section of `spec` (defaults if absent) with `over` merged."""
        assert self.config_type is not None and self.section is not None
        return deep_merge(to_dict(getattr(spec, self.section) or self.config_type()), over)

    def sweep_problem(self, spec: StudySpec) -> str | None:
        """Why the study cannot sweep this stage's axes (its section is missing), or None."""
        if self.section and getattr(spec, self.section) is None:
            return f"sweeps {self.sweep_name or self.kind} but the study has no `{self.section}`"
        return None

    def check_axis(self, spec: StudySpec, axis: str, key: str, values: list[Any]) -> None:
        """Each value alone gives a valid config (type and range checks), and no two values are one value."""
        seen: dict[str, Any] = {}
        for v in values:
            try:
                coerced = _value_at(self.config(spec, {key: v}), key)
            except ConfigError as e:
                raise ConfigError(f"axes.{axis}", f"{v!r}: {e.key}: {e.problem}") from None
            norm = json.dumps(coerced, sort_keys=True, default=str)
            if norm in seen:
                raise ConfigError(f"axes.{axis}", f"has repeated values {seen[norm]!r} and {v!r} (both are "
                                  f"{coerced!r} as a config value)")
            seen[norm] = v

    def check_spec(self, spec: StudySpec, axes: dict[str, list[Any]]) -> None:
        """Stage-specific checks of a study before anything runs (one-line ConfigError)."""

    def check_memory(self, spec: StudySpec) -> None:
        """Refuse a config of the grid that cannot fit this machine's memory (`plasticity study`, local)."""

    def row_keys(self, spec: StudySpec) -> list[str]:
        """results.csv columns this stage adds before the axes (a checkpoint study's entry name)."""
        return []

    # ---- the plan side
    def rows(self, spec: StudySpec, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """The grid points of the results rows whose model this stage makes (`grid`: the axes its rows cross);
        [] for a stage that does not start rows."""
        return []

    def variants(self, spec: StudySpec, point: GridPoint) -> list[GridPoint]:
        """The points this stage builds a node for at `point` (several: task variants sharing a row)."""
        return [point]

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        """The node of this stage at `point`, built on `upstream`."""
        raise NotImplementedError

    def extend(self, upstream: Upstream, node: Node) -> Upstream:
        """What the stages built on `node` get: `upstream` plus `node` as `provides`."""
        return upstream.add(self.provides, node)

    def node_id(self, identity: Any) -> str:
        return f"{self.kind}-{node_hash(identity)}"

    # ---- the worker side
    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    # ---- GPU sizing (`plasticity.study.sizing`, ``study --dry-run``)
    sizing_hint: ClassVar[str | None] = None  # what to change when a node does not fit (None: computed)

    def model_shape(self, node: Node) -> Any | None:
        """The `plasticity.train.memory.Shape` of the model this node provides, when known before it runs."""
        return None

    def size(self, node: Node, shape: Any) -> tuple[Any, str, float] | None:
        """(per-device memory estimate, strategy, FLOPs factor) of this node on its resources for a model of
        `shape`; None: the stage is not sized (it needs no GPU memory worth planning)."""
        return None

    def outputs_present(self, node: Node, out: Path) -> bool:
        """Whether a done node's main output (`out`: the marker's ``out`` or the node's) is still there."""
        return out.is_dir()

    def tracked(self, node: Node, result: dict[str, Any]) -> tuple[dict[str, Any], dict[int, dict[str, float]]] | None:
        """What a study's tracker logs for a finished node that is not a training run: (final numbers,
        {step: numbers} series); None: nothing (training nodes log their own steps,
        ``plasticity.train.run_lifecycle``)."""
        return None

    # ---- the results side
    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        """The results columns one node contributes (`label`: its column label in the row)."""
        return {}

    def columns(self, nodes: list[tuple[str, Node]], study_dir: Path) -> dict[str, Any]:
        """The results columns of this stage's nodes of one row ((column label, node) pairs)."""
        out: dict[str, Any] = {}
        for label, node in nodes:
            out.update(self.metrics(node, label))
        return out

    def review(self, rows: list[dict[str, Any]], log: Callable[[str], None]) -> None:
        """Warnings about a finished study's rows (e.g. two checkpoint entries with one model)."""


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axis values of `grid` (one point: no axes)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def overrides(values: dict[str, Any]) -> dict[str, Any]:
    """``{dotted key: value}`` as a nested mapping."""
    over: dict[str, Any] = {}
    for k, v in values.items():
        set_dotted(over, k, v)
    return over


def _value_at(cfg: Any, dotted: str) -> Any:
    """The (type-coerced) value of `dotted` in a config dataclass (mappings such as task_options included)."""
    cur = cfg
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else getattr(cur, part, None)
    return cur


def runs_dir(spec: StudySpec) -> Path:
    """Node outputs live under the absolute ``<out_dir>/runs`` (workers may run in another directory)."""
    return Path(spec.out_dir).resolve() / "runs"


def completed_run(out: Path) -> bool:
    """A training node's outputs: ``summary.json`` parses and says completed, and ``final/`` has its manifest (a
    damaged summary is not a done node: its row would have no numbers)."""
    from plasticity.checkpoints import RunDir

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


def training_size(node: Node, shape: Any, train: Any, seq_len: int) -> tuple[Any, str, float]:
    """(per-device estimate, strategy, FLOPs factor) of a training node: its precision (``auto`` is bf16 on
    GPUs), processes and sharding (``auto``: FSDP2 above `FSDP_AUTO_PARAMS` on GPUs, else DDP, as training
    decides); activation checkpointing recomputes the forward (x 4/3)."""
    from plasticity.train import memory as mem
    from plasticity.train.distributed import FSDP_AUTO_PARAMS

    n = max(1, node.nproc)
    precision = "bf16" if (train.precision == "auto" and node.gpus) or train.precision == "bf16" else "fp32"
    strategy = "none" if n <= 1 else train.parallel if train.parallel != "auto" else (
        "fsdp" if node.gpus and shape.params > FSDP_AUTO_PARAMS else "ddp")
    est = mem.estimate(shape, train.micro_batch_size, seq_len, precision, world=n, strategy=strategy,
                       activation_checkpointing=train.activation_checkpointing)
    return est, strategy, 4 / 3 if train.activation_checkpointing else 1.0
