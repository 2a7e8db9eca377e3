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
    FinetuneConfig,
    PretrainConfig,
    deep_merge,
    from_dict,
    read_yaml,
    scope_task_options,
    set_dotted,
    validate,
)
from ..errors import ConfigError

ANALYSES = ("probes", "rank", "gap", "norms")
EXECUTORS = ("local", "ray")


@dataclass
class EvaluateSpec:
    """Settings of the evaluate stage (the keyword arguments of `plasticity.evaluate.run.run_evaluate`)."""

    k: int = 16
    max_questions: int | None = None
    max_new_tokens: int = 256
    temperature: float = 1.0
    greedy_repetition_penalty: float = 1.0  # the paper's greedy is temperature 0 only; > 1 penalizes repeats
    seed: int = 0
    batch_size: int = 16
    data_root: str | None = None
    data_source: str = "auto"
    reward_model: str | None = None
    judge: str | None = None
    template: str | None = None
    stability_sequences: int = 128  # pretraining validation sequences scored before/after (upstream_loss_change)
    stability_tasks: list[str] | None = None  # App. D cloze sets; None = the paper's five where local, else demo_choice
    stability_max_questions: int | None = None  # items per stability cloze set (None = max_questions)


@dataclass
class ResourceSpec:
    """What one node needs. ``pretrain_nproc`` > 1 launches pretraining through torchrun (DDP/FSDP)."""

    pretrain_gpus: int = 0  # GPUs per pretraining node (Ray schedules by it; torchrun gets one process per GPU)
    pretrain_nproc: int = 0  # torchrun processes per pretraining node; 0 = pretrain_gpus (or 1 on CPU)
    gpus: int = 0  # GPUs per fine-tuning / evaluation / analysis node


@dataclass
class StudySpec:
    name: str = "study"
    out_dir: str = "study_runs"
    base: dict[str, Any] = field(default_factory=dict)  # a pretraining config mapping
    base_config: str | None = None  # a pretraining YAML (relative to the study file) that `base` overrides
    axes: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None  # shorthand for axis train.seed
    tasks: list[str] | None = None  # shorthand for axis finetune.task
    finetune_from: list[float] | None = None  # shorthand for axis finetune_from
    task_axes: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # per-task options: {safety: {k: [..]}}
    analyze: list[str] = field(default_factory=list)  # subset of ANALYSES; [] = none
    finetune: dict[str, Any] | None = None  # a fine-tuning config mapping (init_from / out_dir are filled in)
    evaluate: dict[str, Any] | None = None  # an EvaluateSpec mapping; needs `finetune`
    workers: int | None = None
    executor: str = "local"
    resources: ResourceSpec = field(default_factory=ResourceSpec)


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
    return axes


def validate_spec(spec: StudySpec) -> None:
    """Check everything that can be checked before running: every axis value builds a valid config."""
    _req(bool(spec.name) and "/" not in spec.name, "name", "must be a non-empty name without '/'")
    _req(spec.executor in EXECUTORS, "executor", f"must be one of {', '.join(EXECUTORS)}")
    _req(spec.workers is None or spec.workers >= 1, "workers", "must be >= 1")
    for a in spec.analyze:
        _req(a in ANALYSES, "analyze", f"unknown analysis '{a}' (choose from {', '.join(ANALYSES)})")
    _req(spec.evaluate is None or spec.finetune is not None, "evaluate", "needs a `finetune` section")
    axes = all_axes(spec)
    tasks = [str(t) for t in axes.get("task", [])] + [str((spec.finetune or {}).get("task"))]
    for task, opts in spec.task_axes.items():
        _req(task in tasks or any(t.endswith((".yaml", ".yml")) for t in tasks), f"task_axes.{task}",
             f"is not one of the study's tasks ({', '.join(t for t in tasks if t != 'None')})")
        _req(isinstance(opts, dict) and bool(opts), f"task_axes.{task}", "must map task options to value lists")
        for opt, values in opts.items():
            _req(isinstance(values, list) and len(values) > 0, f"task_axes.{task}.{opt}", "must be a non-empty list")
            _req(len(values) == len({repr(v) for v in values}), f"task_axes.{task}.{opt}", "has repeated values")
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


def check_memory_fits(spec: StudySpec) -> None:
    """Every pretraining config of the grid (axis values one at a time) must fit the memory of this machine
    (`plasticity study` and its ``--dry-run`` on the local executor; not part of `load_spec`, so `status` and
    the validation of the paper's GPU studies work anywhere)."""
    from ..hardware import default_device, resolve_precision
    from ..train.pretrain import early_memory_check

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
            data = deep_merge(spec.base, over)
            data.pop("out_dir", None)
            cfg = from_dict(PretrainConfig, data)
        elif stage == "finetune":
            data = scope_task_options(spec.finetune or {}, deep_merge(spec.finetune or {}, over))
            for k in ("init_from", "out_dir"):
                _req(k not in data, k, "is set by the study (remove it)")
            cfg = from_dict(FinetuneConfig, dict(data, init_from="<pretrained>", out_dir="<study>"))
        elif stage == "evaluate":
            cfg = from_dict(EvaluateSpec, deep_merge(spec.evaluate or {}, over))
            _req(cfg.k >= 1, "evaluate.k", "must be >= 1")
            _req(cfg.max_questions is None or cfg.max_questions >= 1, "evaluate.max_questions", "must be >= 1")
            return cfg
        else:
            return None
        validate(cfg)
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{'base' if stage == 'pretrain' else stage}.{e.key}", e.problem) from None


def load_spec(path: str | Path | None) -> StudySpec:
    """Read and validate a study YAML (None: the embedded default study)."""
    if path is None:
        from .default import DEFAULT_STUDY

        spec = DEFAULT_STUDY
    else:
        spec = from_dict(StudySpec, read_yaml(path))
        if spec.base_config:
            base_file = Path(path).parent / spec.base_config
            if not base_file.is_file():
                raise ConfigError("base_config", f"{base_file}: file not found")
            spec.base = deep_merge(read_yaml(base_file), spec.base)
            spec.base_config = str(base_file)
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
