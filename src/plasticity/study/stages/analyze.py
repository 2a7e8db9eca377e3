"""The analyze stage: probes / attention rank / loss gaps / norms of a pretrained model (run or checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticity.analysis.columns import analysis_columns
from plasticity.config import AnalyzeConfig, from_dict, to_dict
from plasticity.files import read_json_or_none as read_json
from plasticity.study.stages.base import GridPoint, Node, RunContext, Stage, StudySpec, Upstream


class AnalyzeStage(Stage):
    """One node per model (pretraining run or checkpoint), its files in the model's ``analysis/`` folder."""

    kind = "analyze"
    config_type = AnalyzeConfig
    section = "analyze"
    consumes = "model"
    provides = "analysis"

    def enabled(self, spec: StudySpec) -> bool:
        return spec.analyze is not None and bool(spec.analyze.what)

    def check_spec(self, spec: StudySpec, axes: dict[str, list[Any]]) -> None:
        """Every analysis is known and the options are valid (`AnalyzeConfig.validate`, through `config`)."""
        if spec.analyze is not None:
            self.config(spec, {})

    def identity(self, model_id: str, acfg: AnalyzeConfig) -> list[Any]:
        """The model and the sorted analyses, plus any option that differs from its default (so studies written
        before analyze options existed keep their ids)."""
        opts = _non_default(acfg)
        return [model_id, sorted(acfg.what)] + ([opts] if opts else [])

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        model = upstream[self.consumes]
        acfg = point.config(self.kind)
        gpus, _ = spec.resources.of(self.kind)
        return Node(id=self.node_id(self.identity(model.id, acfg)), kind=self.kind, deps=[model.id],
                    out=str(Path(model.out) / "analysis"), label=model.label, gpus=gpus,
                    config={"run": upstream.model_dir, "what": sorted(acfg.what), "options": _non_default(acfg)})

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from plasticity.analysis.analyzer import run_analyze

        # validated once, when the plan built it
        cfg = from_dict(AnalyzeConfig, dict(node.config.get("options") or {}, what=node.config["what"]))
        run_analyze(node.config["run"], out_dir=node.out, cfg=cfg, log=ctx.log)
        metrics = {}
        if (norms := read_json(Path(node.out) / "norms.json")) is not None:
            metrics["weight_norm"] = norms.get("total_norm")
        return {"status": "done", "out": node.out, "metrics": metrics}

    def outputs_present(self, node: Node, out: Path) -> bool:
        return all(read_json(out / f"{w}.json") is not None for w in node.config["what"])

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        return analysis_columns(Path(node.out))

    def tracked(self, node: Node, result: dict[str, Any]) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
        """The results-row numbers, and the attention pseudo-rank of every analysed checkpoint at its step."""
        series: dict[int, dict[str, float]] = {}
        rank = read_json(Path(node.out) / "rank.json") or {}
        for c in rank.get("checkpoints") or []:
            if isinstance(c.get("step"), int) and c.get("mean"):
                series[c["step"]] = {f"rank/{k}_fraction": c["mean"][k]["fraction"] for k in ("qk", "vp")}
        return self.metrics(node, node.label), series


def _non_default(acfg: AnalyzeConfig) -> dict[str, Any]:
    default = AnalyzeConfig()
    return {k: v for k, v in to_dict(acfg).items() if k != "what" and v != getattr(default, k)}
