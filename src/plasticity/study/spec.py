"""The study spec: base configs for every stage plus grid axes over any of their keys.

Each axis key belongs to the stage that owns it (`plasticity.study.stages.axis_owner`): ``finetune.<key>``
(fine-tuning config), ``evaluate.<key>`` (evaluation settings), ``finetune_from`` (fraction of pretraining the
fine-tuning starts from, e.g. 0.25/0.5/1.0), ``task`` (= ``finetune.task``), ``seed`` (= ``train.seed``); anything
else (optionally ``pretrain.``-prefixed) is a pretraining key such as ``optim.weight_decay``. ``seeds``, ``tasks``
and ``finetune_from`` may also be given as top-level lists. ``task_axes: {task: {option: [values]}}`` sweeps one
task's options only (the paper's safety k in {300, 500, 1000, 2000}); each value is a separate fine-tuning run in
the same row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasticity.config import (
    AnalyzeConfig,
    CheckpointConfig,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    deep_merge,
    from_dict,
    read_yaml,
)
from plasticity.errors import ConfigError
from plasticity.names import name_problem
from plasticity.study.stages import STAGES, axis_owner, inputs_of, stage
from plasticity.study.stages.finetune import study_tasks

EXECUTORS = ("local", "ray")


EvaluateSpec = EvaluateConfig  # the study's evaluate section is the evaluate command's config


@dataclass
class ResourceSpec:
    """What one node needs. ``*_nproc`` > 1 launches that stage's nodes through torchrun (pretraining and
    fine-tuning: DDP/FSDP2; evaluation: the questions split across processes). Node ids do not depend on them."""

    pretrain_gpus: int = 0  # GPUs per pretraining node (the executors schedule by it; torchrun: one process per GPU)
    pretrain_nproc: int = 0  # torchrun processes per pretraining node; 0 = pretrain_gpus (or 1 on CPU)
    gpus: int = 0  # GPUs per fine-tuning / evaluation / analysis node (unless finetune_gpus / evaluate_gpus)
    finetune_gpus: int | None = None  # GPUs per fine-tuning node; None = gpus
    finetune_nproc: int = 0  # torchrun processes per fine-tuning node; 0 = finetune_gpus (or 1)
    evaluate_gpus: int | None = None  # GPUs per evaluation node; None = gpus
    evaluate_nproc: int = 0  # torchrun processes per evaluation node; 0 = evaluate_gpus (or 1)
    gpu_memory_gb: float = 80.0  # memory of each GPU the nodes run on (sizing refuses a node that cannot fit)
    gpu_tflops: float = 150.0  # sustained bf16 TFLOP/s per GPU, for the time estimates of --dry-run

    def of(self, stage: str) -> tuple[int, int]:
        """(GPUs, processes) of one node of `stage` (those with ``<stage>_gpus``; others: (gpus, 1))."""
        if not hasattr(self, f"{stage}_nproc"):
            return self.gpus, 1
        gpus = getattr(self, f"{stage}_gpus")
        gpus = self.gpus if gpus is None else gpus
        return gpus, getattr(self, f"{stage}_nproc") or max(1, gpus)


@dataclass
class ReportSpec:
    """What `plasticity report` leads with. ``headline: {task: metric}`` (e.g. ``{addition: greedy, sst2: acc}``):
    the headline is the mean over these tasks of each task's metric, each task at its best swept fine-tuning
    setting per pretraining run (paper App. E); empty: the averaged CoT metric (Pass@k first), else cloze acc."""

    headline: dict[str, str] = field(default_factory=dict)


@dataclass
class StudySpec:
    name: str = "study"
    out_dir: str = "study_runs"
    base: PretrainConfig | None = None  # what every grid point pretrains (None: defaults, or none, see below)
    base_config: str | None = None  # a pretraining YAML (relative to the study file) that `base` overrides
    axes: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None  # shorthand for axis train.seed
    tasks: list[str] | None = None  # shorthand for axis finetune.task
    finetune_from: list[float] | None = None  # shorthand for axis finetune_from
    task_axes: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # per-task options: {safety: {k: [..]}}
    analyze: AnalyzeConfig | None = None  # a list is `what` (a subset of ANALYSES); None or [] = no analysis
    finetune: FinetuneConfig | None = None  # init_from / out_dir are filled in by the study
    evaluate: EvaluateConfig | None = None  # needs `finetune`
    # existing models analysed / fine-tuned like pretrained ones: {entry name: {path, revision}}; with only
    # checkpoints (no base, base_config or pretraining axis) nothing is pretrained
    checkpoints: dict[str, CheckpointConfig] = field(default_factory=dict)
    workers: int | None = None
    executor: str = "local"
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    # experiment tracking of every node (tensorboard, wandb, a list of them): each node is its own tracker run,
    # grouped by the study name and tagged with its axis values; not part of any node id
    tracker: str | list[str] | None = None

    def axes_of(self, kind: str) -> dict[str, tuple[str, list[Any]]]:
        """The axes stage `kind` owns: {axis key: (key within its config, values)}."""
        out = {}
        for axis, values in all_axes(self).items():
            owner, key = axis_owner(axis)
            if owner.kind == kind:
                out[axis] = (key, values)
        return out


def all_axes(spec: StudySpec) -> dict[str, list[Any]]:
    """Axes including the top-level shorthands (``seeds`` -> train.seed, ``tasks`` -> task, ...)."""
    axes = dict(spec.axes)
    for key, values in (("train.seed", spec.seeds), ("task", spec.tasks), ("finetune_from", spec.finetune_from)):
        if values is not None:
            if key in axes:
                raise ConfigError(key, "given both as an axis and as a top-level list")
            axes[key] = list(values)
    seen: dict[tuple[str, str], str] = {}
    for key in axes:  # `seed` and `train.seed`, `task` and `finetune.task`, `x` and `pretrain.x`: one key
        owner, sub = axis_owner(key)
        where = (owner.kind, sub)
        if where in seen:
            raise ConfigError(f"axes.{key}", f"is the same key as axes.{seen[where]}: give it once")
        seen[where] = key
    return axes


def validate_spec(spec: StudySpec) -> None:
    """Check everything that can be checked before running: every axis value builds a valid config."""
    problem = name_problem(spec.name)  # <out_dir>/<name>/ is the study's folder: never a path
    _req(problem is None, "name", f"{problem} (it becomes the study's folder name)")
    _req(spec.executor in EXECUTORS, "executor", f"must be one of {', '.join(EXECUTORS)}")
    _req(spec.workers is None or spec.workers >= 1, "workers", "must be >= 1")
    for key, value in vars(spec.resources).items():
        _req(value is None or value >= 0, f"resources.{key}", f"must be >= 0, got {value}")
    for key in ("gpu_memory_gb", "gpu_tflops"):
        _req(getattr(spec.resources, key) > 0, f"resources.{key}", "must be > 0")
    from plasticity.tracking import check_backends

    check_backends(spec.tracker, "tracker")
    axes = all_axes(spec)
    _check_size(spec, axes)
    _check_report(spec, study_tasks(spec, axes))
    for key, values in axes.items():
        _req(isinstance(values, list) and len(values) > 0, f"axes.{key}", "must be a non-empty list")
        owner, sub = axis_owner(key)
        for s in [*inputs_of(owner), owner]:  # the stages it is built on first (evaluation needs fine-tuning)
            problem = s.sweep_problem(spec)
            _req(problem is None, f"axes.{key}", problem or "")
        owner.check_axis(spec, key, sub, values)
    for s in STAGES.values():
        if s.axis_prefix is not None:  # a stage configured by the study: its base config alone is valid
            s.config(spec, {})
        s.check_spec(spec, axes)


MAX_GRID_POINTS = 5_000  # rows x task variants a study may plan; more is refused before anything is expanded


def _check_size(spec: StudySpec, axes: dict[str, list[Any]]) -> None:
    """Refuse a grid above MAX_GRID_POINTS before it is expanded (a 10^6-point grid planned for > 300 s)."""
    n = max(1, len(spec.checkpoints) + 1)
    for values in [*axes.values(), *[v for opts in spec.task_axes.values() if isinstance(opts, dict)
                                      for v in opts.values()]]:
        n *= len(values) if isinstance(values, list) and values else 1
        if n > MAX_GRID_POINTS:
            sizes = " x ".join(str(len(v)) for v in axes.values() if isinstance(v, list))
            raise ConfigError("axes", f"the grid has more than {MAX_GRID_POINTS:,} points ({sizes} axis values); "
                              "split the study into several")


def _check_report(spec: StudySpec, tasks: list[str]) -> None:
    """``report.headline``: the study's own tasks, each with a metric name (``greedy``, ``pass@16``, ``acc``, ...)."""
    from plasticity.results_columns import METRIC_NAME, METRIC_NAMES

    _req(isinstance(spec.report.headline, dict), "report.headline", "must map tasks to metrics")
    for task, metric in spec.report.headline.items():
        _req(task in tasks, f"report.headline.{task}", f"is not one of the study's tasks ({', '.join(tasks)})")
        _req(isinstance(metric, str) and METRIC_NAME.fullmatch(metric) is not None, f"report.headline.{task}",
             f"{metric!r}: not a metric name ({METRIC_NAMES})")


