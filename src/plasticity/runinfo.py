"""Provenance recorded in every run directory: versions, git revision, seeds, hardware."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .hardware import hardware_info


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


def run_info(device: torch.device, seed: int, precision: str, extra: dict | None = None) -> dict:
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
