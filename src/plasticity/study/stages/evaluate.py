"""The evaluate stage: downstream metrics of a fine-tuned model plus its App. D stability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import EvaluateConfig, FinetuneConfig, from_dict, to_dict
from ...io import read_json_or_none as read_json
from ...results_columns import task_columns
from .base import Node, RunContext, Stage, torchrun


class EvaluateStage(Stage):
    kind = "evaluate"
    config_type = EvaluateConfig

    def resolved(self, ecfg: EvaluateConfig, fcfg: FinetuneConfig) -> dict[str, Any]:
        """The settings as run; the default stability cloze sets are resolved here, so the node id says which."""
        ev = to_dict(ecfg)
        if ev.get("stability_tasks") is None:
            from ...evaluate import stability

            ev["stability_tasks"] = stability.resolve_cloze_sets(None, ecfg.data_root or fcfg.data_root)
        return ev

    def identity(self, finetune_id: str, settings: dict[str, Any]) -> list[Any]:
        return [finetune_id, settings]

    def build(self, ft: Node, settings: dict[str, Any], runs: Path, gpus: int, nproc: int = 1) -> Node:
        ev_id = self.node_id(self.identity(ft.id, settings))
        return Node(id=ev_id, kind=self.kind, deps=[ft.id], out=str(runs / ev_id), label=ft.label, gpus=gpus,
                    nproc=nproc, config={"finetune_dir": ft.out, "evaluate": settings})

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        if node.nproc > 1:  # the questions split across torchrun processes (resources.evaluate_nproc)
            import dataclasses
            import json

            spec = Path(node.out).parent / f"{node.id}.torchrun.json"
            result = Path(node.out).parent / f"{node.id}.torchrun-result.json"
            result.unlink(missing_ok=True)
            spec.write_text(json.dumps(dataclasses.asdict(node)))
            rc = torchrun(node, ctx, ["plasticity.study.evaluate_torchrun", str(spec), str(result)])
            return read_json(result) or {"status": "failed",
                                         "reason": f"torchrun exited with code {rc} (see {ctx.log_path})"}
        return evaluate_node(node, ctx.log)

    def outputs_present(self, node: Node, out: Path) -> bool:
        """stability.json (written last) and every result file parse: a damaged one makes the node run again."""
        return (read_json(out / "stability.json") is not None
                and all(read_json(f) is not None for f in out.glob("*.json")))

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        task_columns(label, Path(node.out), out)
        return out


def evaluate_node(node: Node, log) -> dict[str, Any]:
    """Evaluate one node (every process of a torchrun job calls it: the evaluation is split across them); rank
    0 then measures stability and returns the node result (other ranks: {"status": "done"})."""
    import os

    from ...evaluate.pipeline import evaluate_with_stability

    cfg = from_dict(EvaluateConfig, node.config["evaluate"])
    ev = evaluate_with_stability(node.config["finetune_dir"], cfg, out_dir=Path(node.out), log=log)
    if int(os.environ.get("RANK", "0")) != 0:
        return {"status": "done"}
    metrics = {f"{task}/{m}": v["value"] for task, r in ev.results.items() for m, v in r.get("metrics", {}).items()}
    return {"status": "done", "out": node.out,
            "metrics": dict(metrics, stability=ev.stability["stability"],
                            upstream_loss_change=ev.stability.get("upstream_loss_change"))}
