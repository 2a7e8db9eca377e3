"""The tokenizer stage: train (or fetch) the tokenizer of a pretraining data config, in the global cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticity.config import DataConfig, PretrainConfig, TokenizerConfig, from_dict, to_dict
from plasticity.study.stages.base import GridPoint, Node, RunContext, Stage, StudySpec, Upstream, node_hash


class TokenizerStage(Stage):
    """Its config is the ``data`` and ``tokenizer`` sections of the pretraining config it feeds (`config_of`)."""

    kind = "tokenizer"
    config_type = PretrainConfig
    config_of = "pretrain"  # the stage whose (already built) config holds this one's
    provides = "tokenizer"
    in_tracker = False

    def identity(self, pcfg: PretrainConfig) -> str:
        """The cache directory name of a trained tokenizer (already a content hash), else name@revision hashed."""
        from plasticity.data.packed import tokenizer_dir

        tdir = tokenizer_dir(pcfg.data, pcfg.tokenizer)
        return tdir.name if tdir is not None else node_hash([pcfg.tokenizer.name, pcfg.tokenizer.revision])

    def node_id(self, identity: Any) -> str:
        return f"{self.kind}-{identity}"

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        from plasticity.data.packed import source_label, tokenizer_dir

        pcfg = point.config(self.config_of)
        tdir = tokenizer_dir(pcfg.data, pcfg.tokenizer)
        return Node(id=self.node_id(self.identity(pcfg)), kind=self.kind, deps=[], out=str(tdir) if tdir else "",
                    config={"data": to_dict(pcfg.data), "tokenizer": to_dict(pcfg.tokenizer)},
                    label=source_label(pcfg.data.source))

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from plasticity.data.packed import prepare_tokenizer

        tok_dir = prepare_tokenizer(from_dict(DataConfig, node.config["data"]),
                                    from_dict(TokenizerConfig, node.config["tokenizer"]), ctx.log)
        return {"status": "done", "out": str(tok_dir)}

    def outputs_present(self, node: Node, out: Path) -> bool:
        return out.is_dir()
