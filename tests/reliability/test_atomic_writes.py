"""Atomic writes leave nothing behind: the temp file of a write killed mid-way (SIGKILL leaves it on disk) goes
with the next write of the same file, unless its writer still lives or runs on another host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from plasticity.files import _HOST, write_text


def _killed_writer_temp(d: Path) -> Path:
    """A real writer SIGKILLed inside `atomic_path`: its temp file stays."""
    code = ("import sys, time\nfrom plasticity.files import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_text('partial'); print('written', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(d / "x.json")], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "written"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    (left,) = d.glob(".x.json.*.tmp")
    assert f".{_HOST}.{p.pid}." in left.name
    return left


def test_temp_of_a_killed_write_goes_with_the_next_write(tmp_path: Path) -> None:
    left = _killed_writer_temp(tmp_path)
    live = tmp_path / f".x.json.{_HOST}.{os.getpid()}.abc.tmp"  # a writer that is still running (this one)
    remote = tmp_path / ".x.json.otherhost.1.abc.tmp"  # another host's writer on a shared file system
    other = tmp_path / f".y.json.{_HOST}.999999999.abc.tmp"  # another file's temp
    for f in (live, remote, other):
        f.write_text("keep")
    write_text(tmp_path / "x.json", "{}")
    assert not left.exists() and (tmp_path / "x.json").read_text() == "{}"
    assert live.exists() and remote.exists() and other.exists()
