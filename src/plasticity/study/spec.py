"""The study spec: base configs for every stage plus grid axes over any of their keys.

Axis keys route to a stage by prefix: ``finetune.<key>`` (fine-tuning config), ``evaluate.<key>`` (evaluation
settings), ``finetune_from`` (fraction of pretraining the fine-tuning starts from, e.g. 0.25/0.5/1.0),
``task`` (= ``finetune.task``), ``seed`` (= ``train.seed``); anything else (optionally ``pretrain.``-prefixed)
is a pretraining key such as ``optim.weight_decay``. ``seeds``, ``tasks`` and ``finetune_from`` may also be
given as top-level lists. ``task_axes: {task: {option: [values]}}`` sweeps one task's options only (the
paper's safety k in {300, 500, 1000, 2000}); each value is a separate fine-tuning run in the same row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (
    AnalyzeConfig,
    CheckpointConfig,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    deep_merge,
    from_dict,
    read_yaml,
    scope_task_options,
    set_dotted,
    to_dict,
    validate,
)
from ..errors import ConfigError
from ..names import name_problem

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
        """(GPUs, processes) of one node of `stage` (pretrain / finetune / evaluate; others: (gpus, 1))."""
        if stage not in ("pretrain", "finetune", "evaluate"):
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

    def has_pretraining(self) -> bool:
        """Whether the study pretrains: always without checkpoints; beside them only when asked for."""
        return (not self.checkpoints or self.base is not None
                or any(stage_of(k)[0] == "pretrain" for k in all_axes(self)))


def stage_of(axis: str) -> tuple[str, str]:
    """(stage, key within the stage's config) of an axis key."""
    if axis in ("finetune_from",):
        return "finetune_from", ""
    if axis in ("task", "finetune.task"):
        return "finetune", "task"
    if axis == "seed":
        return "pretrain", "train.seed"
    for stage in ("finetune", "evaluate", "pretrain"):
        if axis.startswith(stage + "."):
            return stage, axis[len(stage) + 1:]
    return "pretrain", axis


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
        where = stage_of(key)
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
    from ..tracking import check_backends

    check_backends(spec.tracker, "tracker")
    if spec.analyze is not None:  # AnalyzeConfig.validate checks `what` (one place)
        try:
            validate(spec.analyze)
        except ConfigError as e:
            raise ConfigError(f"analyze.{e.key}", e.problem) from None
    _req(spec.evaluate is None or spec.finetune is not None, "evaluate", "needs a `finetune` section")
    axes = all_axes(spec)
    tasks = [str(t) for t in axes.get("task", [])] + [str(spec.finetune.task if spec.finetune else None)]
    for task, opts in spec.task_axes.items():
        _req(task in tasks or any(t.endswith((".yaml", ".yml")) for t in tasks), f"task_axes.{task}",
             f"is not one of the study's tasks ({', '.join(t for t in tasks if t != 'None')})")
        _req(isinstance(opts, dict) and bool(opts), f"task_axes.{task}", "must map task options to value lists")
        for opt, values in opts.items():
            _req(isinstance(values, list) and len(values) > 0, f"task_axes.{task}.{opt}", "must be a non-empty list")
            _req(len(values) == len({repr(v) for v in values}), f"task_axes.{task}.{opt}", "has repeated values")
    _check_size(spec, axes)
    _check_report(spec, tasks)
    _check_tasks(spec, axes)
    for key, values in axes.items():
        _req(isinstance(values, list) and len(values) > 0, f"axes.{key}", "must be a non-empty list")
        stage, sub = stage_of(key)
        if stage in ("finetune", "evaluate", "finetune_from"):
            _req(spec.finetune is not None, f"axes.{key}", "sweeps fine-tuning but the study has no `finetune`")
        if stage == "evaluate":
            _req(spec.evaluate is not None, f"axes.{key}", "sweeps evaluation but the study has no `evaluate`")
        if stage == "finetune_from":
            for v in values:
                ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
                _req(ok, f"axes.{key}", f"{v!r}: fractions of pretraining must be in (0, 1]")
        seen: dict[str, Any] = {}
        for v in values:  # each value alone must give a valid stage config (type and range checks)
            try:
                cfg = stage_config(spec, stage, {sub: v} if sub else {})
            except ConfigError as e:
                raise ConfigError(f"axes.{key}", f"{v!r}: {e.key}: {e.problem}") from None
            coerced = _value_at(cfg, sub) if sub else float(v)
            norm = json.dumps(coerced, sort_keys=True, default=str)
            _req(norm not in seen, f"axes.{key}",
                 f"has repeated values {seen.get(norm)!r} and {v!r} (both are {coerced!r} as a config value)")
            seen[norm] = v
    for stage in ("pretrain", "finetune", "evaluate"):
        stage_config(spec, stage, {})
    _check_checkpoints(spec, axes)


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


def _check_tasks(spec: StudySpec, axes: dict[str, list[Any]]) -> None:
    """Every fine-tuning task exists now, not after pretraining: a registered name, or a YAML task file that
    loads; two tasks with one name (a YAML task named like a built-in) would share result columns: refused."""
    if spec.finetune is None:
        return
    from ..errors import UserError
    from ..tasks.registry import get_task, task_names

    key = "axes.task" if "task" in axes else "finetune.task"
    by_name: dict[str, str] = {}
    for task in [str(t) for t in axes.get("task", [spec.finetune.task])]:
        if task.endswith((".yaml", ".yml")):
            try:
                name = get_task(task).name
            except UserError as e:
                raise ConfigError(key, str(e)) from None
        elif task in task_names():
            name = task
        else:
            raise ConfigError(key, f"unknown task '{task}'; known tasks: {', '.join(task_names())} (or a path to "
                              "a task YAML)")
        if name in by_name:
            raise ConfigError(key, f"'{by_name[name]}' and '{task}' are both the task '{name}': their results would "
                              "share columns (rename the YAML task)")
        by_name[name] = task


def _check_report(spec: StudySpec, tasks: list[str]) -> None:
    """``report.headline``: the study's own tasks, each with a metric name (``greedy``, ``pass@16``, ``acc``, ...)."""
    from ..results_columns import METRIC_NAME, METRIC_NAMES

    _req(isinstance(spec.report.headline, dict), "report.headline", "must map tasks to metrics")
    for task, metric in spec.report.headline.items():
        _req(task in tasks, f"report.headline.{task}",
             f"is not one of the study's tasks ({', '.join(t for t in tasks if t != 'None')})")
        _req(isinstance(metric, str) and METRIC_NAME.fullmatch(metric) is not None, f"report.headline.{task}",
             f"{metric!r}: not a metric name ({METRIC_NAMES})")


def _check_checkpoints(spec: StudySpec, axes: dict[str, list[Any]]) -> None:
    """Checkpoint entries: each one's source (plan-time, nothing downloaded), and what they cannot do."""
    if not spec.checkpoints:
        return
    from .stages import STAGES

    for name, cfg in spec.checkpoints.items():
        STAGES["checkpoint"].check(name, cfg)
    _req(spec.analyze is not None or spec.finetune is not None, "checkpoints",
         "a study over checkpoints needs `analyze` or `finetune`")
    _req(all(float(f) >= 1 for f in axes.get("finetune_from", [1.0])), "finetune_from",
         "fractions of pretraining need pretraining runs; checkpoint entries are fine-tuned as they are "
         "(give each intermediate checkpoint its own entry)")


def check_memory_fits(spec: StudySpec) -> None:
    """Every pretraining config of the grid (axis values one at a time) must fit the memory of this machine
    (`plasticity study` and its ``--dry-run`` on the local executor; not part of `load_spec`, so `status` and
    the validation of the paper's GPU studies work anywhere). Pretraining on GPUs (``resources.pretrain_gpus``)
    is sized per node by `plasticity.study.sizing` instead (its processes, sharding and GPUs)."""
    from ..hardware import default_device, resolve_precision
    from ..train.pretrain import early_memory_check

    if not spec.has_pretraining() or spec.resources.pretrain_gpus:
        return  # pretraining on GPUs: `plasticity.study.sizing` sizes it against resources.gpu_memory_gb
    axes = all_axes(spec)
    device = default_device()
    checks: list[tuple[str, dict[str, Any]]] = [("base", {})]
    for key, values in axes.items():
        stage, sub = stage_of(key)
        if stage == "pretrain":
            checks += [(f"axes.{key}", {sub: v}) for v in values]
    for where, values in checks:
        cfg = stage_config(spec, "pretrain", values)
        try:
            early_memory_check(cfg, device, resolve_precision(cfg.train.precision, device), lambda m: None)
        except ConfigError as e:
            value = f"{next(iter(values.values()))!r}: " if values else ""
            raise ConfigError(where, f"{value}{e.key}: {e.problem}") from None


def stage_config(spec: StudySpec, stage: str, values: dict[str, Any]) -> Any:
    """The validated config of one stage with axis `values` (``{dotted key: value}``) applied."""
    over: dict[str, Any] = {}
    for k, v in values.items():
        set_dotted(over, k, v)
    try:
        if stage == "pretrain":
            data = deep_merge(to_dict(spec.base or PretrainConfig()), over)
            data.pop("out_dir", None)
            cfg = from_dict(PretrainConfig, data)
        elif stage == "finetune":
            base = to_dict(spec.finetune or FinetuneConfig())
            for k in ("init_from", "out_dir"):
                _req(base[k] == getattr(FinetuneConfig, k) and k not in over, k, "is set by the study (remove it)")
            data = scope_task_options(base, deep_merge(base, over))
            cfg = from_dict(FinetuneConfig, dict(data, init_from="<pretrained>", out_dir="<study>"))
        elif stage == "evaluate":
            cfg = from_dict(EvaluateConfig, deep_merge(to_dict(spec.evaluate or EvaluateConfig()), over))
        else:
            return None
        validate(cfg)
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{'base' if stage == 'pretrain' else stage}.{e.key}", e.problem) from None


def load_spec(path: str | Path | None) -> StudySpec:
    """Read and validate a study YAML (None: the default study shipped with the package)."""
    if path is None:
        from .default import DEFAULT_STUDY_FILE

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


def _value_at(cfg: Any, dotted: str) -> Any:
    """The (type-coerced) value of `dotted` in a config dataclass (mappings such as task_options included)."""
    cur = cfg
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else getattr(cur, part, None)
    return cur


def _req(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(key, problem)
