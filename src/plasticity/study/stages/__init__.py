"""Study stages, one per node kind, registered here in dependency order (adding a kind: one module + one line),
and what the planner, the spec and the results table ask the registry: who owns an axis key, which stage
provides an input, which stages are built on an output."""

from __future__ import annotations

from plasticity.study.stages.analyze import AnalyzeStage
from plasticity.study.stages.base import GridPoint, Node, RunContext, Stage, Upstream, node_hash
from plasticity.study.stages.checkpoint import CheckpointStage
from plasticity.study.stages.data import DataStage
from plasticity.study.stages.evaluate import EvaluateStage
from plasticity.study.stages.finetune import FinetuneStage
from plasticity.study.stages.pretrain import PretrainStage
from plasticity.study.stages.tokenizer import TokenizerStage

STAGES: dict[str, Stage] = {s.kind: s for s in (TokenizerStage(), DataStage(), PretrainStage(), CheckpointStage(),
                                                 AnalyzeStage(), FinetuneStage(), EvaluateStage())}
KINDS = tuple(STAGES)


def stage(kind: str) -> Stage:
    """The registered stage of node kind `kind`."""
    return STAGES[kind]


def axis_owner(axis: str) -> tuple[Stage, str]:
    """(stage, key within its config) of an axis key: the stage whose prefix or alias matches, else the stage
    that owns unprefixed keys."""
    for s in STAGES.values():
        key = s.axis_key(axis)
        if key is not None:
            return s, key
    fallback = next(s for s in STAGES.values() if s.owns_unprefixed_axes)
    return fallback, axis


def providers(provides: str) -> list[Stage]:
    """The stages that provide `provides` (a model: pretraining or an existing checkpoint)."""
    return [s for s in STAGES.values() if s.provides == provides]


def inputs_of(s: Stage) -> list[Stage]:
    """The stages `s` is always built on, first one first, up to an input several stages provide (pretrain:
    tokenizer, data; evaluate: finetune, whose model is a row's)."""
    chain: list[Stage] = []
    while s.consumes is not None and len(found := providers(s.consumes)) == 1:
        s = found[0]
        chain.insert(0, s)
    return chain


def built_on(provides: str) -> list[Stage]:
    """The stages built directly on what some stage provides, in registry order."""
    return [s for s in STAGES.values() if s.consumes == provides]


def downstream_of(s: Stage) -> list[Stage]:
    """Every stage built (transitively) on `s`'s output."""
    out: list[Stage] = []
    for d in built_on(s.provides):
        out += [d, *downstream_of(d)]
    return out


__all__ = ["KINDS", "STAGES", "Node", "GridPoint", "RunContext", "Stage", "Upstream", "axis_owner", "built_on",
           "downstream_of", "inputs_of", "node_hash", "providers", "stage"]
