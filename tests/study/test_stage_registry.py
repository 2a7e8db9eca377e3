"""The stage registry is the whole contract: a stage registered there is planned, validated and tabulated
without touching the planner, and the results table the stages make is the one the study always wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plasticity.config import from_dict, validate
from plasticity.errors import ConfigError
from plasticity.study.plan import build_plan
from plasticity.study.results import collect_rows, to_csv
from plasticity.study.run_study import row_axes
from plasticity.study.spec import StudySpec, validate_spec
from plasticity.study.stages import STAGES, GridPoint, Node, Stage, Upstream, axis_owner
from plasticity.study.stages.base import overrides, runs_dir

BASE = {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512},
        "data": {"source": "packaged:bbc_news", "seq_len": 32}, "train": {"micro_batch_size": 4, "max_steps": 20}}
FT = {"task": "demo_arith", "task_options": {"n_train": 32, "n_test": 8}}


@dataclass
class ScoreConfig:
    threshold: float = 0.5

    def validate(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ConfigError("threshold", f"must be in [0, 1], got {self.threshold}")


class ScoreStage(Stage):
    """A stage the planner has never heard of: one node per model, configured by ``score.*`` axes."""

    kind = "score"
    config_type = ScoreConfig
    consumes = "model"
    provides = "score"
    axis_prefix = "score"

    def config(self, spec: Any, values: dict[str, Any]) -> ScoreConfig:
        cfg = from_dict(ScoreConfig, overrides(values))
        validate(cfg)
        return cfg

    def build(self, spec: Any, point: GridPoint, upstream: Upstream) -> Node:
        model, cfg = upstream[self.consumes], point.config(self.kind)
        s_id = self.node_id([model.id, cfg.threshold])
        return Node(id=s_id, kind=self.kind, deps=[model.id], out=str(runs_dir(spec) / s_id), label=point.label(),
                    config={"model": upstream.model_dir, "threshold": cfg.threshold})

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        return {"score_threshold": node.config["threshold"]}


def spec(**kw: Any) -> StudySpec:
    s = from_dict(StudySpec, dict({"name": "t", "out_dir": "/tmp/registry", "base": BASE}, **kw))
    validate_spec(s)
    return s


def test_a_registered_stage_is_planned_validated_and_tabulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STAGES, "score", ScoreStage())
    assert axis_owner("score.threshold") == (STAGES["score"], "threshold")
    s = spec(axes={"optim.weight_decay": [0.0, 0.1], "score.threshold": [0.2, 0.8]})
    plan = build_plan(s)
    scores = [n for n in plan.nodes.values() if n.kind == "score"]
    pre = {n.id: n for n in plan.nodes.values() if n.kind == "pretrain"}
    assert len(pre) == 2 and len(scores) == 4
    assert all(n.deps[0] in pre and n.config["model"] == pre[n.deps[0]].out for n in scores)
    assert list(plan.nodes)[-4:] == [n.id for n in scores]  # after the models they are built on
    assert len(plan.rows) == 4
    rows = collect_rows(plan, {nid: "pending" for nid in plan.nodes}, Path("/tmp/registry/t"))
    assert sorted(r["score_threshold"] for r in rows) == [0.2, 0.2, 0.8, 0.8]
    assert all(r["score.threshold"] == r["score_threshold"] for r in rows)
    with pytest.raises(ConfigError) as e:
        spec(axes={"score.threshold": [0.2, 2.0]})
    assert str(e.value) == "config error: axes.score.threshold: 2.0: threshold: must be in [0, 1], got 2.0"


def test_a_stage_built_on_a_checkpoint_gets_its_model_link(monkeypatch: pytest.MonkeyPatch, tiny_run: Path) -> None:
    monkeypatch.setitem(STAGES, "score", ScoreStage())
    s = spec(base=None, checkpoints={"a": {"path": str(tiny_run)}}, analyze=["norms"])
    plan = build_plan(s)
    (score,) = [n for n in plan.nodes.values() if n.kind == "score"]
    (ck,) = [n for n in plan.nodes.values() if n.kind == "checkpoint"]
    assert score.deps == [ck.id] and score.config["model"] == str(Path(ck.out) / "model")
    assert [nid for _, nid in plan.rows[0].nodes][0] == ck.id and score.id in dict(map(reversed, plan.rows[0].nodes))


# ---- the results table of a study whose nodes all finished, as the code before the stage contract wrote it
GOLDEN = dict(name="golden", out_dir="/tmp/golden-results", base=BASE, analyze=["norms"], finetune=FT,
              axes={"optim.weight_decay": [0.0, 0.1], "finetune.optim.lr": [1e-4, 1e-3]},
              tasks=["demo_arith", "demo_choice"], task_axes={"demo_arith": {"n_train": [16, 32]}},
              evaluate={"k": 2, "stability_tasks": ["demo_choice"]})


def fake_outputs(nodes: list[Node]) -> None:
    """Every node's outputs as a finished study leaves them (numbers derived from the node id)."""
    for n in nodes:
        x = int(n.id.rsplit("-", 1)[1][:4], 16) / 65536
        out = Path(n.out)
        if n.kind in ("pretrain", "finetune"):
            out.mkdir(parents=True, exist_ok=True)
            s = {"status": "completed", "final_val_loss": 4 + x, "final_train_loss": 3 + x, "tokens_seen": 1280,
                 "params_total": 999, "trained_on": {"source": "generated", "n": 32, "origins": ["demo"],
                                                     "notes": ["made up"]}}
            (out / "summary.json").write_text(json.dumps(s))
        elif n.kind == "analyze":
            out.mkdir(parents=True, exist_ok=True)
            (out / "norms.json").write_text(json.dumps({"total_norm": 10 + x}))
        elif n.kind == "evaluate":
            out.mkdir(parents=True, exist_ok=True)
            task = "demo_arith" if "demo_arith" in n.label or "n_train" in n.label else "demo_choice"
            fam, metric = ("cot", "greedy") if task == "demo_arith" else ("cloze", "acc")
            (out / f"{task}.json").write_text(json.dumps({"task": task, "family": fam, "metrics": {
                metric: {"value": x}}, "evaluated_on": {"source": "generated", "n": 8, "origins": ["demo"]}}))
            (out / "stability.json").write_text(json.dumps({"stability": 1 - x, "upstream_loss_change": x,
                                                            "finetuned_avg_acc": 0.3, "base_avg_acc": 0.4}))


def golden_csv(tmp: Path) -> str:
    s = spec(**dict(GOLDEN, out_dir=str(tmp)))
    plan = build_plan(s)
    fake_outputs(list(plan.nodes.values()))
    rows = collect_rows(plan, {nid: "done" for nid in plan.nodes}, tmp / s.name)
    return to_csv(rows, row_axes(s))


def test_results_table_is_the_one_written_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import plasticity.evaluate.stability as st

    monkeypatch.setattr(st, "resolve_cloze_sets", lambda tasks, data_root=None: list(tasks or ["demo_choice"]))
    got = golden_csv(tmp_path)
    expected = (Path(__file__).parent / "golden_results.csv").read_text()
    assert got == expected
