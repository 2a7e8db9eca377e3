"""Two processes on one run directory: the second refuses with one clear line instead of corrupting it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from filelock import FileLock

from tests.conftest import run_cli, tiny_overrides


def test_second_process_on_same_run_is_refused(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "plasticity.cli", "pretrain", *tiny_overrides(run, **{"train.max_steps": 100000})]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        t0 = time.time()
        while time.time() - t0 < 300 and not (run / "metrics.jsonl").exists():
            time.sleep(0.05)
        r = run_cli("pretrain", *tiny_overrides(run, **{"train.max_steps": 100000}), "--resume", timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "another plasticity process" in r.stderr and "Traceback" not in r.stderr
    finally:
        p.kill()
        p.wait()
    # the kernel released the dead holder's lock: it is not stale
    lock = FileLock(str(run / ".lock"), timeout=0)
    lock.acquire()
    lock.release()
