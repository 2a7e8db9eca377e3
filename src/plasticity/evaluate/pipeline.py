"""Evaluation with stability: what ``plasticity evaluate`` and a study's evaluate stage both run.

The target is resolved once (a fine-tuning run's ``config.yaml`` read once) and its model loaded once: the
downstream evaluation (`plasticity.evaluate.evaluator`) and the stability measurement of the fine-tuned model
(`plasticity.evaluate.stability`) share it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plasticity.checkpoints import ModelSource, RunDir
from plasticity.config import EvaluateConfig
from plasticity.evaluate.target import Target


@dataclass
class Evaluation:
    """`results`: {task: result} (`run_evaluate`); `stability`: ``stability.json`` (None when not measured: not a
    fine-tuning run, stability off, or a torchrun rank other than 0)."""

    results: dict[str, Any]
    stability: dict[str, Any] | None = None


def evaluate_with_stability(source: str | Path | ModelSource | RunDir | Target, cfg: EvaluateConfig, *,
                            task: str | None = None, out_dir: str | Path | None = None, stability: bool = True,
                            log: Callable[[str], Any] = print, device: str | torch.device | None = None,
                            revision: str | None = None) -> Evaluation:
    """Evaluate `source` with `cfg` (`plasticity.evaluate.evaluator.run_evaluate`), then, for a fine-tuning run and with
    `stability`, measure its stability (`plasticity.evaluate.stability.upstream_stability`), written last as
    ``<out_dir>/stability.json`` (default ``<run>/eval/``). Under torchrun every process evaluates its share and
    rank 0 alone measures stability."""
    from plasticity.evaluate.evaluator import run_evaluate
    from plasticity.evaluate.stability import upstream_stability

    target = Target.of(source, revision)
    try:
        results = run_evaluate(target, cfg, task=task, out_dir=out_dir, log=log, device=device)
        if not stability or target.finetune is None or int(os.environ.get("RANK", "0")) != 0:
            return Evaluation(results)
        out_path = Path(out_dir) / "stability.json" if out_dir is not None else None
        return Evaluation(results, upstream_stability(target, cfg, out_path=out_path, log=log))
    finally:
        target.release()
