"""Pretraining sweeps: expand a base config over grid axes and run every point, skipping finished runs.

Each run directory is named by the hash of its resolved config, so identical work is never repeated and a
re-run resumes interrupted runs from their newest checkpoint. Runs execute in parallel worker processes with
the CPU threads split between them (on 2 cores two 1-thread workers beat one 2-thread worker by ~1.35x).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import PretrainConfig, deep_merge, from_dict, set_dotted, to_dict, validate
from ..errors import ConfigError
from ..io import write_json


@dataclass
class SweepSpec:
    """A base pretraining config (as a mapping) plus axes ``{"optim.weight_decay": [0, 0.1, 1.0], ...}``."""

    name: str = "sweep"
    out_dir: str = "study_runs"
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    workers: int | None = None
    analyze: list[str] = field(default_factory=list)  # e.g. [probes, rank, gap, norms]; [] = skip
    finetune: dict[str, Any] | None = None  # a FinetuneConfig mapping (init_from/out_dir are filled in)
    evaluate: dict[str, Any] | None = None  # run_evaluate keyword arguments (k, max_questions, ...)


# The embedded default: three weight decays on a tiny Llama over packaged BBC News text. The token budget is
# far below 20 TPP (a 0.7M-parameter model at 20 TPP is 14M tokens, ~35 min per run on one AVX2 core), so
# the default finishes in minutes; the mechanistic effects of weight decay are visible at this scale.
DEFAULT_SWEEP = SweepSpec(
    name="default",
    base={
        "model": {"preset": "llama2-tiny"},
        "tokenizer": {"vocab_size": 2048, "train_documents": 2000},
        "data": {"source": "packaged:bbc_news", "seq_len": 128},
        "optim": {"lr": 0.003, "min_lr": 0.0003},
        "train": {"micro_batch_size": 16, "max_tokens": 400_000, "log_every": 25, "eval_every": 50,
                  "checkpoint_fractions": [0.25, 0.5, 0.75], "checkpoint_every": 50},
    },
    axes={"optim.weight_decay": [0.0, 0.1, 1.0]},
    analyze=["probes", "rank", "gap", "norms"],
    finetune={"task": "demo_arith", "task_options": {"n_train": 512, "n_test": 64}, "cutoff_len": 256,
              "optim": {"lr": 0.001}, "train": {"micro_batch_size": 16, "grad_accum": 2, "epochs": 2}},
    evaluate={"k": 4, "max_questions": 48, "max_new_tokens": 96, "batch_size": 32},
)


def expand(spec: SweepSpec) -> list[tuple[dict[str, Any], PretrainConfig]]:
    """Every grid point as (axis values, validated config with its hashed out_dir)."""
    keys = list(spec.axes)
    points = []
    for values in itertools.product(*(spec.axes[k] for k in keys)) if keys else [()]:
        over: dict[str, Any] = {}
        for k, v in zip(keys, values, strict=True):
            set_dotted(over, k, v)
        data = deep_merge(spec.base, over)
        data.pop("out_dir", None)
        cfg = from_dict(PretrainConfig, data)
        validate(cfg)
        d = to_dict(cfg)
        d.pop("out_dir")
        h = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
        cfg.out_dir = str(Path(spec.out_dir) / spec.name / f"pretrain-{h}")
        points.append((dict(zip(keys, values, strict=True)), cfg))
    if not points:
        raise ConfigError("axes", "the sweep has no points")
    return points


FAILED = "study_failed.json"  # in a grid point's pretraining dir: {status, stage, reason} of its last failure


def finetune_dir(spec: SweepSpec, pretrain_dir: str) -> Path:
    """Fine-tuning run of a grid point: named by the hash of the pretraining run and the fine-tuning config."""
    key = json.dumps([Path(pretrain_dir).name, spec.finetune], sort_keys=True)
    return Path(spec.out_dir) / spec.name / f"finetune-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _stages(spec_dict: dict[str, Any], cfg_dict: dict[str, Any], threads: int, log_path: str) -> dict[str, Any]:
    """One grid point: pretrain -> analyze -> finetune -> evaluate; every finished stage is reused."""
    import torch
    from transformers.utils import logging as hf_logging

    from ..config import FinetuneConfig, validate
    from ..errors import DivergenceError, UserError
    from ..train.pretrain import run_pretrain

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    spec = from_dict(SweepSpec, spec_dict)
    cfg = from_dict(PretrainConfig, cfg_dict)
    pdir = Path(cfg.out_dir)
    with open(log_path, "a", encoding="utf-8") as f:
        def log(msg: str) -> None:
            f.write(msg + "\n")
            f.flush()

        from filelock import FileLock, Timeout

        lock = FileLock(str(pdir) + ".lock", timeout=0)  # one process per grid point; released if it dies
        try:
            lock.acquire()
        except Timeout:
            log(f"busy: another plasticity process is running {pdir}")
            return {"status": "busy", "reason": f"another plasticity process is running {pdir}"}
        stage = "pretrain"
        try:
            res = run_pretrain(cfg, resume=(pdir / "config.yaml").exists(), log=log)
            if res.get("status") != "completed":
                return res
            if spec.analyze:
                stage = "analyze"
                from ..analysis.run import run_analyze

                if not _analysis_done(spec, pdir):
                    run_analyze(pdir, what=set(spec.analyze), log=log)
            if spec.finetune is not None:
                stage = "finetune"
                from ..train.finetune import run_finetune

                fdir = finetune_dir(spec, str(pdir))
                fcfg = from_dict(FinetuneConfig, dict(spec.finetune, init_from=str(pdir), out_dir=str(fdir)))
                validate(fcfg)
                ft = run_finetune(fcfg, resume=(fdir / "config.yaml").exists(), log=log)
                res = dict(res, finetune_dir=str(fdir), finetune_status=ft.get("status"))
                if spec.evaluate is not None:
                    stage = "evaluate"
                    from ..evaluate.run import run_evaluate
                    from ..evaluate.stability import upstream_stability

                    if not _evaluation_done(fdir):
                        run_evaluate(str(fdir), None, None, log=log, **spec.evaluate)
                        upstream_stability(fdir, log=log)
            (pdir / FAILED).unlink(missing_ok=True)
            return res
        except Exception as e:  # noqa: BLE001 - a failed point is recorded; the other points go on
            kind = "" if isinstance(e, UserError | DivergenceError) else f"{type(e).__name__}: "
            log(f"error in {stage}: {kind}{e}")
            failure = {"status": "failed", "stage": stage, "reason": f"{kind}{e}"}
            write_json(pdir / FAILED, failure)
            return failure
        finally:
            lock.release()


def point_done(spec: SweepSpec, pretrain_dir: str) -> bool:
    """Whether every stage of a grid point has finished (so the point is served from disk)."""
    p = Path(pretrain_dir)
    if not _completed(p) or not _analysis_done(spec, p):
        return False
    if spec.finetune is not None:
        fdir = finetune_dir(spec, pretrain_dir)
        if not _completed(fdir) or (spec.evaluate is not None and not _evaluation_done(fdir)):
            return False
    return True


def _completed(run_dir: Path) -> bool:
    s = run_dir / "summary.json"
    return s.exists() and json.loads(s.read_text()).get("status") == "completed"


def _analysis_done(spec: SweepSpec, pretrain_dir: Path) -> bool:
    return all((pretrain_dir / "analysis" / f"{w}.json").exists() for w in spec.analyze)


def _evaluation_done(finetune_dir: Path) -> bool:
    return (finetune_dir / "eval" / "stability.json").exists()  # written last by the evaluate stage


def collect_row(spec: SweepSpec, axes: dict[str, Any], pretrain_dir: str) -> dict[str, Any]:
    """Flat results of a grid point: pretraining summary, analyses, downstream metrics, stability."""
    p = Path(pretrain_dir)
    row: dict[str, Any] = dict(axes, run=pretrain_dir)
    s = json.loads((p / "summary.json").read_text()) if (p / "summary.json").exists() else {}
    row.update(status=s.get("status"), val_loss=s.get("final_val_loss"), train_loss=s.get("final_train_loss"),
               tokens=s.get("tokens_seen"))
    a = p / "analysis"
    if (a / "norms.json").exists():
        row["weight_norm"] = json.loads((a / "norms.json").read_text())["total_norm"]
    if (a / "rank.json").exists():
        last = json.loads((a / "rank.json").read_text())["checkpoints"][-1]["mean"]
        row["qk_rank_frac"], row["vp_rank_frac"] = last["qk"]["fraction"], last["vp"]["fraction"]
    if (a / "gap.json").exists():
        g = json.loads((a / "gap.json").read_text())
        row["train_val_gap"] = g["train_val"]["gap"]
        row["unseen_seen_gap"] = (g.get("unseen_seen") or {}).get("gap")
    if (a / "probes.json").exists():
        for name, ps in json.loads((a / "probes.json").read_text())["sets"].items():
            row[f"probe_{name}"] = ps["best_test_accuracy"]
    if spec.finetune is not None:
        fdir = finetune_dir(spec, pretrain_dir)
        for f in sorted((fdir / "eval").glob("*.json")) if (fdir / "eval").is_dir() else []:
            d = json.loads(f.read_text())
            if f.name == "stability.json":
                row["forgetting"] = d["forgetting"]
            else:
                for m, v in d["metrics"].items():
                    row[f"{d['task']}/{m}"] = v["value"]
    return row


def run_sweep(spec: SweepSpec, workers: int | None = None, log=print, retry_failed: bool = False
              ) -> list[dict[str, Any]]:
    """Run every grid point (finished ones are read from disk) and return one row per point. Points that
    failed before (divergence, bad data, a crash inside a stage) are reported again without re-running
    unless `retry_failed`; interrupted points resume from their newest checkpoint."""
    points = expand(spec)
    cpus = os.cpu_count() or 1
    workers = max(1, min(workers or spec.workers or cpus, len(points)))
    threads = max(1, cpus // workers)
    todo = []
    rows: list[dict[str, Any] | None] = [None] * len(points)
    for i, (axes, cfg) in enumerate(points):
        failed = Path(cfg.out_dir) / FAILED
        if point_done(spec, cfg.out_dir):
            s = Path(cfg.out_dir) / "summary.json"
            rows[i] = dict(axes, **json.loads(s.read_text()), out_dir=cfg.out_dir, cached=True)
        elif failed.exists() and not retry_failed:
            rows[i] = dict(axes, **json.loads(failed.read_text()), out_dir=cfg.out_dir, cached=True)
        else:
            todo.append(i)
    n_failed = sum(1 for r in rows if r is not None and r.get("status") == "failed")
    log(f"sweep '{spec.name}': {len(points)} runs, {len(points) - len(todo) - n_failed} cached, {n_failed} failed "
        f"before (--retry-failed to re-run), {len(todo)} to run ({workers} workers x {threads} threads)")
    if todo:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            jobs = {}
            for i in todo:
                axes, cfg = points[i]
                Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
                log_path = str(Path(cfg.out_dir) / "train.log")
                log(f"  start {axes} -> {cfg.out_dir} (log: {log_path})")
                jobs[i] = pool.apply_async(_stages, (asdict(spec), to_dict(cfg), threads, log_path))
            for i, job in jobs.items():
                res = job.get()
                axes, cfg = points[i]
                rows[i] = dict(axes, **res, out_dir=cfg.out_dir, cached=False)
                log(f"  done  {axes}: {res.get('status')} val loss {res.get('final_val_loss')}")
    return [r for r in rows if r is not None]
