"""Shared fixtures: the local data root, a per-session token cache, tiny pretraining configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import cli_fork

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("PLASTICITY_DATA_ROOT", REPO.parent / "shared" / "data"))

torch.set_num_threads(1)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these)")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]  # parametrize a test over both paths; cuda skips on CPU CI


def data_path(*parts: str) -> Path:
    return DATA_ROOT.joinpath(*parts)


def needs_data(*parts: str) -> pytest.MarkDecorator:
    """Mark an extra test that needs ../shared/data (or the given file under it): skipped, with the reason,
    when absent (see :func:`pytest_runtest_setup`); ``-m "not needs_data"`` deselects it."""
    return pytest.mark.needs_data(*parts)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_data"):
        p = data_path(*mark.args)
        if not p.exists():
            pytest.skip(f"local dataset not found: {p} (needs ../shared/data)")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("plasticity_cache")
    os.environ["PLASTICITY_CACHE"] = str(d)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return d


def tiny_overrides(out_dir: Path, **extra) -> list[str]:
    """Overrides for a seconds-long pretraining run on the packaged BBC News text (no ../shared/data needed)."""
    base = {
        "out_dir": str(out_dir),
        "data.source": "packaged:bbc_news",
        "data.max_documents": 150,
        "tokenizer.train_documents": 150,
        "data.seq_len": 32,
        "tokenizer.vocab_size": 512,
        "model.preset": "llama2-tiny",
        "train.micro_batch_size": 4,
        "train.max_steps": 20,
        "train.log_every": 5,
        "train.eval_sequences": 8,
        "train.eval_max_sequences": 16,
        "train.threads": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``plasticity`` CLI in its own process: forked from a server with torch and transformers
    already imported (tests/cli_fork.py) when the environment allows, else a new interpreter."""
    e = dict(os.environ, **(env or {}))
    if cli_fork.usable(e):
        return cli_fork.run(list(args), e, timeout)
    return subprocess.run([sys.executable, "-m", "plasticity.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


# ------------------------------------------------------------------------------------------- shared runs
# Pretrained once per session and shared read-only (tests that change a run copy it first): the test phase
# pretrains each configuration once instead of once per module.

TINY_RUN = {"model.max_seq_len": 512}  # tiny_overrides + a context long enough for the fine-tuning tests
WD_RUN = {"data.max_documents": 200, "tokenizer.train_documents": 200, "train.max_steps": 30, "train.log_every": 10,
          "optim.lr": 0.01}
WDS = (0.0, 3.0)


def _pretrained(out: Path, **extra) -> Path:
    r = run_cli("pretrain", *tiny_overrides(out, **extra))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A completed 20-step llama2-tiny run (tiny_overrides + TINY_RUN): checkpoints at steps 5, 10, 15."""
    return _pretrained(tmp_path_factory.mktemp("tiny_run") / "run", **TINY_RUN)


@pytest.fixture(scope="session")
def wd_runs(tmp_path_factory) -> dict[float, Path]:
    """Two completed 30-step runs (tiny_overrides + WD_RUN) with weight decay 0 and 3, lr 0.01."""
    root = tmp_path_factory.mktemp("wd_runs")
    return {wd: _pretrained(root / f"wd{wd}", **WD_RUN, **{"optim.weight_decay": wd}) for wd in WDS}
