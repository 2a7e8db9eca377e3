"""The percentile bootstrap, shared by the evaluation metrics (resampling questions) and the study statistics
(resampling seeds)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat_fn: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of `stat_fn` over `values`, deterministic given `seed` (an int,
    or a Generator the caller derived). Each replicate resamples the values with replacement. Returns (nan, nan)
    for no values."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (math.nan, math.nan)
    if not 0.0 < alpha < 1.0 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    if stat_fn is np.mean:
        stats = v[idx].mean(axis=1)
    else:
        stats = np.array([stat_fn(v[row]) for row in idx], dtype=float)
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(low), float(high))
