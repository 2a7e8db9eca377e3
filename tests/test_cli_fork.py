"""The forked CLI runner (tests/cli_fork.py) behaves like `python -m plasticity.cli` in a new interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import cli_fork


def _fresh(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plasticity.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_forked_cli_matches_a_new_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the caller's working directory
    env = dict(os.environ, PLASTICITY_CACHE=str(tmp_path / "cache"))
    assert cli_fork.usable(env)
    for args in (["--help"], ["pretrain", "model.preset=no_such_preset", "out_dir=rel"],
                 ["no-such-command"]):
        a, b = cli_fork.run(args, env, timeout=300), _fresh(args, env)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), args
    assert a.returncode != 0 and "no-such-command" in a.stderr


def test_import_time_env_falls_back_to_a_new_interpreter():
    assert not cli_fork.usable(dict(os.environ, OMP_NUM_THREADS="3"))
    assert cli_fork.usable(dict(os.environ, PLASTICITY_SOMETHING="1"))
