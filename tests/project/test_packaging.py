"""The distribution users install (issue 29): `python -m build` makes the sdist and, from it, the wheel of
`lm-plasticity`; the wheel installed into a fresh virtual environment runs `plasticity --version` and the default
study's `--dry-run` (which reads the packaged default.yaml), importing plasticity from that environment only.

Offline: the build uses this interpreter's setuptools (`--no-isolation`), and the fresh environment sees the
installed dependencies through a .pth file instead of downloading them (no `pip install` from an index)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import plasticity
from tests.conftest import REPO

DIST = "lm-plasticity"


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (argv, r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist and wheel built from a clean copy of the source tree (no egg-info or build/ left in the checkout)."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src-tree"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(src)], cwd=tmp)
    wheels = list((tmp / "dist").glob("*.whl"))
    sdists = list((tmp / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, os.listdir(tmp / "dist")
    return {"wheel": wheels[0], "sdist": sdists[0], "tmp": tmp}


def test_wheel_is_lm_plasticity_with_the_package_data(built: dict[str, Path]) -> None:
    wheel = built["wheel"]
    assert wheel.name == f"lm_plasticity-{plasticity.__version__}-py3-none-any.whl"
    assert built["sdist"].name == f"lm_plasticity-{plasticity.__version__}.tar.gz"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"lm_plasticity-{plasticity.__version__}.dist-info/METADATA").decode()
        entry = z.read(f"lm_plasticity-{plasticity.__version__}.dist-info/entry_points.txt").decode()
    assert {"plasticity/__init__.py", "plasticity/cli.py", "plasticity/study/default.yaml",
            "plasticity/py.typed"} <= names
    assert not any(n.startswith(("tests/", "src/")) for n in names)
    assert f"Name: {DIST}\n" in meta and f"Version: {plasticity.__version__}\n" in meta
    assert "plasticity = plasticity.cli:main" in entry


def _fresh_venv(root: Path) -> Path:
    """A new virtual environment that finds this environment's installed packages (torch, transformers, ...)
    through a .pth file listing their directories; plasticity itself is not among them (an editable install's
    own .pth files are not processed from there)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).strip()
    deps = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(purelib) / "_installed_deps.pth").write_text("".join(f"{d}\n" for d in deps if Path(d).is_dir()))
    return py


def test_wheel_installs_into_a_fresh_venv_and_runs(built: dict[str, Path]) -> None:
    tmp = built["tmp"]
    venv = tmp / "venv"
    py = _fresh_venv(venv)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PLASTICITY_CACHE"] = str(tmp / "cache")
    _run([str(py), "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "-q",
          str(built["wheel"])], cwd=tmp, env=env)
    where = _run([str(py), "-c", "import importlib.metadata as m, plasticity; print(plasticity.__file__); "
                  f"print(m.version('{DIST}'))"], cwd=tmp, env=env).split()
    assert where[0].startswith(str(venv)), where  # the installed wheel, not the checkout
    assert where[1] == plasticity.__version__

    exe = str(venv / "bin" / "plasticity")
    assert _run([exe, "--version"], cwd=tmp, env=env) == f"plasticity {plasticity.__version__}\n"
    plan = _run([exe, "study", "--dry-run"], cwd=tmp, env={**env, "COLUMNS": "200"})
    assert "plan of study 'default'" in plan and "to run:" in plan
    assert "pretrain-" in plan and "evaluate-" in plan
    assert not (tmp / "study_runs").exists()  # a dry run writes nothing
    packaged = (REPO / "src" / "plasticity" / "study" / "default.yaml").read_text()
    assert _run([exe, "study", "--print-default"], cwd=tmp, env=env) == packaged
