"""Run one study node in a worker process (local pool or Ray task): take its lock, run the stage, write its
marker. A node that fails (bad input, divergence, a crash) is recorded with its reason; an interrupted node
(SIGTERM/SIGINT) records nothing, so the next study run resumes it from its newest checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import FinetuneConfig, PretrainConfig, from_dict, validate
from ..errors import DivergenceError, UserError
from ..io import write_yaml


def die_with_parent() -> None:
    """Pool initializer: a worker is killed when the study process dies (Linux), so a killed study never
    leaves workers training in the background (and holding node locks)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_node(node: dict[str, Any], root: str, threads: int, log_path: str) -> dict[str, Any]:
    """Run a node (a `plan.Node` as a dict); returns {status: done|failed|interrupted|busy, ...}."""
    import torch
    from filelock import FileLock, Timeout
    from transformers.utils import logging as hf_logging

    from .plan import Node
    from .state import clear_marker, write_marker

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    n = Node(**node)
    rootp = Path(root)
    (rootp / "nodes").mkdir(parents=True, exist_ok=True)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(rootp / "nodes" / f"{n.id}.lock"), timeout=5)
    try:
        lock.acquire()
    except Timeout:
        return {"status": "busy", "reason": f"another plasticity process is running {n.id}"}
    t0 = time.time()
    with lock, open(log_path, "a", encoding="utf-8") as f:
        def log(msg: str) -> None:
            f.write(msg + "\n")
            f.flush()

        from ..errors import InterruptedRun

        try:
            result = RUNNERS[n.kind](n, log, threads, log_path)
        except InterruptedRun as e:
            result = {"status": "interrupted", "reason": f"{e} (resumes on the next run)"}
        except (UserError, DivergenceError) as e:
            result = {"status": "failed", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 - a failed node is recorded; the other nodes go on
            result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.time() - t0, 2)
        if result["status"] == "done":
            write_marker(rootp, n, **result)
        elif result["status"] == "failed":
            log(f"{n.id} failed: {result['reason']}")
            write_marker(rootp, n, **result)
        else:
            clear_marker(rootp, n.id)
        return result


def _tokenizer(n, log, threads, log_path) -> dict[str, Any]:
    from ..config import DataConfig, TokenizerConfig
    from ..data.packed import prepare_tokenizer

    tok_dir, _ = prepare_tokenizer(from_dict(DataConfig, n.config["data"]),
                                   from_dict(TokenizerConfig, n.config["tokenizer"]), log)
    return {"status": "done", "out": str(tok_dir)}


def _data(n, log, threads, log_path) -> dict[str, Any]:
    from ..config import DataConfig, TokenizerConfig
    from ..data.packed import prepare_data

    d = prepare_data(from_dict(DataConfig, n.config["data"]), from_dict(TokenizerConfig, n.config["tokenizer"]), log)
    return {"status": "done", "out": str(d.train_bin.parent),
            "metrics": {"train_tokens": d.meta["train_tokens"], "val_tokens": d.meta["val_tokens"]}}


def _run_summary(summary: dict[str, Any], out: str, metric: str) -> dict[str, Any]:
    status = summary.get("status")
    if status == "completed":
        return {"status": "done", "out": out, "metrics": {metric: summary.get(metric)}}
    if status == "interrupted":
        return {"status": "interrupted", "reason": "interrupted by a signal (resumes on the next run)"}
    return {"status": "failed", "reason": str(summary.get("reason") or status)}


def _pretrain(n, log, threads, log_path) -> dict[str, Any]:
    cfg = from_dict(PretrainConfig, n.config)
    validate(cfg)
    resume = (Path(cfg.out_dir) / "config.yaml").exists()
    if n.nproc > 1:
        return _run_summary(_torchrun_pretrain(n, resume, threads, log_path), cfg.out_dir, "final_val_loss")
    from ..train.pretrain import run_pretrain

    return _run_summary(run_pretrain(cfg, resume=resume, log=log), cfg.out_dir, "final_val_loss")


def _torchrun_pretrain(n, resume: bool, threads: int, log_path: str) -> dict[str, Any]:
    """Pretrain one node with `nproc` processes (DDP / FSDP2) through torchrun; its output goes to the log."""
    cfg_path = Path(n.out).parent / f"{n.id}.torchrun.yaml"
    write_yaml(cfg_path, n.config)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n.nproc}",
           "-m", "plasticity.cli", "pretrain", str(cfg_path)] + (["--resume"] if resume else [])
    with open(log_path, "a", encoding="utf-8") as f:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    s = Path(n.out) / "summary.json"
    if s.exists():
        return json.loads(s.read_text())
    return {"status": "failed", "reason": f"torchrun exited with code {rc} (see {log_path})"}


def _analyze(n, log, threads, log_path) -> dict[str, Any]:
    from ..analysis.run import run_analyze

    run_analyze(n.config["run"], what=set(n.config["what"]), log=log)
    metrics = {}
    norms = Path(n.out) / "norms.json"
    if norms.exists():
        metrics["weight_norm"] = json.loads(norms.read_text()).get("total_norm")
    return {"status": "done", "out": n.out, "metrics": metrics}


def finetune_init(pretrain_dir: str, fraction: float) -> str:
    """The checkpoint fine-tuning starts from: ``final/`` or the snapshot at `fraction` of pretraining."""
    from ..checkpoints import snapshot_at

    return snapshot_at(pretrain_dir, fraction).path


def _finetune(n, log, threads, log_path) -> dict[str, Any]:
    from ..train.finetune import run_finetune

    init = finetune_init(n.config["pretrain_dir"], n.config["fraction"])
    cfg = from_dict(FinetuneConfig, dict(n.config["finetune"], init_from=init, out_dir=n.out))
    validate(cfg)
    res = run_finetune(cfg, resume=(Path(n.out) / "config.yaml").exists(), log=log)
    return _run_summary(res, n.out, "final_train_loss")


def _evaluate(n, log, threads, log_path) -> dict[str, Any]:
    from ..evaluate.run import run_evaluate
    from ..evaluate.stability import upstream_stability

    kw = dict(n.config["evaluate"])
    n_stab = kw.pop("stability_sequences")
    stab_tasks, stab_q = kw.pop("stability_tasks", None), kw.pop("stability_max_questions", None)
    stab_q = stab_q if stab_q is not None else kw.get("max_questions")
    results = run_evaluate(n.config["finetune_dir"], None, n.out, log=log, **kw)
    stab = upstream_stability(n.config["finetune_dir"], max_sequences=n_stab,
                              out_path=Path(n.out) / "stability.json", log=log, cloze_tasks=stab_tasks,
                              cloze_max_questions=stab_q, batch_size=kw["batch_size"], data_root=kw["data_root"],
                              data_source=kw["data_source"])  # written last
    metrics = {f"{task}/{m}": v["value"] for task, r in results.items() for m, v in r.get("metrics", {}).items()}
    return {"status": "done", "out": n.out, "metrics": dict(metrics, stability=stab["stability"],
                                                            upstream_loss_change=stab.get("upstream_loss_change"))}


RUNNERS = {"tokenizer": _tokenizer, "data": _data, "pretrain": _pretrain, "analyze": _analyze,
           "finetune": _finetune, "evaluate": _evaluate}
