"""The docs name only things that exist (issue 29): in README.md, BENCHMARKS.md and docs/*.md, every
`plasticity <command>` names a real command and only options of its `--help`, and every repository path
(`src/...`, `tests/...::test_name`, `configs/...`, links) exists. Checked on the text of code spans, code blocks
and links; prose is left alone."""

from __future__ import annotations

import itertools
import re
from functools import cache

import pytest
from typer.testing import CliRunner

from plasticity.cli import app
from tests.conftest import REPO

DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("src/", "tests/", "configs/", "docs/", "scripts/", "benchmarks/", ".ci/")
ROOT_FILES = ("README.md", "BENCHMARKS.md", "pyproject.toml")
COMMAND = re.compile(r"(?:^|[\s/(])plasticity\s+(--?[a-z][a-z-]*|[a-z]+)((?:\s+(?!#)\S+)*)")
_TOPS, _FILES = "|".join(re.escape(t) for t in TOP), "|".join(re.escape(f) for f in ROOT_FILES)
PATH = re.compile(rf"(?<![\w./<-])((?:{_TOPS})[\w./*{{}},\[\]-]*(?:::[\w\[\]-]+)?|(?:{_FILES})\b)")


def _code_texts(md: str) -> list[str]:
    """Code blocks (line by line) and inline code spans."""
    texts = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", md, re.S):
        texts += block.replace("\\\n", " ").splitlines()
    texts += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", md, flags=re.S))
    return texts


@cache
def _help(command: str | None) -> str:
    r = CliRunner().invoke(app, [command, "--help"] if command else ["--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, (command, r.output[-1000:])
    return r.output


def _commands() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        for text in _code_texts(doc.read_text()):
            text = re.split(r"\s#", text)[0]  # a shell / YAML comment is prose
            if text.lstrip().startswith(("error:", "warning:")):  # a quoted message is output, not a command
                continue
            for m in COMMAND.finditer(text):
                found.append((doc.name, m.group(1), text if m.group(2) else m.group(1)))
    return found


def test_every_documented_command_and_option_exists() -> None:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    found = _commands()
    assert len(found) > 50, found  # the scan finds the docs' commands
    bad = []
    for doc, head, text in found:
        if head.startswith("-"):
            if head not in _help(None):
                bad.append((doc, head, "no such option of plasticity"))
            continue
        if head not in commands:
            bad.append((doc, head, "no such command"))
            continue
        after = text[text.index(head) + len(head):] if head in text else ""
        for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", after):
            if f" {opt} " not in _help(head) and f" {opt}/" not in _help(head) and f"/{opt} " not in _help(head):
                bad.append((doc, f"plasticity {head} {opt}", "no such option"))
    assert not bad, bad


def _expand(path: str) -> list[str]:
    """`a/{b,c}.md` -> `a/b.md`, `a/c.md`."""
    parts = re.split(r"\{([^{}]*,[^{}]*)\}", path)
    options = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*options)]


def _exists(path: str) -> bool:
    path = path.rstrip(".,)")
    file, _, test = path.partition("::")
    if any(ch in file for ch in "*?["):
        return any(REPO.glob(file))
    p = REPO / file
    if not p.exists():
        return False
    name = re.escape(test.split("[")[0])
    return not test or re.search(rf"^\s*(def {name}\b|class {name}\b|{name} *=)", p.read_text(), re.M) is not None


def _paths() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        md = doc.read_text()
        for text in _code_texts(md):
            found += [(doc.name, p) for m in PATH.finditer(text) if "<" not in text[m.end():m.end() + 1]
                      for p in _expand(m.group(1))]
        for link in re.findall(r"\]\(([^)\s]+)\)", md):
            target = link.split("#")[0]
            if target and not re.match(r"[a-z]+:", target):
                rel = (doc.parent / target).resolve()
                found.append((doc.name, str(rel.relative_to(REPO)) if rel.is_relative_to(REPO) else str(rel)))
    return found


def test_every_documented_repository_path_exists() -> None:
    found = _paths()
    assert len(found) > 50, found
    missing = sorted({(doc, p) for doc, p in found if not _exists(p)})
    assert not missing, missing


@pytest.mark.parametrize("text, expected", [
    ("plasticity study --dry-run", [("study", "plasticity study --dry-run")]),
    ("    .venv/bin/plasticity bench --quick", [("bench", "    .venv/bin/plasticity bench --quick")]),
    ("plasticity --version", [("--version", "--version")]),
    ("plasticity.config.EvaluateConfig", []),
])
def test_the_command_scan_itself(text: str, expected: list[tuple[str, str]]) -> None:
    got = [(m.group(1), text if m.group(2) else m.group(1)) for m in COMMAND.finditer(text)]
    assert got == expected


def test_the_path_scan_itself() -> None:
    assert [m.group(1) for m in PATH.finditer("see src/plasticity/cli.py, tests/a.py::test_x and README.md")] == [
        "src/plasticity/cli.py,", "tests/a.py::test_x", "README.md"]
    assert _expand("docs/{a,b}.md") == ["docs/a.md", "docs/b.md"]
    assert _exists("tests/project/test_docs.py::test_the_path_scan_itself") and _exists("tests/conftest.py::REPO")
    assert not _exists("tests/project/test_docs.py::test_no_such_test")
    assert not _exists("configs/no-such-file.yaml")


def test_readme_lists_every_registered_task() -> None:
    from plasticity.tasks.registry import list_tasks

    table = (REPO / "README.md").read_text().split("### Tasks", 1)[1].split("\n#", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", table, re.M))
    names = {n for pair in listed for n in pair if n}
    assert names == {t.name for t in list_tasks()}
