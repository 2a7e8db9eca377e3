"""Golden node ids: the cache identities of existing studies.

The ids below were computed by the study code before the Stage refactor (issue 14). A node id names its output
directory, so a change here invalidates every user's cached runs: only change these values together with a bump
of ``plasticity.study.state.FORMAT_VERSION`` (and say so in the release note).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from plasticity.config import from_dict
from plasticity.study.plan import build_plan
from plasticity.study.spec import StudySpec, load_spec, validate_spec

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "paper"

DEFAULT_IDS = [
    "tokenizer-47499a069e1fd3a5", "data-3093716163fc",
    "pretrain-3949e6298c31", "pretrain-74d5a0c4f6ca", "pretrain-c0d8d2e35757",
    "analyze-5fa34e72caf4", "analyze-97fac4735444", "analyze-cc56d75bac82",
    "finetune-7ff0e2190ba9", "finetune-4c61b78fb8b4", "finetune-83dd67857c0d",
    "evaluate-0ee3b14c2de6", "evaluate-72e7d455ab06", "evaluate-dce01d9d1eba",
]
# (node count, sha256 of the sorted ids joined by newlines, first 16 hex digits). Issue 28 changed five of these
# configs, not the id code: FineWeb-Edu sample-100BT (one epoch, Table 4), probe sets pinned to SST-2 + AG News,
# and the 140x study on all twelve tasks without `finetune_from` (as the paper ran it).
PAPER = {
    "study-llama2-0.5b-20tpp.yaml": (322, "d70d199423ee1b2c"),
    "study-llama2-1b-20tpp.yaml": (322, "15d09af36591c7e7"),
    "study-llama2-4b-20tpp.yaml": (98, "01e91eca56c8ef91"),
    "study-olmo2-1b-140tpp-wsd.yaml": (130, "b2046b313b7c94e7"),
    "study-olmo2-1b-20tpp-ft-sweep.yaml": (438, "6938c02016b99528"),
    "study-olmo2-1b-20tpp.yaml": (162, "edc65d6ac9375067"),
    "study-olmo2-1b-20tpp-pt-sweep.yaml": (119, "68c56c00068c4b59"),  # App. E.1, added by issue 28
}
CUSTOM = {"name": "golden", "out_dir": "/tmp/golden",
          "base": {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512},
                   "data": {"source": "packaged:bbc_news", "seq_len": 32},
                   "train": {"micro_batch_size": 4, "max_steps": 20}},
          "axes": {"optim.weight_decay": [0.0, 0.1], "finetune.optim.lr": [1e-4, 1e-3]},
          "tasks": ["demo_arith", "demo_choice"], "finetune_from": [0.5, 1.0],
          "task_axes": {"demo_arith": {"n_train": [16, 32]}}, "analyze": ["rank", "norms"],
          "finetune": {"task": "demo_arith", "task_options": {"n_train": 32, "n_test": 8}},
          "evaluate": {"k": 2, "max_new_tokens": 32, "stability_tasks": ["demo_choice"]}}


@pytest.fixture(autouse=True)
def _no_local_cloze(monkeypatch):
    """Evaluate ids name the stability cloze sets, which default to the paper's where their data is local:
    pin the machine-independent answer (no local data)."""
    import plasticity.evaluate.stability as st

    monkeypatch.setattr(st, "resolve_cloze_sets", lambda tasks, data_root=None: list(tasks or ["demo_choice"]))


def digest(ids) -> tuple[int, str]:
    ids = sorted(ids)
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def test_default_study_node_ids():
    assert list(build_plan(load_spec(None)).nodes) == DEFAULT_IDS


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_study_node_ids(name):
    assert digest(build_plan(load_spec(CONFIGS / name)).nodes) == PAPER[name]


def test_paper_study_list_is_complete():
    assert sorted(p.name for p in CONFIGS.glob("study-*.yaml")) == sorted(PAPER)


def test_task_axes_fractions_and_stage_options_node_ids():
    s = from_dict(StudySpec, CUSTOM)
    validate_spec(s)
    assert digest(build_plan(s).nodes) == (54, "11c666427e3f787c")


REPRODUCTION = Path(__file__).resolve().parents[2] / "configs" / "reproduction" / "wd-sweep-20tpp.yaml"
# The reproduction study (docs/reproduction.md) is computed across sessions from its cache: its pretraining
# runs must keep these ids (seed 0 then 1; wd 0.1, 0.0, 0.3, 1.0, 3.0).
REPRODUCTION_PRETRAIN_IDS = [
    "pretrain-dbfc6c544550", "pretrain-5571ea33a0a8", "pretrain-21b975865d57", "pretrain-f424f3dabaa5",
    "pretrain-b4cac0dad3ca", "pretrain-71b8c8188125", "pretrain-ad158d21ab20", "pretrain-3b09f0ee7724",
    "pretrain-c2679361769e", "pretrain-389701a51aff",
]


@pytest.mark.skipif(not (REPRODUCTION.parents[2].parent / "shared" / "data" / "wikipedia").is_dir(),
                    reason="../shared/data/wikipedia (the reproduction's text) is absent")
def test_reproduction_pretraining_ids(monkeypatch):
    monkeypatch.chdir(REPRODUCTION.parents[2])  # its data paths are relative to the checkout
    spec = load_spec(REPRODUCTION)
    plan = build_plan(spec)
    assert [i for i in plan.nodes if i.startswith("pretrain-")] == REPRODUCTION_PRETRAIN_IDS
    assert sum(n.kind == "finetune" for n in plan.nodes.values()) == 40


def test_evaluate_precision_auto_keeps_the_ids_an_explicit_one_moves_them():
    """`evaluate.precision` came after these ids: its default is left out of the evaluate node's identity."""
    from plasticity.study.stages.evaluate import EvaluateStage

    stage = EvaluateStage()
    before = {"k": 16, "seed": 0}
    ident = stage.identity("finetune-x", before)
    assert stage.identity("finetune-x", {**before, "precision": "auto"}) == ident
    assert stage.identity("finetune-x", {**before, "precision": "bf16"}) != ident
