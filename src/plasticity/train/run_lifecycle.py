"""Run-directory lifecycle shared by pretraining and fine-tuning: open (fresh / resume / refuse), write
provenance, resume from the newest valid checkpoint, train, and record the outcome in ``summary.json``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from plasticity.checkpoints import verify_checkpoint
from plasticity.config import TrainConfig, read_yaml
from plasticity.errors import DivergenceError, InterruptedRun, UserError
from plasticity.files import read_json, write_json, write_yaml
from plasticity.train import checkpoint_writer as ckpt
from plasticity.train import distributed as pdist
from plasticity.train.loop import LoopState, TrainJob, restore, train, truncate_metrics
from plasticity.train.master_weights import check_master_weights

IGNORED_ON_RESUME = {("out_dir",), ("train", "threads"), ("train", "parallel"),  # how fast, not what
                     ("train", "allow_large_memory"), ("train", "activation_checkpointing"),
                     ("train", "tracker"),  # where numbers are mirrored
                     ("data", "num_workers"), ("data", "shard_mb")}

# keys added after runs were written: a config.yaml without one reads as this value (resume is not refused)
ADDED_KEYS: dict[tuple[str, ...], Any] = {("train", "master_weights"): "auto"}


def _config_diffs(old: dict[str, Any], new: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        path = (*prefix, k)
        if path in IGNORED_ON_RESUME:
            continue
        a, b = old.get(k, ADDED_KEYS.get(path)), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_diffs(a, b, path)
        elif a != b:
            diffs.append(".".join(path))
    return diffs


RUN_MARKER = ".plasticity-run"  # in every run directory we made: what is ours to write and delete in


def is_plasticity_run(run_dir: Path) -> bool:
    """Whether `run_dir` may be trained into: missing, empty (a `.lock` of ours aside), marked as ours, or a run of
    an earlier plasticity (``config.yaml`` beside the ``.lock`` it took before writing it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return True
    names = {p.name for p in run_dir.iterdir()}
    return names <= {".lock", RUN_MARKER} or RUN_MARKER in names or {"config.yaml", ".lock"} <= names


def check_ours(run_dir: Path, what: str = "out_dir") -> None:
    """Refuse (one line) an existing non-empty folder that is not one of our runs: training would replace its
    ``final/`` and ``checkpoints/`` and append to its ``metrics.jsonl``."""
    if not is_plasticity_run(run_dir):
        raise UserError(f"{what}: {run_dir} is a non-empty folder that is not a plasticity run (no {RUN_MARKER}); "
                        "nothing was written: give a new or empty folder")


_LOCKS: dict[str, Any] = {}  # run dir -> the FileLock this process holds on it


def lock_run_dir(run_dir: Path) -> None:
    """Take the exclusive lock of `run_dir` (``<run>/.lock``; idempotent in this process). An OS file lock
    (flock), released by the kernel when its holder dies, so it is never stale."""
    from filelock import FileLock, Timeout

    key = os.path.realpath(run_dir)  # never raises (a symlink loop: RuntimeError from resolve)
    if key in _LOCKS:
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(run_dir) / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{run_dir}: another plasticity process is training this run") from None
    _LOCKS[key] = lock


def unlock_run_dir(run_dir: Path) -> None:
    lock = _LOCKS.pop(os.path.realpath(run_dir), None)
    if lock is not None:
        lock.release()


def open_run_dir(run_dir: Path, cfg_dict: dict[str, Any], resume: bool, log=print) -> dict[str, Any] | None:
    """Prepare `run_dir`. Returns the existing summary if the run already completed (resume), else None.
    Refuses to reuse a directory without --resume, or to resume with a different config. Takes the run lock
    before writing anything (released by `unlock_run_dir`, or by `execute` when training ends)."""
    summary_path = run_dir / "summary.json"
    has_run = (run_dir / "config.yaml").exists()
    completed = summary_path.exists() and read_json(summary_path).get("status") == "completed"
    if completed and resume and (reason := verify_checkpoint(run_dir / "final", hashes=False)) is not None:
        # one state for every command: a run without its final model is not completed (analyze, finetune and
        # the study say so too); --resume trains again from the newest checkpoint (deterministic: same weights)
        log(f"{run_dir}: summary.json says completed but final/ is unusable ({reason}); training again from the "
            "newest checkpoint")
        completed = False
    check_ours(run_dir)
    if has_run and not resume:
        what = "a completed run" if completed else "a run"
        hint = "" if completed else "pass --resume to continue it or "
        raise UserError(f"{run_dir}: {what} is already here; {hint}use another out_dir")
    if has_run:
        lock_run_dir(run_dir)
        diffs = _config_diffs(read_yaml(run_dir / "config.yaml"), cfg_dict)
        if diffs:
            raise UserError(f"{run_dir}: config differs from the run being resumed ({', '.join(diffs[:5])}); "
                            "use another out_dir or the same config")
        if completed:
            log(f"{run_dir}: already completed")
            ckpt.remove_stale_temps(run_dir)  # a kill after summary.json: tidy up (a completed run has no writer)
            ckpt.prune_resume_only(run_dir / "checkpoints")
            return read_json(summary_path)
    lock_run_dir(run_dir)
    if not (run_dir / RUN_MARKER).exists():
        (run_dir / RUN_MARKER).write_text("a plasticity run directory: files here are written and replaced by "
                                          "plasticity\n")
    if not has_run:
        write_yaml(run_dir / "config.yaml", cfg_dict)
    return None


def wrap_for_training(model: torch.nn.Module, dist: pdist.Dist, train_cfg: TrainConfig, precision: str,
                      log=print) -> tuple[torch.nn.Module, str, bool]:
    """(module to run forward/backward through, parallel strategy, master weights on) for a run, before its
    optimizer is built (FSDP2 swaps the parameters). `train.master_weights` is resolved with the strategy
    (`check_master_weights`): FSDP2 takes bf16 weights as its mixed-precision policy, DDP cannot take them."""
    device = next(model.parameters()).device
    master, why = check_master_weights(train_cfg, device, precision, model)  # type: ignore[misc]  # model given: never None
    if master or (precision == "bf16" and device.type == "cuda"):
        log(f"master weights {'on' if master else 'off'} ({why})")
    net, parallel = pdist.wrap_model(model, dist, train_cfg.parallel, train_cfg.activation_checkpointing,
                                     bf16_params=master)  # used by FSDP2 only
    return net, parallel, master


def execute(job: TrainJob, resume: bool, base_summary: dict[str, Any], log=print) -> dict[str, Any]:
    """Resume if asked (newest fully verified checkpoint), train, write ``summary.json`` with the outcome.
    Holds an exclusive lock on the run directory: a second process on the same run exits with a clear error.
    The lock is an OS file lock (flock), released by the kernel when its holder dies, so it is never stale.
    Under torchrun rank 0 holds it for the whole job."""
    pdist.on_main(lambda: lock_run_dir(job.run_dir), job.dist)
    try:
        return _execute(job, resume, base_summary, log)
    finally:
        if job.dist.is_main:
            unlock_run_dir(job.run_dir)


def _execute(job: TrainJob, resume: bool, base_summary: dict[str, Any], log=print) -> dict[str, Any]:
    run_dir = job.run_dir
    main = job.dist.is_main
    state = LoopState()
    if main:  # we hold the run lock: temp dirs here are leftovers of killed writes (a full checkpoint each)
        ckpt.remove_stale_temps(run_dir)
    found = pdist.on_main(lambda: ckpt.latest_resumable(run_dir / "checkpoints", log=log), job.dist) if resume else None
    if found:
        state = restore(job, found[1])
        log(f"resumed from {found[1]} (step {state.step})")
    elif main:
        if resume:
            log(f"{run_dir}: no valid checkpoint to resume from: training from step 0")
        truncate_metrics(run_dir / "metrics.jsonl", 0, log)
    trackers = _open_trackers(job, str(base_summary.get("kind", "train")), state.step, log) if main else None
    try:
        return _train(job, state, base_summary, trackers)
    finally:
        if trackers is not None:
            trackers.close()


def _open_trackers(job: TrainJob, kind: str, start_step: int, log=print):
    """The run's trackers (``train.tracker`` and a study's ``tracker:``), or None; the records of a resumed run
    up to `start_step` were mirrored before."""
    from plasticity.tracking import backend_names, open_run

    trackers = open_run(backend_names(job.cfg.tracker), job.run_dir, kind, read_yaml(job.run_dir / "config.yaml"),
                        start_step, warn=log)
    if trackers is not None:
        job.on_record = trackers.log_record
    return trackers


def _train(job: TrainJob, state: LoopState, base_summary: dict[str, Any], trackers) -> dict[str, Any]:
    run_dir, main = job.run_dir, job.dist.is_main
    summary_path = run_dir / "summary.json"
    t0 = time.time()
    try:
        state = train(job, state)
    except DivergenceError as e:
        if main:
            write_json(summary_path, dict(base_summary, status="diverged", reason=str(e), diverged_step=e.step,
                                          diverged_what=e.what, diverged_value=str(e.value), steps=e.step,
                                          wall_time=time.time() - t0))
        raise
    except InterruptedRun as e:
        if main:
            write_json(summary_path, dict(base_summary, status="interrupted", steps=e.step,
                                          wall_time=time.time() - t0))
        raise
    summary = dict(base_summary, status="completed", steps=state.step, tokens_seen=state.tokens,
                   final_train_loss=state.last_loss, final_val_loss=state.last_val_loss,
                   train_time=state.elapsed, wall_time=time.time() - t0, skipped_batches=state.skipped_batches)
    if main:
        write_json(summary_path, summary)
        ckpt.prune_resume_only(run_dir / "checkpoints")  # snapshots stay for the analyses
    if trackers is not None:
        trackers.summary(summary)
    return summary
