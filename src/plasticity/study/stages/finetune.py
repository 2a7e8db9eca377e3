"""The fine-tuning stage: one `plasticity finetune` run from a pretrained model (a fraction of the way, or final)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...config import FinetuneConfig, from_dict, to_dict, train_identity, validate
from ...io import read_json_or_none as read_json
from .base import Node, RunContext, Stage, completed_run, node_hash, run_summary, torchrun


class FinetuneStage(Stage):
    kind = "finetune"
    config_type = FinetuneConfig

    def identity(self, model_id: str, fraction: float, fcfg: FinetuneConfig) -> list[Any]:
        ident = json.loads(json.dumps(_config_dict(fcfg), default=str))
        # whether to refuse / how much memory / where numbers are mirrored, not what: not in the id
        ident["train"] = train_identity(ident["train"], ("allow_large_memory", "activation_checkpointing", "tracker"))
        content = task_content(fcfg.task)
        if content is not None:  # a YAML task: its file and data are read, so their bytes are part of the id
            ident["task_content"] = content
        return [model_id, fraction, ident]

    def build(self, model_id: str, model_dir: str, fraction: float, fcfg: FinetuneConfig, runs: Path, label: str,
              gpus: int, nproc: int = 1) -> Node:
        f_id = self.node_id(self.identity(model_id, fraction, fcfg))
        return Node(id=f_id, kind=self.kind, deps=[model_id], out=str(runs / f_id), label=label, gpus=gpus,
                    nproc=nproc,
                    config={"finetune": _config_dict(fcfg), "pretrain_dir": model_dir, "fraction": fraction})

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from ...train.finetune import run_finetune

        init = finetune_init(node.config["pretrain_dir"], node.config["fraction"])
        cfg = from_dict(FinetuneConfig, dict(node.config["finetune"], init_from=init, out_dir=node.out))
        validate(cfg)
        resume = (Path(node.out) / "config.yaml").exists()
        if node.nproc > 1:  # DDP / FSDP2 through torchrun (resources.finetune_nproc)
            from ...io import write_yaml

            cfg_path = Path(node.out).parent / f"{node.id}.torchrun.yaml"
            write_yaml(cfg_path, to_dict(cfg))
            rc = torchrun(node, ctx, ["plasticity.cli", "finetune", str(cfg_path)] + (["--resume"] if resume else []))
            res = read_json(Path(node.out) / "summary.json") or {
                "status": "failed", "reason": f"torchrun exited with code {rc} (see {ctx.log_path})"}
            return run_summary(res, node.out, "final_train_loss")
        res = run_finetune(cfg, resume=resume, log=ctx.log)
        return run_summary(res, node.out, "final_train_loss")

    def outputs_present(self, node: Node, out: Path) -> bool:
        return completed_run(out)

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        from ...results_columns import data_note

        t_on = (read_json(Path(node.out) / "summary.json") or {}).get("trained_on")
        return {} if t_on is None else {f"{label}/trained_on": data_note(t_on)}


def task_content(task: str) -> str | None:
    """The content hash of a YAML task: its file and every local data file it reads (None for a registered
    task, whose rows are named by its options: built-in node ids never change). An edited task file or data
    file is a new node, not a cached one."""
    if not task.endswith((".yaml", ".yml")):
        return None
    from ...data.sources import source_fingerprint
    from ...tasks.registry import get_task

    files = {str(Path(task).expanduser().resolve())}
    for spec in get_task(task).splits.values():
        files.update(str(Path(src.path).resolve()) for src in spec.local)
    return node_hash([[f, source_fingerprint(f)] for f in sorted(files)])


def _config_dict(fcfg: FinetuneConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(fcfg).items() if k not in ("init_from", "out_dir")}


def finetune_init(model_dir: str, fraction: float) -> str:
    """The model fine-tuning starts from: a run's ``final/`` or its snapshot at `fraction` of pretraining; a
    checkpoint node's model (a run dir or a model dir) as is at fraction 1."""
    from ...checkpoints import RunDir

    return RunDir(model_dir).snapshot_at(fraction).path
