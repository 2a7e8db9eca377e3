"""Plan a study as a DAG of nodes: tokenizer -> data -> pretrain -> {analyze, finetune -> evaluate}.

A node's identity is a hash of its resolved config and its inputs' identities, and its output directory is
named by it, so identical work is never done twice (across studies sharing an ``out_dir``; tokenizers and
token caches are shared through the global cache), and a changed key re-runs only the nodes that depend on it.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PretrainConfig, to_dict
from .spec import StudySpec, all_axes, stage_config, stage_of

KINDS = ("tokenizer", "data", "pretrain", "analyze", "finetune", "evaluate")


@dataclass
class Node:
    id: str  # "<kind>-<hash>"
    kind: str
    deps: list[str]
    out: str  # output directory
    config: dict[str, Any]  # everything the node's runner needs (JSON-serialisable)
    label: str  # the axis values it stands for, e.g. "optim.weight_decay=0.1"
    est_tokens: int | None = None
    est_flops: float | None = None
    gpus: int = 0
    nproc: int = 1


@dataclass
class Row:
    """One pretrained x fine-tuned model (tasks fine-tuned from the same checkpoint share a row)."""

    axes: dict[str, Any]
    pretrain: str
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


def node_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_plan(spec: StudySpec) -> Plan:
    """Expand the axes into nodes and result rows (the spec must be validated)."""
    axes = all_axes(spec)
    keys = list(axes)
    nodes: dict[str, Node] = {}
    rows: dict[tuple, Row] = {}
    fracs = sorted({float(f) for f in axes.get("finetune_from", []) if float(f) < 1})
    estimates: dict[str, tuple[Any, Any]] = {}
    for values in itertools.product(*(axes[k] for k in keys)) if keys else [()]:
        point = dict(zip(keys, values, strict=True))
        per_stage: dict[str, dict[str, Any]] = {"pretrain": {}, "finetune": {}, "evaluate": {}}
        frac = 1.0
        for k, v in point.items():
            stage, sub = stage_of(k)
            if stage == "finetune_from":
                frac = float(v)
            else:
                per_stage[stage][sub] = v
        pcfg = stage_config(spec, "pretrain", per_stage["pretrain"])
        if fracs:  # fine-tuning from part-way checkpoints needs those checkpoints kept
            pcfg.train.checkpoint_fractions = sorted(set(pcfg.train.checkpoint_fractions) | set(fracs))
        p_label = _label(point, "pretrain")
        data_id = _data_nodes(spec, pcfg, nodes)
        pre = _pretrain_node(spec, pcfg, data_id, p_label, estimates)
        nodes.setdefault(pre.id, pre)
        ana = None
        if spec.analyze:
            ana = Node(id=f"analyze-{node_hash([pre.id, sorted(spec.analyze)])}", kind="analyze", deps=[pre.id],
                       out=str(Path(pre.out) / "analysis"), config={"run": pre.out, "what": sorted(spec.analyze)},
                       label=p_label, gpus=spec.resources.gpus)
            nodes.setdefault(ana.id, ana)
        row_axes = {k: v for k, v in point.items() if stage_of(k) != ("finetune", "task")}
        row = rows.setdefault((pre.id, json.dumps(row_axes, sort_keys=True, default=str)),
                              Row(axes=row_axes, pretrain=pre.id, analyze=ana.id if ana else None))
        if spec.finetune is None:
            continue
        base_fcfg = stage_config(spec, "finetune", per_stage["finetune"])
        for fcfg, label in _task_variants(spec, base_fcfg):
            ft_dict = {k: v for k, v in to_dict(fcfg).items() if k not in ("init_from", "out_dir")}
            ft_ident = json.loads(json.dumps(ft_dict, default=str))
            ft_ident["train"].pop("allow_large_memory", None)  # whether to refuse, not what: not in the id
            f_id = f"finetune-{node_hash([pre.id, frac, ft_ident])}"
            f_label = _label(point, "finetune") + (f" {label}" if label != task_name(fcfg.task) else "")
            ft = Node(id=f_id, kind="finetune", deps=[pre.id], out=str(_runs(spec) / f_id),
                      config={"finetune": ft_dict, "pretrain_dir": pre.out, "fraction": frac}, label=f_label,
                      gpus=spec.resources.gpus)
            ft.est_tokens, ft.est_flops = _finetune_estimate(fcfg, estimates[pre.id][0])
            nodes.setdefault(ft.id, ft)
            ev_id = None
            if spec.evaluate is not None:
                ecfg = stage_config(spec, "evaluate", per_stage["evaluate"])
                ev_dict = to_dict(ecfg)
                if ev_dict.get("stability_tasks") is None:  # resolved here, so the node id says which sets
                    from ..evaluate.stability import resolve_cloze_sets

                    ev_dict["stability_tasks"] = resolve_cloze_sets(None, ecfg.data_root or fcfg.data_root)
                ev_id = f"evaluate-{node_hash([ft.id, ev_dict])}"
                ev = Node(id=ev_id, kind="evaluate", deps=[ft.id], out=str(_runs(spec) / ev_id),
                          config={"finetune_dir": ft.out, "evaluate": ev_dict}, label=f_label,
                          gpus=spec.resources.gpus)
                ev.est_tokens, ev.est_flops = _evaluate_estimate(ev_dict, fcfg, estimates[pre.id][0])
                nodes.setdefault(ev.id, ev)
            row.finetunes.append((label, ft.id, ev_id))
    return Plan(spec=spec, nodes=_ordered(nodes), rows=list(rows.values()))


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
    return " ".join(f"{k}={v}" for k, v in point.items() if stage_of(k)[0] in keep) or "-"


def _data_nodes(spec: StudySpec, pcfg: PretrainConfig, nodes: dict[str, Node]) -> str:
    """Tokenizer and token-cache nodes of a pretraining config; returns the data node id."""
    from ..data.packed import source_key, tokenizer_dir

    data, tok = to_dict(pcfg.data), to_dict(pcfg.tokenizer)
    src = source_key(pcfg.data)
    tdir = tokenizer_dir(pcfg.data, pcfg.tokenizer)
    t_id = f"tokenizer-{tdir.name if tdir is not None else node_hash([tok['name'], tok.get('revision')])}"
    nodes.setdefault(t_id, Node(id=t_id, kind="tokenizer", deps=[], out=str(tdir) if tdir else "",
                                config={"data": data, "tokenizer": tok}, label=pcfg.data.source))
    d_id = f"data-{node_hash([src, t_id])}"
    nodes.setdefault(d_id, Node(id=d_id, kind="data", deps=[t_id], out="", config={"data": data, "tokenizer": tok},
                                label=pcfg.data.source))
    return d_id


def _pretrain_node(spec: StudySpec, pcfg: PretrainConfig, data_id: str, label: str,
                   estimates: dict[str, tuple[Any, Any]]) -> Node:
    d = to_dict(pcfg)
    d.pop("out_dir")
    ident = json.loads(json.dumps(d))
    for how in ("threads", "parallel", "allow_large_memory"):  # how fast / whether to refuse, not what
        ident["train"].pop(how, None)
    p_id = f"pretrain-{node_hash(ident)}"
    out = str(_runs(spec) / p_id)
    res = spec.resources
    nproc = res.pretrain_nproc or max(1, res.pretrain_gpus)
    node = Node(id=p_id, kind="pretrain", deps=[data_id], out=out, config=dict(d, out_dir=out), label=label,
                gpus=res.pretrain_gpus, nproc=nproc)
    if p_id not in estimates:
        estimates[p_id] = _pretrain_estimate(pcfg)
    node.est_tokens, node.est_flops = estimates[p_id][1]
    return node


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
