"""Cheap checkpoint statistics used by the CLI summaries (the full analyses live in ``plasticity.analysis``)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def param_norm(checkpoint_dir: str | Path) -> float:
    """Global L2 norm of all weights in a checkpoint's ``model.safetensors``."""
    sd = load_file(str(Path(checkpoint_dir) / "model.safetensors"))
    return float(torch.sqrt(sum((v.double() ** 2).sum() for v in sd.values())))