def check_memory_fits(spec: StudySpec) -> None:
    """Every config of the grid (axis values one at a time) must fit the memory of this machine (`plasticity
    study` and its ``--dry-run`` on the local executor; not part of `load_spec`, so `status` and the validation
    of the paper's GPU studies work anywhere): each stage checks its own (`Stage.check_memory`)."""
    for s in STAGES.values():
        s.check_memory(spec)


def stage_config(spec: StudySpec, kind: str, values: dict[str, Any]) -> Any:
    """The validated config of stage `kind` with axis `values` (``{dotted key: value}``) applied."""
    return stage(kind).config(spec, values)


def load_spec(path: str | Path | None) -> StudySpec:
    """Read and validate a study YAML (None: the default study shipped with the package)."""
    if path is None:
        from plasticity.study.default import DEFAULT_STUDY_FILE

        path = DEFAULT_STUDY_FILE
    raw = read_yaml(path)
    if isinstance(raw.get("base_config"), str):  # the base YAML is merged under `base` before typing
        base_file = Path(path).parent / raw["base_config"]
        if not base_file.is_file():
            raise ConfigError("base_config", f"{base_file}: file not found")
        raw = dict(raw, base=deep_merge(read_yaml(base_file), raw.get("base") or {}), base_config=str(base_file))
    spec = from_dict(StudySpec, raw)
    validate_spec(spec)
    return spec


def _req(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(key, problem)
