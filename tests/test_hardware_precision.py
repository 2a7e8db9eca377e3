"""``train.precision: auto`` per machine kind, and the PLASTICITY_AUTO_PRECISION switch the tests use to run as
the other kind (bf16 on AMX/AVX512-BF16 CPUs, fp32 on AVX2-only ones)."""

from __future__ import annotations

import torch

from plasticity.hardware import cpu_has_fast_bf16, resolve_precision

CPU = torch.device("cpu")


def test_auto_follows_the_cpu(monkeypatch):
    monkeypatch.delenv("PLASTICITY_AUTO_PRECISION", raising=False)
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_fast_bf16() else "fp32")


def test_auto_precision_env_forces_auto_only(monkeypatch):
    for forced in ("bf16", "fp32"):
        monkeypatch.setenv("PLASTICITY_AUTO_PRECISION", forced)
        assert resolve_precision("auto", CPU) == forced
        assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
