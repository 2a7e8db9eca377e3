"""Study stages, one per node kind, registered here in dependency order (adding a kind: one module + one line)."""

from __future__ import annotations

from .analyze import AnalyzeStage
from .base import Node, RunContext, Stage, node_hash
from .checkpoint import CheckpointStage
from .data import DataStage
from .evaluate import EvaluateStage
from .finetune import FinetuneStage
from .pretrain import PretrainStage
from .tokenizer import TokenizerStage

STAGES: dict[str, Stage] = {s.kind: s for s in (TokenizerStage(), DataStage(), PretrainStage(), CheckpointStage(),
                                                 AnalyzeStage(), FinetuneStage(), EvaluateStage())}
KINDS = tuple(STAGES)

__all__ = ["KINDS", "STAGES", "Node", "RunContext", "Stage", "node_hash"]
