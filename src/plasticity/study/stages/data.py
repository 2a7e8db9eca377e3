"""The data stage: tokenize and pack a pretraining source into the global token cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticity.config import DataConfig, PretrainConfig, TokenizerConfig, from_dict, to_dict
from plasticity.study.stages.base import GridPoint, Node, RunContext, Stage, StudySpec, Upstream


class DataStage(Stage):
    """Its config is the ``data`` and ``tokenizer`` sections of the pretraining config it feeds (`config_of`)."""

    kind = "data"
    config_type = PretrainConfig
    config_of = "pretrain"
    consumes = "tokenizer"
    provides = "tokens"
    in_tracker = False

    def identity(self, pcfg: PretrainConfig, tokenizer_id: str) -> list[Any]:
        from plasticity.data.packed import source_key

        return [source_key(pcfg.data), tokenizer_id]

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        from plasticity.data.packed import source_label

        pcfg = point.config(self.config_of)
        tokenizer_id = upstream[self.consumes].id
        return Node(id=self.node_id(self.identity(pcfg, tokenizer_id)), kind=self.kind, deps=[tokenizer_id], out="",
                    config={"data": to_dict(pcfg.data), "tokenizer": to_dict(pcfg.tokenizer)},
                    label=source_label(pcfg.data.source))

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from plasticity.data.packed import prepare_data

        d = prepare_data(from_dict(DataConfig, node.config["data"]),
                         from_dict(TokenizerConfig, node.config["tokenizer"]), ctx.log)
        return {"status": "done", "out": str(d.dir),
                "metrics": {"train_tokens": d.meta["train_tokens"], "val_tokens": d.meta["val_tokens"]}}

    def outputs_present(self, node: Node, out: Path) -> bool:
        return (out / "meta.json").exists()
