"""Hardware detection: which device, whether bf16 autocast pays off, CPU description for benchmarks."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

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
