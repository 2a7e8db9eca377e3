"""TensorBoard backend: event files under ``<run dir>/tensorboard/`` (read them with ``tensorboard --logdir``
pointed at a run, or at a study's ``runs/`` for every node side by side)."""

from __future__ import annotations

import json
from pathlib import Path

from plasticity.tracking import TrackedRun, finite

SUBDIR = "tensorboard"


class TensorBoardTracker:
    def __init__(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run: events past the step it continues after (written before the kill) are dropped
        self.writer = SummaryWriter(log_dir=str(Path(run.run_dir) / SUBDIR),
                                    purge_step=run.start_step + 1 if run.start_step else None)
        self.last_step = run.start_step
        header = {"name": run.name, "job_type": run.job_type, "group": run.group, "node": run.run_id,
                  "axes": run.tags}
        self.writer.add_text("run", _code(json.dumps(header, indent=2, default=str)), run.start_step)
        self.writer.add_text("config", _code(json.dumps(run.config, indent=2, default=str)), run.start_step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.last_step = max(self.last_step, step)

    def summary(self, metrics: dict[str, float]) -> None:
        for k, v in finite(metrics).items():
            self.writer.add_scalar(f"summary/{k}", v, self.last_step)

    def close(self) -> None:
        self.writer.close()


def _code(text: str) -> str:
    """Text as a Markdown code block (TensorBoard renders text summaries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())
