"""Provenance recorded in every run directory: versions, git revision, seeds, hardware."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from plasticity import __version__
from plasticity.hardware import hardware_info


def git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def versions(device: torch.device) -> dict:
    """What computed a result, and nothing that changes between two runs of it (no time, git state or argv):
    library versions, device, CPU and GPU name. Recorded in every evaluation result, which must stay
    byte-identical for the same inputs."""
    import transformers

    from plasticity.hardware import cpu_name

    info = {"plasticity": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "device": str(device), "cpu": cpu_name()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_info(device: torch.device, seed: int, precision: str, extra: dict | None = None) -> dict:
    """``run_info.json`` of a training run: library versions, git revision, seed, precision, hardware (a
    superset of `versions`), argv and start time."""
    import numpy
    import tokenizers
    import transformers

    return {
        "plasticity": __version__,
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
        "seed": seed,
        "precision": precision,
        "hardware": hardware_info(device),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
