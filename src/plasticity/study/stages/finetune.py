"""The fine-tuning stage: one `plasticity finetune` run from a pretrained model (a fraction of the way, or final)."""

from __future__ import annotations

import copy
import itertools
import json
import os
from pathlib import Path
from typing import Any

from plasticity.checkpoints import RunDir
from plasticity.config import FinetuneConfig, deep_merge, from_dict, scope_task_options, to_dict, train_identity
from plasticity.errors import ConfigError
from plasticity.study.stages.base import (
    GridPoint,
    Node,
    RunContext,
    Stage,
    StudySpec,
    Upstream,
    completed_run,
    node_hash,
    run_summary,
    runs_dir,
    torchrun,
    training_size,
)

FROM_AXIS = "finetune_from"  # the fraction of pretraining fine-tuning starts from (an axis, not a config key)


class FinetuneStage(Stage):
    """Owns ``finetune.``-prefixed axes, ``task`` and ``finetune_from``; one node per task variant of a row."""

    kind = "finetune"
    config_type = FinetuneConfig
    section = "finetune"
    consumes = "model"
    provides = "finetuned"
    axis_prefix = "finetune"
    axis_aliases = {"task": "task", FROM_AXIS: FROM_AXIS}
    within_row = ("task",)
    sweep_name = "fine-tuning"
    trains = True

    def config_data(self, spec: StudySpec, over: dict[str, Any]) -> dict[str, Any]:
        over = {k: v for k, v in over.items() if k != FROM_AXIS}
        base = to_dict(spec.finetune or FinetuneConfig())
        for k in ("init_from", "out_dir"):
            if base[k] != getattr(FinetuneConfig, k) or k in over:
                raise ConfigError(k, "is set by the study (remove it)")
        data = scope_task_options(base, deep_merge(base, over))
        return dict(data, init_from="<pretrained>", out_dir="<study>")

    def check_axis(self, spec: StudySpec, axis: str, key: str, values: list[Any]) -> None:
        if key != FROM_AXIS:
            return super().check_axis(spec, axis, key, values)
        for v in values:
            if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1):
                raise ConfigError(f"axes.{axis}", f"{v!r}: fractions of pretraining must be in (0, 1]")
        seen: dict[float, Any] = {}
        for v in values:
            if float(v) in seen:
                raise ConfigError(f"axes.{axis}", f"has repeated values {seen[float(v)]!r} and {v!r} (both are "
                                  f"{float(v)!r} as a config value)")
            seen[float(v)] = v

    def check_spec(self, spec: StudySpec, axes: dict[str, list[Any]]) -> None:
        """``task_axes`` name the study's tasks; every task exists now, not after pretraining."""
        tasks = study_tasks(spec, axes)
        for task, opts in spec.task_axes.items():
            _req(task in tasks or any(t.endswith((".yaml", ".yml")) for t in tasks), f"task_axes.{task}",
                 f"is not one of the study's tasks ({', '.join(tasks)})")
            _req(isinstance(opts, dict) and bool(opts), f"task_axes.{task}", "must map task options to value lists")
            for opt, values in opts.items():
                _req(isinstance(values, list) and len(values) > 0, f"task_axes.{task}.{opt}",
                     "must be a non-empty list")
                _req(len(values) == len({repr(v) for v in values}), f"task_axes.{task}.{opt}", "has repeated values")
        if spec.finetune is not None:
            _check_tasks(spec, axes)

    def variants(self, spec: StudySpec, point: GridPoint) -> list[GridPoint]:
        """One point per value combination of the task's `task_axes` options, column-labelled by task."""
        return [point.variant(self.kind, cfg, label, task=label)
                for cfg, label in task_variants(spec, point.config(self.kind))]

    def identity(self, model_id: str, fraction: float, fcfg: FinetuneConfig) -> list[Any]:
        ident = json.loads(json.dumps(_config_dict(fcfg), default=str))
        # whether to refuse / how much memory / where numbers are mirrored, not what: not in the id
        ident["train"] = train_identity(ident["train"], ("allow_large_memory", "activation_checkpointing",
                                                                 "tracker", "master_weights"))
        content = task_content(fcfg.task)
        if content is not None:  # a YAML task: its file and data are read, so their bytes are part of the id
            ident["task_content"] = content
        return [model_id, fraction, ident]

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        model = upstream[self.consumes]
        fcfg = point.config(self.kind)
        fraction = float(point.values(self.kind).get(FROM_AXIS, 1.0))
        label = point.label() + (f" {point.column}" if point.column != task_name(fcfg.task) else "")
        if point.source:  # a checkpoint row: its entry first
            label = f"{point.source} {label}" if label != "-" else point.source
        f_id = self.node_id(self.identity(model.id, fraction, fcfg))
        gpus, nproc = spec.resources.of(self.kind)
        node = Node(id=f_id, kind=self.kind, deps=[model.id], out=str(runs_dir(spec) / f_id), label=label, gpus=gpus,
                    nproc=nproc, config={"finetune": _config_dict(fcfg), "pretrain_dir": upstream.model_dir,
                                         "fraction": fraction})
        if upstream.shape is not None:
            node.est_tokens, node.est_flops = finetune_estimate(fcfg, upstream.shape)
        return node

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from plasticity.train.finetune import run_finetune

        init = finetune_init(node.config["pretrain_dir"], node.config["fraction"])
        # validated once, when the plan built it; init_from / out_dir are this node's
        cfg = from_dict(FinetuneConfig, dict(node.config["finetune"], init_from=init, out_dir=node.out))
        run = RunDir(node.out)
        resume = run.config_path.exists()
        if node.nproc > 1:  # DDP / FSDP2 through torchrun (resources.finetune_nproc)
            from plasticity.files import write_yaml

            cfg_path = Path(node.out).parent / f"{node.id}.torchrun.yaml"
            write_yaml(cfg_path, to_dict(cfg))
            rc = torchrun(node, ctx, ["plasticity.cli", "finetune", str(cfg_path)] + (["--resume"] if resume else []))
            res = run.summary() or {
                "status": "failed", "reason": f"torchrun exited with code {rc} (see {ctx.log_path})"}
            return run_summary(res, node.out, "final_train_loss")
        res = run_finetune(cfg, resume=resume, log=ctx.log)
        return run_summary(res, node.out, "final_train_loss")

    def outputs_present(self, node: Node, out: Path) -> bool:
        return completed_run(out)

    def size(self, node: Node, shape: Any) -> tuple[Any, str, float]:
        cfg = from_dict(FinetuneConfig, dict(node.config["finetune"], init_from="-", out_dir="-"))
        return training_size(node, shape, cfg.train, cfg.cutoff_len)

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        """``<task>/trained_on``: what the run was trained on (`data_note`)."""
        from plasticity.results_columns import data_note

        t_on = (RunDir(node.out).summary() or {}).get("trained_on")
        return {} if t_on is None else {f"{label}/trained_on": data_note(t_on)}

    def columns(self, nodes: list[tuple[str, Node]], study_dir: Path) -> dict[str, Any]:
        """Each task's `metrics`, and ``finetune_runs``: the runs' directories relative to the study's."""
        out = super().columns(nodes, study_dir)
        out["finetune_runs"] = ";".join(os.path.relpath(n.out, study_dir) for _, n in nodes)
        return out


