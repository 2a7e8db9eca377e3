"""Every command block of README.md works (issue 15, defect 9).

Each command line of each ```bash block is handled explicitly:
- the two set-up commands (`bash scripts/run.sh`, `bash scripts/test.sh`) are what CI and the default run are:
  not repeated here;
- a synopsis line with placeholders (``CONFIG.yaml``, ``RUN``, ``[--k 16]``) must name a real command, and every
  ``--option`` it shows must be in that command's ``--help``;
- ``torchrun`` lines need GPUs and a 0.5B model: their config (plus overrides) must load and validate;
- the GPU-study lines (``plasticity study configs/paper/study-*.yaml`` without ``--dry-run``, possibly after
  ``RAY_ADDRESS=...``) and the ``ray start`` lines are run at tiny scale by tests/study/test_readme_gpu.py;
- every other ``plasticity`` line runs for real, in order, in a scratch directory (``configs/`` linked in), with
  speed-only overrides appended (`FAST`: fewer steps, questions and probe examples; same commands and files);
- any other line fails the test until it is handled here.
- `pip install ...` lines name extras that pyproject.toml defines (`python -m build` runs in
  tests/project/test_packaging.py);
- the `lm_eval` line is run by tests/train/test_chat_template.py (slow; skipped without lm-eval).
The README's `finetune ... init_from=RUN task=gsm8k` is run in tests/reliability/test_runtime_defects.py (it needs
the local GSM8K) and its config resolution in `test_task_options_belong_to_their_task` (no data).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SETUP = {("bash", "scripts/run.sh"), ("bash", "scripts/test.sh")}
FAST: dict[str, list[str]] = {
    "pretrain": ["train.max_tokens=null", "train.max_steps=6", "tokenizer.train_documents=300",
                 "data.max_documents=400", "train.eval_every=0", "train.threads=1"],
    "finetune": ["train.max_steps=2", "train.threads=1", "task_options.demo_arith.n_train=32",
                 "task_options.demo_arith.n_test=8"],
    "evaluate": ["--max-questions", "4", "--max-new-tokens", "8", "--batch-size", "4"],
    "analyze": ["--n-probe", "40", "--gap-sequences", "8"],
}
PLACEHOLDER = re.compile(r"(^|=)[A-Z][A-Z_]+(\.yaml)?$")


def readme_commands() -> list[list[str]]:
    """The command lines of README.md's ```bash blocks (continuations joined, comments dropped)."""
    text = (REPO / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                cmds.append(argv)
    return cmds


def without_env(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(leading ``NAME=value`` environment assignments, the command)."""
    env = {}
    while argv and re.match(r"^[A-Z_]+=", argv[0]):
        k, v = argv[0].split("=", 1)
        env[k] = v
        argv = argv[1:]
    return env, argv


def is_gpu_study(argv: list[str]) -> bool:
    """A paper study run on GPUs or a Ray cluster (tests/study/test_readme_gpu.py runs it at tiny scale)."""
    _, cmd = without_env(argv)
    return cmd[:2] == ["plasticity", "study"] and any(a.startswith("configs/paper/study-") for a in cmd) \
        and "--dry-run" not in cmd


def is_synopsis(argv: list[str]) -> bool:
    return any(PLACEHOLDER.search(t) or "[" in t or "]" in t or "..." in t for t in argv)


def test_readme_has_the_commands_this_test_knows() -> None:
    kinds = [("setup" if tuple(a) in SETUP else "gpu-study" if is_gpu_study(a) else "synopsis" if is_synopsis(a)
              else a[0]) for a in readme_commands()]
    assert kinds.count("setup") == 2 and "synopsis" in kinds and "plasticity" in kinds and "gpu-study" in kinds
    unknown = [a for a, k in zip(readme_commands(), kinds, strict=True)
               if k not in ("setup", "synopsis", "plasticity", "torchrun", "lm_eval", "gpu-study", "ray")
               and a[:2] not in (["pip", "install"], ["python", "-m"])]
    assert ["python", "-m", "build"] in [a[:3] for a in readme_commands() if a[0] == "python"]
    assert "lm_eval" in kinds
    assert not unknown, f"README commands this test does not handle: {unknown}"


def test_readme_pip_extras_exist() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11 on")
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    lines = [a for a in readme_commands() if a[:2] == ["pip", "install"]]
    assert lines
    for argv in lines:
        named = {e.strip() for t in argv for group in re.findall(r"\[([a-z,\s-]+)\]", t) for e in group.split(",")}
        assert named and named <= extras, (argv, extras)


def test_readme_synopsis_options_exist() -> None:
    from typer.testing import CliRunner

    from plasticity.cli import app

    for argv in filter(is_synopsis, readme_commands()):
        if argv[:2] == ["pip", "install"]:
            continue  # test_readme_pip_extras_exist
        assert argv[0] == "plasticity", argv
        r = CliRunner().invoke(app, [argv[1], "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, (argv, r.output[-2000:])
        opts = {o for t in argv for o in re.findall(r"--[a-z][a-z-]*", t)}
        missing = [o for o in opts if o not in r.output]
        assert not missing, f"{' '.join(argv)}: {missing} not in `plasticity {argv[1]} --help`"


def test_readme_torchrun_configs_load() -> None:
    """The multi-GPU examples need GPUs and a 0.5B model: their config and overrides must at least be valid."""
    from plasticity.config import FinetuneConfig, PretrainConfig, load_config

    lines = [a for a in readme_commands() if a[0] == "torchrun"]
    assert {"pretrain", "finetune"} <= {t for a in lines for t in a}
    for argv in lines:
        cmd = "pretrain" if "pretrain" in argv else "finetune"
        rest = argv[argv.index(cmd) + 1:]
        config = REPO / rest[0] if rest and "=" not in rest[0] else None
        load_config(PretrainConfig if cmd == "pretrain" else FinetuneConfig, config, rest[1:] if config else rest)


@pytest.mark.slow
def test_readme_commands_run(tmp_path: Path) -> None:
    """The runnable README commands, in order, exit 0 (the hand-run pipeline: pretrain -> finetune -> evaluate
    -> analyze; `plasticity models`, `plasticity tasks`). Slow (six CLI processes, 40-160 s on 2 shared cores):
    `scripts/test.sh` runs it in its slow phase; `-m slow` runs it alone."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    empty = tmp_path / "no_data"  # the offline defaults (bbc_topic probes), whatever ../shared/data holds
    empty.mkdir()
    env = {"PLASTICITY_DATA_ROOT": str(empty)}
    ran = []
    for argv in readme_commands():
        if tuple(argv) in SETUP or is_synopsis(argv) or is_gpu_study(argv) or argv[0] != "plasticity":
            continue
        args = [*argv[1:], *FAST.get(argv[1], [])]
        r = subprocess.run([sys.executable, "-m", "plasticity.cli", *args], capture_output=True, text=True,
                           timeout=600, env=dict(os.environ, **env), cwd=tmp_path)
        assert r.returncode == 0, (" ".join(argv), r.stderr[-3000:])
        ran.append(argv[1])
    assert {"pretrain", "finetune", "evaluate", "analyze"} <= set(ran), ran
    assert (tmp_path / "runs" / "tiny-ft-demo" / "summary.json").is_file()
    assert (tmp_path / "runs" / "tiny" / "analysis" / "rank.json").is_file()
    assert os.listdir(empty) == []
