"""Run the real ``plasticity`` CLI in a fresh process forked from a server that has already imported torch and
transformers (multiprocessing's forkserver), instead of a new interpreter per call.

Each call is still its own process: ``plasticity.cli`` runs as ``__main__`` in a child forked from a server
that imported only third-party and library modules (no CLI state, no torch threads), with the caller's
environment and working directory, stdout/stderr captured from file descriptors 1/2, and the exit code
(or -signal) of the process. What it saves is the 5-10 s of imports per call (about 1/3 of the default test
phase on 2 cores). `tests/conftest.py::run_cli` falls back to a new interpreter when an environment
variable that is read at import time differs from the server's (anything outside ``SAFE_ENV``), and
``PLASTICITY_TEST_FORK=0`` switches the fork path off.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from typing import Any

PRELOAD = ["torch", "transformers", "transformers.models.llama.modeling_llama",
           "transformers.models.olmo2.modeling_olmo2", "safetensors.torch", "numpy", "tokenizers", "yaml",
           "plasticity.train.loop", "plasticity.models", "plasticity.data.packed"]
SAFE_ENV = ("PLASTICITY_", "TOKENIZERS_PARALLELISM", "PYTEST_", "COLUMNS", "LINES")

_state: dict[str, Any] = {}


def _child(args: list[str], env: dict[str, str], cwd: str, out_path: str, err_path: str) -> None:
    """Forked child: become ``python -m plasticity.cli ARGS`` with this environment and cwd, then exit."""
    import runpy

    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = ["plasticity", *args]
    code = 0
    try:
        runpy.run_module("plasticity.cli", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - an uncaught error is a traceback on stderr and exit 1, as in python -m
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def _context() -> Any:
    if "ctx" not in _state:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _state["ctx"] = ctx
        _state["env"] = dict(os.environ)  # the server starts (lazily, at the first call) with this environment
    return _state["ctx"]


def usable(env: dict[str, str]) -> bool:
    """True when a call with this environment can run in a forked child (no import-time variable changed)."""
    if os.environ.get("PLASTICITY_TEST_FORK", "1") == "0" or sys.platform != "linux":
        return False
    base = _state.get("env", os.environ)
    keys = set(base) | set(env)
    return all(k.startswith(SAFE_ENV) for k in keys if base.get(k) != env.get(k))


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Like ``subprocess.run([python, -m, plasticity.cli, *args], capture_output=True, text=True)``."""
    ctx = _context()
    with tempfile.TemporaryDirectory(prefix="plasticity-cli-") as d:
        out_path, err_path = os.path.join(d, "stdout"), os.path.join(d, "stderr")
        for p in (out_path, err_path):
            open(p, "w").close()
        proc = ctx.Process(target=_child, args=(list(args), dict(env), os.getcwd(), out_path, err_path))
        proc.start()
        proc.join(timeout)
        cmd = [sys.executable, "-m", "plasticity.cli", *args]
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(cmd, timeout)
        with open(out_path, encoding="utf-8", errors="replace") as o, \
                open(err_path, encoding="utf-8", errors="replace") as e:
            return subprocess.CompletedProcess(cmd, proc.exitcode, o.read(), e.read())
