"""`plasticity study --dry-run` states each pretraining run's epochs over its data (paper Tables 4-5: 1 epoch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticity.config import from_dict
from plasticity.study.epochs import epoch_lines
from plasticity.study.plan import build_plan
from plasticity.study.spec import StudySpec, load_spec, validate_spec
from plasticity.study.state import write_marker
from tests.conftest import REPO, run_cli

PAPER = REPO / "configs" / "paper"


@pytest.mark.parametrize("name", sorted(p.name for p in PAPER.glob("study-*.yaml")))
def test_paper_studies_pretrain_a_single_epoch(name):
    lines = epoch_lines(build_plan(load_spec(PAPER / name)))
    assert lines and all("a single pass, no token repeated" in line for line in lines), lines


def test_dry_run_prints_epochs_of_a_paper_config():
    r = run_cli("study", str(PAPER / "study-llama2-1b-20tpp.yaml"), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "10 pretraining runs (20,012,072,960 tokens each): ~0.20 epochs of data-" in r.stdout
    assert "(~99.9B training tokens, GPT-2 tokens, dataset card): a single pass" in r.stdout


def test_epochs_are_exact_once_the_data_is_tokenized(tmp_path: Path):
    spec = from_dict(StudySpec, {"name": "ep", "out_dir": str(tmp_path),
                                 "base": {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512},
                                          "data": {"source": "packaged:bbc_news", "seq_len": 32},
                                          "train": {"micro_batch_size": 4, "max_steps": 20}},
                                 "axes": {"optim.weight_decay": [0.0, 0.1]}})
    validate_spec(spec)
    plan = build_plan(spec)
    assert epoch_lines(plan) == ["2 pretraining runs (2,560 tokens each): epochs over "
                                 f"{_data(plan)} unknown until the data stage has tokenized packaged:bbc_news"]
    data = plan.nodes[_data(plan)]
    write_marker(plan.root, data, "done", out="x", metrics={"train_tokens": 1024, "val_tokens": 64})
    assert epoch_lines(plan) == [f"2 pretraining runs (2,560 tokens each): 2.50 epochs of {data.id} (1,024 training "
                                 "tokens, tokenized): the data repeats 2.50 times (the paper: 1 epoch)"]


def _data(plan) -> str:
    return next(i for i, n in plan.nodes.items() if n.kind == "data")
