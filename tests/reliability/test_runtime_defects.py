"""Runtime defects of issue 15 that are not a single bad-input row (those are in test_bad_inputs.py): artifact
modes follow the umask, the run lock is taken before anything is written, a full disk during ``torch.save`` keeps
the previous checkpoint, ``analyze`` reports damaged snapshots, forged trainer state is refused without advice to
unpickle it, task options belong to their task, and the memory estimate counts parameters exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, data_path, needs_data, run_cli, tiny_overrides
from tests.reliability.test_bad_inputs import DATA, assert_one_line_exit_2, snapshot


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed tiny pretraining run (packaged data) with snapshot checkpoints, written under umask 022."""
    out = tmp_path_factory.mktemp("rt") / "run"
    r = _cli_umask(0o022, "pretrain", *tiny_overrides(out, **DATA))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _cli_umask(mask: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plasticity.cli", *args], capture_output=True, text=True,
                          timeout=600, umask=mask)


def test_artifacts_follow_the_umask(run: Path, tmp_path: Path) -> None:
    """Under umask 022 every file a run writes is 0644 (and directories 0755); under 077 nothing is readable by
    others. Before: JSON/YAML artifacts were 0600 whatever the umask (mkstemp's mode)."""
    modes = {str(p.relative_to(run)): p.stat().st_mode & 0o777 for p in run.rglob("*") if p.name != ".lock"}
    files = {k: v for k, v in modes.items() if not (run / k).is_dir()}
    assert {"config.yaml", "summary.json", "run_info.json", "param_groups.json", "final/manifest.json"} <= set(files)
    assert {k: oct(v) for k, v in files.items() if v != 0o644} == {}
    assert {k: oct(v) for k, v in modes.items() if (run / k).is_dir() and v != 0o755} == {}
    out = tmp_path / "private"
    r = _cli_umask(0o077, "pretrain", *tiny_overrides(out, **dict(DATA, **{"train.max_steps": 1})))
    assert r.returncode == 0, r.stderr[-3000:]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.stat().st_mode & 0o077} == {}


def test_lock_is_taken_before_anything_is_written(run: Path, tmp_path: Path) -> None:
    """A second --resume on a live (locked) run is refused before it writes anything: param_groups.json and
    every other file keep their bytes and mtimes. Before: param_groups.json was rewritten, then refused."""
    from filelock import FileLock

    live = tmp_path / "live"
    shutil.copytree(run, live)
    summary = json.loads((live / "summary.json").read_text())
    (live / "summary.json").write_text(json.dumps(dict(summary, status="interrupted")))
    before = {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in live.rglob("*") if p.is_file()}
    with FileLock(str(live / ".lock"), timeout=0):
        r = run_cli("pretrain", *tiny_overrides(live, **DATA), "--resume")
    assert_one_line_exit_2(r, "another plasticity process is training this run")
    after = {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in live.rglob("*") if p.is_file()}
    assert after == before


def test_disk_full_during_torch_save_keeps_previous_checkpoint(run: Path, tmp_path: Path) -> None:
    """A real full file system (a small tmpfs): torch.save raises RuntimeError, not OSError; it becomes the
    one-line CheckpointError, the previous checkpoint still verifies, and no temp directory is left."""
    from transformers import AutoModelForCausalLM

    from plasticity.errors import CheckpointError
    from plasticity.train import checkpoint_writer as ckpt

    mnt = tmp_path / "small"
    mnt.mkdir()
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    state = {"optimizer": {k: torch.randn(4096, 64) for k in range(6)}}  # ~6 MB of trainer state
    probe = tmp_path / "probe"
    ckpt.save_checkpoint(probe, model, None, state, {"step": 1})
    full = sum(f.stat().st_size for f in probe.iterdir())
    weights = (probe / "model.safetensors").stat().st_size
    size_kb = (full + weights + (full - weights) // 2) // 1024  # room for one checkpoint plus half of a second
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)], capture_output=True)
    if mount.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mount.stderr.decode().strip()[:80]}): needs root")
    try:
        target = mnt / "step_0000001"
        ckpt.save_checkpoint(target, model, None, state, {"step": 1})
        before = snapshot(target)
        with pytest.raises(CheckpointError, match="cannot write checkpoint .*the previous checkpoint is intact"):
            ckpt.save_checkpoint(target, model, None, state, {"step": 2})
        assert snapshot(target) == before and ckpt.verify_checkpoint(target) is None
        assert sorted(p.name for p in mnt.iterdir()) == ["step_0000001"]  # no temp dir left behind
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)  # lazy: torch may still hold the file


