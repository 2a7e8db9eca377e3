"""`benchmarks/gpu_check.sh` runs on a lent GPU machine only, with minutes to spare: its shell must be right before
it gets there. Here: it parses, and with no parts (a stand-in `nvidia-smi` on PATH) it writes its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_gpu_check_parses():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_gpu_check_without_parts_writes_its_summary(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Stand-in GPU, 1 MiB, 0.0'\n")
    smi.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHON=sys.executable, GPU_CHECK_PARTS="none")
    r = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gpu"][0] == "Stand-in GPU, 1 MiB, 0.0" and set(summary) == {"gpu"}
    assert "== done in" in r.stdout
