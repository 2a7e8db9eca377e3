"""The data stage: tokenize and pack a pretraining source into the global token cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import DataConfig, PretrainConfig, TokenizerConfig, from_dict, to_dict
from .base import Node, RunContext, Stage


class DataStage(Stage):
    kind = "data"
    config_type = DataConfig

    def identity(self, pcfg: PretrainConfig, tokenizer_id: str) -> list[Any]:
        from ...data.packed import source_key

        return [source_key(pcfg.data), tokenizer_id]

    def build(self, pcfg: PretrainConfig, tokenizer_id: str) -> Node:
        from ...data.packed import source_label

        return Node(id=self.node_id(self.identity(pcfg, tokenizer_id)), kind=self.kind, deps=[tokenizer_id], out="",
                    config={"data": to_dict(pcfg.data), "tokenizer": to_dict(pcfg.tokenizer)},
                    label=source_label(pcfg.data.source))

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from ...data.packed import prepare_data

        d = prepare_data(from_dict(DataConfig, node.config["data"]),
                         from_dict(TokenizerConfig, node.config["tokenizer"]), ctx.log)
        return {"status": "done", "out": str(d.dir),
                "metrics": {"train_tokens": d.meta["train_tokens"], "val_tokens": d.meta["val_tokens"]}}

    def outputs_present(self, node: Node, out: Path) -> bool:
        return (out / "meta.json").exists()
