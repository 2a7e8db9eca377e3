"""The tokenizer stage: train (or fetch) the tokenizer of a pretraining data config, in the global cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import DataConfig, PretrainConfig, TokenizerConfig, from_dict, to_dict
from .base import Node, RunContext, Stage, node_hash


class TokenizerStage(Stage):
    kind = "tokenizer"
    config_type = TokenizerConfig

    def identity(self, pcfg: PretrainConfig) -> str:
        """The cache directory name of a trained tokenizer (already a content hash), else name@revision hashed."""
        from ...data.packed import tokenizer_dir

        tdir = tokenizer_dir(pcfg.data, pcfg.tokenizer)
        return tdir.name if tdir is not None else node_hash([pcfg.tokenizer.name, pcfg.tokenizer.revision])

    def node_id(self, identity: Any) -> str:
        return f"{self.kind}-{identity}"

    def build(self, pcfg: PretrainConfig) -> Node:
        from ...data.packed import source_label, tokenizer_dir

        tdir = tokenizer_dir(pcfg.data, pcfg.tokenizer)
        return Node(id=self.node_id(self.identity(pcfg)), kind=self.kind, deps=[], out=str(tdir) if tdir else "",
                    config={"data": to_dict(pcfg.data), "tokenizer": to_dict(pcfg.tokenizer)},
                    label=source_label(pcfg.data.source))

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from ...data.packed import prepare_tokenizer

        tok_dir = prepare_tokenizer(from_dict(DataConfig, node.config["data"]),
                                 from_dict(TokenizerConfig, node.config["tokenizer"]), ctx.log)
        return {"status": "done", "out": str(tok_dir)}

    def outputs_present(self, node: Node, out: Path) -> bool:
        return out.is_dir()
