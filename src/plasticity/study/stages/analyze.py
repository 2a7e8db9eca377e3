"""The analyze stage: probes / attention rank / loss gaps / norms of a pretrained model (run or checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import AnalyzeConfig, from_dict, to_dict
from ...io import read_json_or_none as read_json
from .base import Node, RunContext, Stage


class AnalyzeStage(Stage):
    kind = "analyze"
    config_type = AnalyzeConfig

    def identity(self, model_id: str, acfg: AnalyzeConfig) -> list[Any]:
        """The model and the sorted analyses, plus any option that differs from its default (so studies written
        before analyze options existed keep their ids)."""
        opts = _non_default(acfg)
        return [model_id, sorted(acfg.what)] + ([opts] if opts else [])

    def build(self, model_id: str, target: str, acfg: AnalyzeConfig, out: str, label: str, gpus: int) -> Node:
        return Node(id=self.node_id(self.identity(model_id, acfg)), kind=self.kind, deps=[model_id], out=out,
                    config={"run": target, "what": sorted(acfg.what), "options": _non_default(acfg)}, label=label,
                    gpus=gpus)

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from ...analysis.run import run_analyze

        cfg = from_dict(AnalyzeConfig, dict(node.config.get("options") or {}, what=node.config["what"]))
        run_analyze(node.config["run"], out_dir=node.out, cfg=cfg, log=ctx.log)
        metrics = {}
        if (norms := read_json(Path(node.out) / "norms.json")) is not None:
            metrics["weight_norm"] = norms.get("total_norm")
        return {"status": "done", "out": node.out, "metrics": metrics}

    def outputs_present(self, node: Node, out: Path) -> bool:
        return all(read_json(out / f"{w}.json") is not None for w in node.config["what"])

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        a, out = Path(node.out), {}
        if (norms := read_json(a / "norms.json")) is not None:
            out["weight_norm"] = norms["total_norm"]
        if (rank := read_json(a / "rank.json")) is not None and rank.get("checkpoints"):
            out.update(rank_columns(rank))
        if (gap := read_json(a / "gap.json")) is not None:  # a bare checkpoint has no train-val gap: None
            out["train_val_gap"] = (gap.get("train_val") or {}).get("gap")
            out["final_model_train_loss"] = (gap.get("train_val") or {}).get("train_loss")  # Eq. 3's training loss
            out["unseen_seen_gap"] = (gap.get("unseen_seen") or {}).get("gap")
        if (probes := read_json(a / "probes.json")) is not None:
            for name, ps in probes["sets"].items():
                out[f"probe_{name}"] = ps["best_test_accuracy"]
            from ...report.build import probe_mean_best

            out["probe_mean_best"] = probe_mean_best(probes)  # paper Fig. 25: sets averaged per layer, best layer
        return out

    def tracked(self, node: Node, result: dict[str, Any]) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
        """The results-row numbers, and the attention pseudo-rank of every analysed checkpoint at its step."""
        series: dict[int, dict[str, float]] = {}
        rank = read_json(Path(node.out) / "rank.json") or {}
        for c in rank.get("checkpoints") or []:
            if isinstance(c.get("step"), int) and c.get("mean"):
                series[c["step"]] = {f"rank/{k}_fraction": c["mean"][k]["fraction"] for k in ("qk", "vp")}
        return self.metrics(node, node.label), series


def rank_columns(rank: dict[str, Any]) -> dict[str, Any]:
    """Final checkpoint: ``qk_rank_frac`` / ``vp_rank_frac`` (mean over all layers and heads, ours) and
    ``qk_rank_frac_layers`` / ``vp_rank_frac_layers`` over ``rank_layers`` (the paper's Figs 5, 26: layers 5 and
    15, or the configured ones; rank.json written before these existed: the paper's default for its depth)."""
    from ...analysis.rank import mean_over_layers, selected_layers

    last = rank["checkpoints"][-1]
    out = {"qk_rank_frac": last["mean"]["qk"]["fraction"], "vp_rank_frac": last["mean"]["vp"]["fraction"]}
    sel = rank.get("selected_layers") or (selected_layers(int(last["num_layers"])) if "num_layers" in last else None)
    sm = last.get("selected_mean") or (mean_over_layers(last, sel["layers"]) if sel else None)
    if sel and sm:
        out.update(qk_rank_frac_layers=sm["qk"], vp_rank_frac_layers=sm["vp"],
                   rank_layers=";".join(str(i) for i in sel["layers"]))
    return out


def _non_default(acfg: AnalyzeConfig) -> dict[str, Any]:
    default = AnalyzeConfig()
    return {k: v for k, v in to_dict(acfg).items() if k != "what" and v != getattr(default, k)}