def test_rank_reports_damaged_snapshots(run: Path, tmp_path: Path) -> None:
    """`analyze --what rank` on a run with a truncated snapshot and one whose bytes differ from its manifest
    skips both, says so in the log and lists them (with the reason) in rank.json. Before: the truncated one
    vanished silently and the tampered one was used."""
    r2 = tmp_path / "run"
    shutil.copytree(run, r2)
    snaps = sorted((r2 / "checkpoints").glob("step_*"))
    assert len(snaps) >= 3, snaps
    trunc, tampered = snaps[0] / "model.safetensors", snaps[1] / "model.safetensors"
    trunc.write_bytes(trunc.read_bytes()[:-64])
    raw = bytearray(tampered.read_bytes())
    raw[-10] ^= 0xFF
    tampered.write_bytes(bytes(raw))
    r = run_cli("analyze", str(r2), "--what", "rank")
    assert r.returncode == 0, r.stderr[-3000:]
    rank = json.loads((r2 / "analysis" / "rank.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in rank["skipped"]}
    assert set(skipped) == {snaps[0].name, snaps[1].name}
    assert "truncated" in skipped[snaps[0].name] and "sha256" in skipped[snaps[1].name]
    used = {Path(c["path"]).name for c in rank["checkpoints"]}
    assert not used & set(skipped) and "final" in used
    assert sum(f"rank: skipping {d}" in r.stderr for d in snaps[:2]) == 2, r.stderr


def test_forged_trainer_state_message_never_suggests_weights_only_false(tmp_path: Path) -> None:
    import pickle

    from plasticity.errors import CheckpointError
    from plasticity.train.checkpoint_writer import TRAINER_STATE, load_trainer_state

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(tmp_path / TRAINER_STATE, "wb") as f:
        pickle.dump({"x": Evil()}, f)  # protocol 4+: torch warns about it; the refusal is one line, no warning
    with warnings.catch_warnings(record=True) as seen, pytest.raises(CheckpointError) as e:
        warnings.simplefilter("always")
        load_trainer_state(tmp_path)
    assert not seen, [str(w.message) for w in seen]
    msg = str(e.value)
    assert "\n" not in msg and "weights_only" not in msg and "refused to unpickle" in msg, msg
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------- task options


def test_task_options_belong_to_their_task() -> None:
    """configs/finetune-demo.yaml with task=gsm8k (the README's command): the demo task's options do not reach
    gsm8k; `task_options=null` clears them; an old flat config keeps working for its own task."""
    from plasticity.config import FinetuneConfig, load_config
    from plasticity.tasks.registry import get_task

    demo = REPO / "configs" / "finetune-demo.yaml"
    cfg = load_config(FinetuneConfig, demo, ["init_from=x", "task=gsm8k"])
    assert cfg.options_for_task() == {}
    get_task(cfg.task, **cfg.options_for_task())  # before: "task gsm8k has no option 'n_test', 'n_train'"
    assert load_config(FinetuneConfig, demo, ["init_from=x"]).options_for_task() == {"n_train": 512, "n_test": 64}
    assert load_config(FinetuneConfig, demo, ["init_from=x", "task_options=null"]).task_options == {}
    flat = {"task": "demo_arith", "task_options": {"n_train": 32}}
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"flat-{os.getpid()}.yaml"
    path.write_text(json.dumps(flat))
    try:
        assert load_config(FinetuneConfig, path, ["init_from=x"]).options_for_task() == {"n_train": 32}
        assert load_config(FinetuneConfig, path, ["init_from=x", "task=gsm8k"]).options_for_task() == {}
        over = load_config(FinetuneConfig, path, ["init_from=x", "task=demo_choice", "task_options.n_train=8"])
        assert over.options_for_task() == {"n_train": 8}  # given on the command line: for the chosen task
    finally:
        path.unlink()


@needs_data("gsm8k", "train.jsonl")
def test_readme_finetune_gsm8k_command_runs(run: Path, tmp_path: Path) -> None:
    """`plasticity finetune configs/finetune-demo.yaml init_from=RUN task=gsm8k` (README) on the local GSM8K."""
    out = tmp_path / "ft"
    r = run_cli("finetune", str(REPO / "configs" / "finetune-demo.yaml"), f"init_from={run}", "task=gsm8k",
                f"out_dir={out}", f"data_root={data_path()}", "max_examples=16", "train.max_steps=1",
                "train.micro_batch_size=2", "train.grad_accum=1", "train.threads=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["task"] == "gsm8k"


# ------------------------------------------------------------------------------------------- memory estimate


def test_parameter_count_without_building_matches_the_model() -> None:
    """The memory check counts parameters analytically (an absurd shape is never built); it must agree with the
    real model for every preset (meta device: no memory)."""
    from dataclasses import replace

    from plasticity.models import PRESETS, build_model, count_params
    from plasticity.train import memory as mem

    for name, shape in PRESETS.items():
        s = shape if shape.vocab_size else replace(shape, vocab_size=512)
        assert mem.shape_of(s).params == count_params(build_model(s, device="meta")).total, name


def test_memory_estimate_covers_a_real_run_and_the_override_goes_on() -> None:
    """The estimate of a tiny run is far below this machine's memory (not refused); one above it is refused
    naming the keys, and `train.allow_large_memory` turns the refusal into a warning."""
    from plasticity.config import ConfigError
    from plasticity.train import memory as mem

    shape = mem.Shape(params=700_000, hidden=64, ffn=176, layers=4, kv_dim=32, vocab=2048)
    small = mem.estimate(shape, 16, 128)
    assert small.total < mem.available_memory("cpu")[0]
    mem.check_memory(small, "cpu", False, "train.micro_batch_size", "model")
    huge = mem.estimate(shape, 10**8, 128)
    with pytest.raises(ConfigError, match="train.micro_batch_size.*allow_large_memory"):
        mem.check_memory(huge, "cpu", False, "train.micro_batch_size", "model")
    logged: list[str] = []
    mem.check_memory(huge, "cpu", True, "train.micro_batch_size", "model", logged.append)
    assert len(logged) == 1 and logged[0].startswith("warning: train.micro_batch_size")
