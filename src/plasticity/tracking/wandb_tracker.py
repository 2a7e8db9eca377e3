"""Weights & Biases backend: one W&B run per plasticity run (study node), files under ``<run dir>/wandb/``.

Project: ``$WANDB_PROJECT`` or ``plasticity``; entity, mode and credentials are W&B's own settings
(``WANDB_MODE=offline`` writes the run folder only, to upload later with ``wandb sync``). A study node's W&B
run id is its node id, so a resumed node continues its W&B run."""

from __future__ import annotations

import os
from pathlib import Path

from plasticity.tracking import TrackedRun, finite

STEP = "trainer/step"


class WandbTracker:
    def __init__(self, run: TrackedRun) -> None:
        import wandb

        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "plasticity", dir=run.run_dir, name=run.name,
            group=run.group, job_type=run.job_type, id=run.run_id, resume="allow" if run.run_id else None,
            config=run.config, tags=[f"{k}={v}"[:64] for k, v in run.tags.items()],
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False))
        # our step is a metric (W&B's own step only grows: a train and an eval record share a step, and a
        # resumed run logs steps again), every other metric is plotted against it
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, STEP: step})

    def summary(self, metrics: dict[str, float]) -> None:
        self.run.summary.update({f"summary/{k}": v for k, v in finite(metrics).items()})

    def close(self) -> None:
        self.run.finish()
