"""Hardware detection: which device, whether bf16 autocast pays off, CPU description for benchmarks."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16 (bf16 autocast 1.5-2.5x faster than fp32 there).
    On AVX2-only CPUs bf16 is emulated and was measured ~17x slower, so it is never chosen there."""
    flags = cpu_flags()
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset``), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on GPUs with bf16 support and on CPUs with AMX/AVX512-BF16, else ``fp32``.
    ``PLASTICITY_AUTO_PRECISION=bf16|fp32`` forces what ``auto`` means (tests check the other machine kind)."""
    if precision != "auto":
        return precision
    forced = os.environ.get("PLASTICITY_AUTO_PRECISION", "")
    if forced in ("bf16", "fp32"):
        return forced
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def resolve_eval_precision(precision: str, device: torch.device) -> str:
    """The evaluated model's dtype: ``auto`` -> ``bf16`` on CUDA GPUs with bf16 support, ``fp32`` elsewhere (CPU
    evaluation stays exact and equal across CPU kinds, whatever their bf16 speed)."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    """Autocast context for the resolved precision (weights stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def hardware_info(device: torch.device | None = None) -> dict:
    """What ran this: recorded in every run directory and benchmark."""
    device = device or default_device()
    info = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "allocator": os.environ.get("LD_PRELOAD", "") or "system",
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info


# ------------------------------------------------------------------------------------------- memory


def _read_int(path: str) -> int | None:
    try:
        raw = Path(path).read_text().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


def available_memory(device: Any = "cpu") -> tuple[int, str]:
    """(bytes, where from): free GPU memory on a CUDA device; else the lower of ``MemAvailable`` and the
    cgroup's limit minus its usage."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free memory of {device}"
    best: tuple[int, str] | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = (int(line.split()[1]) * 1024, "MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is not None and limit < 1 << 60:
            left = max(0, limit - (usage or 0))
            if best is None or left < best[0]:
                best = (left, "cgroup memory limit")
            break
    return best if best is not None else (1 << 62, "unknown")


def human(n: float) -> str:
    for unit, div in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{int(n)} B"


def connect_ray(num_cpus: int) -> Any:
    """The `ray` module, connected: to ``RAY_ADDRESS`` when set, else to a local Ray started with `num_cpus`
    CPUs (an already connected Ray is kept). One-line UserError when Ray is not installed."""
    try:
        import ray
    except ImportError:
        from plasticity.errors import UserError

        raise UserError("--executor ray needs Ray: pip install 'lm-plasticity[ray]'") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kw: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **kw)
    return ray
