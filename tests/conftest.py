"""Shared fixtures: the local data root, a per-session token cache, tiny pretraining configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from filelock import FileLock

from tests import cli_fork

REPO = Path(__file__).resolve().parents[1]
# The local datasets of the extra (`needs_data`) tests: $PLASTICITY_DATA_ROOT, which scripts/test.sh sets to
# ../shared/data beside the checkout when that folder exists; a bare `pytest` does the same here. The product
# itself never looks there (plasticity.tasks.data_root).
if not os.environ.get("PLASTICITY_DATA_ROOT") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["PLASTICITY_DATA_ROOT"] = str(REPO.parent / "shared" / "data")
DATA_ROOT = Path(os.environ.get("PLASTICITY_DATA_ROOT") or REPO.parent / "shared" / "data")

torch.set_num_threads(1)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # scripts/test.sh runs one xdist worker per CPU: the CLI processes a test starts (forked from a server that
    # imports torch with this environment, or new interpreters) take one thread too. Two-thread OpenMP regions
    # on an oversubscribed CPU wait for each other's descheduled thread (a tiny `evaluate`: 28 s -> 11 s).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these)")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]  # parametrize a test over both paths; cuda skips on CPU CI


def data_path(*parts: str) -> Path:
    return DATA_ROOT.joinpath(*parts)


def needs_data(*parts: str) -> pytest.MarkDecorator:
    """Mark an extra test that needs the local data root (or the given file under it): skipped, with the reason,
    when absent (see :func:`pytest_runtest_setup`); ``-m "not needs_data"`` deselects it."""
    return pytest.mark.needs_data(*parts)


# The longest files (measured, 2 cores) run first: pytest-xdist (--dist loadfile, scripts/test.sh) hands out one
# file at a time, and a long file started last keeps one worker busy while the others have nothing left.
LONG_FILES_FIRST = ("tests/reliability/test_kill_harness.py", "tests/study/test_study_e2e.py",
                    "tests/distributed/test_torchrun.py", "tests/study/test_executors.py",
                    "tests/study/test_study_fidelity.py", "tests/study/test_checkpoints_study.py",
                    "tests/reliability/test_runtime_defects.py", "tests/report/test_report.py",
                    "tests/train/test_finetune_e2e.py", "tests/train/test_pretrain_e2e.py",
                    "tests/project/test_packaging.py", "tests/test_api.py",
                    "tests/study/test_tracking.py", "tests/analysis/test_families.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {f: i for i, f in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable within a file


@pytest.fixture(autouse=True)
def _restore_environ():
    """Every test leaves os.environ as it found it: a variable a library sets in-process (Ray's init sets
    RAY_CLIENT_MODE) made every later `run_cli` fall back to a new interpreter (tests/cli_fork.py::usable)."""
    saved = dict(os.environ)
    yield
    for k in set(os.environ) - set(saved) - {"PYTEST_CURRENT_TEST"}:  # pytest's own, set per phase
        del os.environ[k]
    for k, v in saved.items():
        if k != "PYTEST_CURRENT_TEST" and os.environ.get(k) != v:
            os.environ[k] = v


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_data"):
        p = data_path(*mark.args)
        if not p.exists():
            pytest.skip(f"local dataset not found: {p} (set PLASTICITY_DATA_ROOT; scripts/test.sh uses "
                        "../shared/data when it exists)")


def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of this test session that every pytest-xdist worker sees (its parent basetemp; without
    xdist, the session's own basetemp)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``session_dir/name``, built by ``build(dir)`` in whichever worker asks first (the others wait on a file
    lock and reuse it): an expensive session fixture is built once per test session, not once per worker."""
    root = session_dir(tmp_path_factory) / name
    with FileLock(f"{root}.lock"):
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build(root)
            (root / ".built").touch()
    return root


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """One token/tokenizer cache for the session, shared by the xdist workers (its writes hold file locks)."""
    d = session_dir(tmp_path_factory) / "plasticity_cache"
    d.mkdir(exist_ok=True)
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


def _pretrain(out: Path, **extra) -> None:
    r = run_cli("pretrain", *tiny_overrides(out, **extra))
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A completed 20-step llama2-tiny run (tiny_overrides + TINY_RUN): checkpoints at steps 5, 10, 15."""
    return build_once(tmp_path_factory, "tiny_run", lambda root: _pretrain(root / "run", **TINY_RUN)) / "run"


@pytest.fixture(scope="session")
def wd_runs(tmp_path_factory) -> dict[float, Path]:
    """Two completed 30-step runs (tiny_overrides + WD_RUN) with weight decay 0 and 3, lr 0.01."""
    def build(root: Path) -> None:
        for wd in WDS:
            _pretrain(root / f"wd{wd}", **WD_RUN, **{"optim.weight_decay": wd})

    root = build_once(tmp_path_factory, "wd_runs", build)
    return {wd: root / f"wd{wd}" for wd in WDS}


# ------------------------------------------------------------------------------------------ kill-harness tally
# Here, not in tests/reliability/conftest.py: the pytest-xdist controller loads only this conftest, and sees the
# kill points' records only on the reports its workers send (tests/reliability/conftest.py::kill_records).

_KILL_RECORDS: list[dict[str, Any]] = []


def bigger_tokenizer_checkpoint(run: Path, dst: Path) -> Path:
    """`dst`: a copy of `run`'s final model as a plain HF directory (no manifest) whose tokenizer has 600 tokens
    more than the model's embedding: the vocab mismatch every command must refuse."""
    from transformers import AutoTokenizer

    shutil.copytree(run / "final", dst)
    (dst / "manifest.json").unlink()  # a plain HF directory: no manifest to contradict the new tokenizer
    tok = AutoTokenizer.from_pretrained(dst)
    tok.add_tokens([f"<extra_{i}>" for i in range(600)])
    tok.save_pretrained(dst)
    return dst


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _KILL_RECORDS.extend(v for k, v in report.user_properties if k == "killpoint")


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    records = _KILL_RECORDS
    if not records:
        return
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    identical = sum(r["identical"] for r in records)
    parts = ", ".join(f"{k} {sum(r['identical'] for r in v)}/{len(v)}" for k, v in sorted(by_kind.items()))
    no_progress = sum(r["kills"][0]["no_progress"] for r in records)
    kills = sum(len(r["kills"]) for r in records)
    terminalreporter.write_line(
        f"kill harness: {len(records)} kill points ({kills} SIGKILLs, {no_progress} before anything was written), "
        f"{identical} identical to the uninterrupted run ({parts})")
    landed: dict[str, int] = {}
    for r in records:
        for k in r["kills"]:
            landed[k["landed"]] = landed.get(k["landed"], 0) + 1
    terminalreporter.write_line(f"kill harness: kills landed in {json.dumps(landed, sort_keys=True)}")
