"""Plan a study as a DAG of nodes: tokenizer -> data -> pretrain (or an existing checkpoint) -> {analyze,
finetune -> evaluate}. Each kind is a `Stage` (``plasticity.study.stages``): its identity, run, outputs, columns.

A node's identity is a hash of its resolved config and its inputs' identities, and its output directory is
named by it, so identical work is never done twice (across studies sharing an ``out_dir``; tokenizers and
token caches are shared through the global cache), and a changed key re-runs only the nodes that depend on it.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PretrainConfig
from .spec import StudySpec, all_axes, stage_config, stage_of
from .stages import KINDS, STAGES, Node, node_hash

__all__ = ["KINDS", "Node", "Plan", "Row", "build_plan", "node_hash", "task_name"]


@dataclass
class Row:
    """One pretrained x fine-tuned model (tasks fine-tuned from the same checkpoint share a row)."""

    axes: dict[str, Any]
    pretrain: str  # the model node: a pretrain node, or a checkpoint node (a study over existing checkpoints)
    analyze: str | None = None
    # (task label, finetune id, eval id); the label is the task name, plus swept task_axes options
    finetunes: list[tuple[str, str, str | None]] = field(default_factory=list)


@dataclass
class Plan:
    spec: StudySpec
    nodes: dict[str, Node]  # in dependency order
    rows: list[Row]

    @property
    def root(self) -> Path:
        return Path(self.spec.out_dir).resolve()

    def dependents(self, node_id: str) -> set[str]:
        """Every node that (transitively) depends on `node_id`."""
        out: set[str] = set()
        for n in self.nodes.values():  # dependency order: deps come first
            if node_id in n.deps or out.intersection(n.deps):
                out.add(n.id)
        return out


def build_plan(spec: StudySpec) -> Plan:
    """Expand the axes into nodes and result rows (the spec must be validated): every pretraining grid point,
    then every checkpoint entry crossed with the fine-tuning / evaluation axes."""
    axes = all_axes(spec)
    nodes: dict[str, Node] = {}
    rows: dict[tuple, Row] = {}
    fracs = sorted({float(f) for f in axes.get("finetune_from", []) if float(f) < 1})
    estimates: dict[str, tuple[Any, Any]] = {}
    for point in _points(axes, pretraining=True) if spec.has_pretraining() else []:
        per_stage, frac = _split(point)
        pcfg = stage_config(spec, "pretrain", per_stage["pretrain"])
        if fracs:  # fine-tuning from part-way checkpoints needs those checkpoints kept
            pcfg.train.checkpoint_fractions = sorted(set(pcfg.train.checkpoint_fractions) | set(fracs))
        p_label = _label(point, "pretrain")
        tok = STAGES["tokenizer"].build(pcfg)
        nodes.setdefault(tok.id, tok)
        data = STAGES["data"].build(pcfg, tok.id)
        nodes.setdefault(data.id, data)
        res = spec.resources
        pre = STAGES["pretrain"].build(pcfg, data.id, _runs(spec), p_label, *res.of("pretrain"))
        if pre.id not in estimates:
            estimates[pre.id] = _pretrain_estimate(pcfg)
        pre.est_tokens, pre.est_flops = estimates[pre.id][1]
        _check_fractions(fracs, pcfg, pre.est_tokens, p_label)
        _track(spec, nodes.setdefault(pre.id, pre), point, "pretrain")
        _add_row(spec, pre, pre.out, point, per_stage, frac, estimates[pre.id][0], nodes, rows)
    for name, ccfg in spec.checkpoints.items():
        ck = STAGES["checkpoint"].build(name, ccfg, _runs(spec), spec.resources.gpus)
        _track(spec, nodes.setdefault(ck.id, ck), {"checkpoint": name}, "pretrain")
        for point in _points(axes, pretraining=False):
            per_stage, frac = _split(point)
            _add_row(spec, ck, STAGES["checkpoint"].model_dir(ck), dict(checkpoint=name, **point), per_stage, frac,
                     None, nodes, rows)
    return Plan(spec=spec, nodes=_ordered(nodes), rows=list(rows.values()))


def _check_fractions(fracs: list[float], pcfg: PretrainConfig, tokens: int, label: str) -> None:
    """Each ``finetune_from`` fraction must name a snapshot of its own: step round(f x steps) in [1, steps), so
    that a row labelled 1e-09 is never fine-tuned from step 1 (nor 0.999 from a snapshot that is the final model)."""
    from ..errors import ConfigError

    steps = tokens // max(1, pcfg.train.micro_batch_size * pcfg.train.grad_accum * pcfg.data.seq_len)
    for f in fracs:
        step = round(f * steps)
        if not 1 <= step < steps:
            raise ConfigError("finetune_from", f"{f:g} of {steps} pretraining steps ({label}) is step {step}, "
                              f"not a checkpoint between step 1 and the final one (use 1.0 for the final model)")


def _points(axes: dict[str, list[Any]], pretraining: bool) -> list[dict[str, Any]]:
    """Grid points over every axis (`pretraining`), or over the fine-tuning / evaluation axes only (the rows
    of a checkpoint entry)."""
    if not pretraining:
        axes = {k: v for k, v in axes.items() if stage_of(k)[0] != "pretrain"}
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(axes[k] for k in keys))]


def _split(point: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], float]:
    """Axis values per stage (``{stage: {key: value}}``) and the fine-tuning start fraction of one grid point."""
    per_stage: dict[str, dict[str, Any]] = {"pretrain": {}, "finetune": {}, "evaluate": {}}
    frac = 1.0
    for k, v in point.items():
        stage, sub = stage_of(k)
        if stage == "finetune_from":
            frac = float(v)
        elif stage in per_stage:
            per_stage[stage][sub] = v
    return per_stage, frac


def _add_row(spec: StudySpec, model: Node, model_dir: str, point: dict[str, Any], per_stage: dict[str, dict],
             frac: float, shape: Any, nodes: dict[str, Node], rows: dict[tuple, Row]) -> None:
    """The analyze, finetune and evaluate nodes of one model and grid point, and their results row."""
    label = model.label if model.kind == "checkpoint" else _label(point, "pretrain")
    ana = None
    if spec.analyze is not None and spec.analyze.what:
        ana = STAGES["analyze"].build(model.id, model_dir, spec.analyze, str(Path(model.out) / "analysis"), label,
                                      spec.resources.gpus)
        _track(spec, nodes.setdefault(ana.id, ana), point, "pretrain")
    row_axes = {k: v for k, v in point.items() if stage_of(k) != ("finetune", "task")}
    row = rows.setdefault((model.id, json.dumps(row_axes, sort_keys=True, default=str)),
                          Row(axes=row_axes, pretrain=model.id, analyze=ana.id if ana else None))
    if spec.finetune is None:
        return
    base_fcfg = stage_config(spec, "finetune", per_stage["finetune"])
    for fcfg, task_label in _task_variants(spec, base_fcfg):
        f_label = _label(point, "finetune") + (f" {task_label}" if task_label != task_name(fcfg.task) else "")
        if model.kind == "checkpoint":
            f_label = f"{model.label} {f_label}" if f_label != "-" else model.label
        ft = STAGES["finetune"].build(model.id, model_dir, frac, fcfg, _runs(spec), f_label,
                                      *spec.resources.of("finetune"))
        if shape is not None:
            ft.est_tokens, ft.est_flops = _finetune_estimate(fcfg, shape)
        _track(spec, nodes.setdefault(ft.id, ft), dict(point, task=task_label), "finetune")
        ev_id = None
        if spec.evaluate is not None:
            ecfg = stage_config(spec, "evaluate", per_stage["evaluate"])
            settings = STAGES["evaluate"].resolved(ecfg, fcfg)
            ev = STAGES["evaluate"].build(ft, settings, _runs(spec), *spec.resources.of("evaluate"))
            if shape is not None:
                ev.est_tokens, ev.est_flops = _evaluate_estimate(settings, fcfg, shape)
            _track(spec, nodes.setdefault(ev.id, ev), dict(point, task=task_label), "evaluate")
            ev_id = ev.id
        row.finetunes.append((task_label, ft.id, ev_id))


def _track(spec: StudySpec, node: Node, point: dict[str, Any], upto: str) -> None:
    """The node's tracking context (first grid point that made it): study name, node label and id, and the
    axis values it stands for (`upto`: pretrain / finetune / evaluate: the axes of that stage and before)."""
    if node.track is not None:
        return
    from ..tracking import backend_names

    keep = {"pretrain": {"pretrain"}, "finetune": {"pretrain", "finetune", "finetune_from"},
            "evaluate": {"pretrain", "finetune", "finetune_from", "evaluate"}}[upto]
    axes = {k: v for k, v in point.items() if k == "checkpoint" or stage_of(k)[0] in keep}
    node.track = {"backends": backend_names(spec.tracker), "group": spec.name, "node": node.id,
                  "name": f"{node.kind} {node.label}" if node.label != "-" else f"{node.kind} {node.id}",
                  "axes": axes}


def task_name(task: str) -> str:
    """The registered name of a task given by name or by YAML path (result columns use it)."""
    if task.endswith((".yaml", ".yml")):
        from ..tasks.registry import get_task

        return get_task(task).name
    return task


def _task_variants(spec: StudySpec, fcfg: Any) -> list[tuple[Any, str]]:
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


def _runs(spec: StudySpec) -> Path:
    """Node outputs live under the absolute ``<out_dir>/runs`` (workers may run in another directory)."""
    return Path(spec.out_dir).resolve() / "runs"


def _label(point: dict[str, Any], upto: str) -> str:
    keep = {"pretrain"} if upto == "pretrain" else {"pretrain", "finetune", "finetune_from", "evaluate"}
    # the checkpoint entry's name is its model node's label, which a checkpoint row's labels start with
    return " ".join(f"{k}={v}" for k, v in point.items() if stage_of(k)[0] in keep and k != "checkpoint") or "-"


def _pretrain_estimate(pcfg: PretrainConfig) -> tuple[Any, tuple[int, float]]:
    """((param counts, shape), (tokens, FLOPs)) from the preset on the meta device (vocab from the config)."""
    from ..models import build_model, count_params, flops_per_token, resolve_shape
    from ..train.pretrain import resolve_total_steps

    vocab = pcfg.model.vocab_size or (pcfg.tokenizer.vocab_size if pcfg.tokenizer.name == "bpe" else 32000)
    shape = resolve_shape(pcfg.model, vocab)
    counts = count_params(build_model(shape, device="meta"))
    steps, _ = resolve_total_steps(pcfg, counts.total, counts.non_embedding)
    tokens = steps * pcfg.train.micro_batch_size * pcfg.train.grad_accum * pcfg.data.seq_len
    return (counts, shape), (tokens, tokens * flops_per_token(counts, shape, pcfg.data.seq_len))


def _finetune_estimate(fcfg, model: tuple[Any, Any]) -> tuple[int | None, float | None]:
    """Upper bound: examples x epochs x cutoff_len (examples from task_options.n_train or max_examples)."""
    n = fcfg.max_examples or fcfg.options_for_task().get("n_train")
    if not n:
        return None, None
    tokens = int(int(n) * fcfg.train.epochs * fcfg.cutoff_len)
    counts, shape = model
    return tokens, 6.0 * (counts.non_embedding + shape.vocab_size * shape.hidden_size) * tokens


def _evaluate_estimate(ev: dict[str, Any], fcfg, model: tuple[Any, Any]) -> tuple[int | None, float | None]:
    n = ev.get("max_questions") or fcfg.options_for_task().get("n_test")
    if not n:
        return None, None
    tokens = int(n) * (int(ev["k"]) + 1) * int(ev["max_new_tokens"])
    counts, shape = model
    return tokens, 2.0 * (counts.non_embedding + shape.vocab_size * shape.hidden_size) * tokens


def _ordered(nodes: dict[str, Node]) -> dict[str, Node]:
    rank = {k: i for i, k in enumerate(KINDS)}
    return dict(sorted(nodes.items(), key=lambda kv: rank[kv[1].kind]))
