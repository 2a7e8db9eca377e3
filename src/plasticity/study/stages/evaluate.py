"""The evaluate stage: downstream metrics of a fine-tuned model plus its App. D stability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticity.config import EvaluateConfig, FinetuneConfig, from_dict, to_dict
from plasticity.files import read_json_or_none as read_json
from plasticity.results_columns import headline, task_columns
from plasticity.study.stages.base import GridPoint, Node, RunContext, Stage, StudySpec, Upstream, runs_dir, torchrun

EVAL_PROMPT_TOKENS = 512  # prompt length the sampling-memory estimate assumes (the paper's prompts are shorter)


class EvaluateStage(Stage):
    """Owns ``evaluate.``-prefixed axes; one node per fine-tuned model; its columns end in the row's headline."""

    kind = "evaluate"
    config_type = EvaluateConfig
    section = "evaluate"
    consumes = "finetuned"
    provides = "evaluation"
    axis_prefix = "evaluate"
    sweep_name = "evaluation"

    def check_spec(self, spec: StudySpec, axes: dict[str, list[Any]]) -> None:
        from plasticity.errors import ConfigError

        if spec.evaluate is not None and spec.finetune is None:
            raise ConfigError("evaluate", "needs a `finetune` section")

    def resolved(self, ecfg: EvaluateConfig, fcfg: FinetuneConfig) -> dict[str, Any]:
        """The settings as run; the default stability cloze sets are resolved here, so the node id says which."""
        ev = to_dict(ecfg)
        if ev.get("stability_tasks") is None:
            from plasticity.evaluate import stability

            ev["stability_tasks"] = stability.resolve_cloze_sets(None, ecfg.data_root or fcfg.data_root)
        return ev

    def identity(self, finetune_id: str, settings: dict[str, Any]) -> list[Any]:
        # `precision: auto` (its default, added later) is left out so the ids of existing studies do not move
        return [finetune_id, {k: v for k, v in settings.items() if not (k == "precision" and v == "auto")}]

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        ft = upstream[self.consumes]
        fcfg = point.config(ft.kind)
        settings = self.resolved(point.config(self.kind), fcfg)
        ev_id = self.node_id(self.identity(ft.id, settings))
        gpus, nproc = spec.resources.of(self.kind)
        node = Node(id=ev_id, kind=self.kind, deps=[ft.id], out=str(runs_dir(spec) / ev_id), label=ft.label,
                    gpus=gpus, nproc=nproc, config={"finetune_dir": ft.out, "evaluate": settings})
        if upstream.shape is not None:
            node.est_tokens, node.est_flops = evaluate_estimate(settings, fcfg, upstream.shape)
        return node

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

    sizing_hint = "lower evaluate.batch_size or evaluate.max_new_tokens"

    def size(self, node: Node, shape: Any) -> tuple[Any, str, float]:
        """Sampling: the weights and the KV cache of `batch_size` sequences of a 512-token prompt plus
        `max_new_tokens`, in bf16 unless `evaluate.precision: fp32` (`auto` is bf16 on GPUs with bf16)."""
        from plasticity.train import memory as mem

        ev = from_dict(EvaluateConfig, node.config["evaluate"])
        est = mem.sampling_estimate(shape, ev.batch_size, EVAL_PROMPT_TOKENS, ev.max_new_tokens,
                                    weight_bytes=4 if ev.precision == "fp32" else 2)
        return est, ("split" if node.nproc > 1 else "none"), 1.0

    def outputs_present(self, node: Node, out: Path) -> bool:
        """stability.json (written last) and every result file parse: a damaged one makes the node run again."""
        return (read_json(out / "stability.json") is not None
                and all(read_json(f) is not None for f in out.glob("*.json")))

    def tracked(self, node: Node, result: dict[str, Any]) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
        return dict(result.get("metrics") or {}), {}

    def columns(self, nodes: list[tuple[str, Node]], study_dir: Path) -> dict[str, Any]:
        """``<task>/<eval set>/<metric>`` of every task (`task_columns`), then the row's averaged headline."""
        out: dict[str, Any] = {}
        per_task = {label: task_columns(label, Path(node.out), out) for label, node in nodes}
        out.update(headline(per_task))
        return out

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        task_columns(label, Path(node.out), out)
        return out


def evaluate_estimate(ev: dict[str, Any], fcfg: FinetuneConfig, model: tuple[Any, Any]
                      ) -> tuple[int | None, float | None]:
    """Upper bound: questions x (k + 1) samples x max_new_tokens."""
    n = ev.get("max_questions") or fcfg.options_for_task().get("n_test")
    if not n:
        return None, None
    tokens = int(n) * (int(ev["k"]) + 1) * int(ev["max_new_tokens"])
    counts, shape = model
    return tokens, 2.0 * (counts.non_embedding + shape.vocab_size * shape.hidden_size) * tokens


def evaluate_node(node: Node, log) -> dict[str, Any]:
    """Evaluate one node (every process of a torchrun job calls it: the evaluation is split across them); rank
    0 then measures stability and returns the node result (other ranks: {"status": "done"})."""
    import os

    from plasticity.evaluate.pipeline import evaluate_with_stability

    cfg = from_dict(EvaluateConfig, node.config["evaluate"])
    ev = evaluate_with_stability(node.config["finetune_dir"], cfg, out_dir=Path(node.out), log=log)
    if int(os.environ.get("RANK", "0")) != 0:
        return {"status": "done"}
    metrics = {f"{task}/{m}": v["value"] for task, r in ev.results.items() for m, v in r.get("metrics", {}).items()}
    return {"status": "done", "out": node.out,
            "metrics": dict(metrics, stability=ev.stability["stability"],
                            upstream_loss_change=ev.stability.get("upstream_loss_change"))}