def start_fractions(axes: dict[str, list[Any]]) -> list[float]:
    """The fractions of pretraining below 1 that fine-tuning starts from (each needs a snapshot of the run)."""
    return sorted({float(f) for f in axes.get(FROM_AXIS, []) if float(f) < 1})


def study_tasks(spec: StudySpec, axes: dict[str, list[Any]]) -> list[str]:
    """The study's fine-tuning tasks as given (names or YAML paths)."""
    return [str(t) for t in axes.get("task", [])] + ([str(spec.finetune.task)] if spec.finetune else [])


def task_name(task: str) -> str:
    """The registered name of a task given by name or by YAML path (result columns use it)."""
    if task.endswith((".yaml", ".yml")):
        from plasticity.tasks.registry import get_task

        return get_task(task).name
    return task


def task_variants(spec: StudySpec, fcfg: FinetuneConfig) -> list[tuple[FinetuneConfig, str]]:
    """(fine-tuning config, column label) per value combination of the task's `task_axes` options (e.g. the
    safety task's k in {300, 500, 1000, 2000}); options with several values appear in the label (``safety[k=300]``)."""
    name = task_name(fcfg.task)
    opts = spec.task_axes.get(name) or spec.task_axes.get(fcfg.task) or {}
    if not opts:
        return [(fcfg, name)]
    out = []
    keys = list(opts)
    for values in itertools.product(*(opts[k] for k in keys)):
        chosen = dict(zip(keys, values, strict=True))
        cfg = copy.deepcopy(fcfg)
        cfg.task_options = {**(cfg.task_options or {}), **chosen}
        shown = ",".join(f"{k}={v}" for k, v in chosen.items() if len(opts[k]) > 1)
        out.append((cfg, f"{name}[{shown}]" if shown else name))
    return out


def finetune_estimate(fcfg: FinetuneConfig, model: tuple[Any, Any]) -> tuple[int | None, float | None]:
    """Upper bound: examples x epochs x cutoff_len (examples from task_options.n_train or max_examples)."""
    n = fcfg.max_examples or fcfg.options_for_task().get("n_train")
    if not n:
        return None, None
    tokens = int(int(n) * fcfg.train.epochs * fcfg.cutoff_len)
    counts, shape = model
    return tokens, 6.0 * (counts.non_embedding + shape.vocab_size * shape.hidden_size) * tokens


def _check_tasks(spec: StudySpec, axes: dict[str, list[Any]]) -> None:
    """Every fine-tuning task exists: a registered name, or a YAML task file that loads; two tasks with one name
    (a YAML task named like a built-in) would share result columns: refused."""
    from plasticity.errors import UserError
    from plasticity.tasks.registry import get_task, task_names

    assert spec.finetune is not None
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


def _req(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(key, problem)


def task_content(task: str) -> str | None:
    """The content hash of a YAML task: its file and every local data file it reads (None for a registered
    task, whose rows are named by its options: built-in node ids never change). An edited task file or data
    file is a new node, not a cached one."""
    if not task.endswith((".yaml", ".yml")):
        return None
    from plasticity.data.sources import source_fingerprint
    from plasticity.tasks.registry import get_task

    files = {str(Path(task).expanduser().resolve())}
    for spec in get_task(task).splits.values():
        files.update(str(Path(src.path).resolve()) for src in spec.local)
    return node_hash([[f, source_fingerprint(f)] for f in sorted(files)])


def _config_dict(fcfg: FinetuneConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(fcfg).items() if k not in ("init_from", "out_dir")}


def finetune_init(model_dir: str, fraction: float) -> str:
    """The model fine-tuning starts from: a run's ``final/`` or its snapshot at `fraction` of pretraining; a
    checkpoint node's model (a run dir or a model dir) as is at fraction 1."""
    return RunDir(model_dir).snapshot_at(fraction).path
