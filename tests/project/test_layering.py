"""Layering (issues #14, #24), checked on the source with `ast` (every import, function-local ones included):

    cli -> report -> study -> train | evaluate | analysis -> tasks -> models | tokenizer | data | checkpoints
        -> config | io | errors

A module imports its own layer or lower ones; train, evaluate and analysis are siblings that never import each
other; the report reads what a study wrote (never the other way); there is no import cycle anywhere; a command
front end (``plasticity.<package>.cli``) imports its own package and other packages' public names only (no
``_private`` name or module of another package); nothing imports the ``plasticity.cli`` entry point (commands
share ``plasticity.console``).
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "plasticity"

# top to bottom; fnmatch patterns over dotted module names (the first match wins)
LAYERS: list[tuple[str, list[str]]] = [
    # the entry point and the command front ends it registers (a command may read study results, e.g.
    # `analyze --compare --finetuned`)
    ("cli", ["plasticity.cli", "plasticity.*.cli", "plasticity.api"]),
    ("report", ["plasticity.report", "plasticity.report.*"]),
    ("study", ["plasticity.study", "plasticity.study.*", "plasticity.bench", "plasticity.bench.*"]),
    ("train/evaluate/analysis", ["plasticity.train", "plasticity.train.*", "plasticity.evaluate",
                                 "plasticity.evaluate.*", "plasticity.analysis", "plasticity.analysis.*"]),
    ("tasks", ["plasticity.tasks", "plasticity.tasks.*"]),
    ("models/tokenizer/data/checkpoints", ["plasticity.models", "plasticity.architectures", "plasticity.tokenizer",
                                           "plasticity.data",
                                           "plasticity.data.*", "plasticity.checkpoints", "plasticity.losses",
                                           "plasticity.runinfo", "plasticity.results_columns"]),
    ("config/io/errors", ["plasticity", "plasticity.config", "plasticity.files", "plasticity.errors",
                          "plasticity.console", "plasticity.hardware", "plasticity.hashing", "plasticity.resampling",
                          "plasticity.names", "plasticity.tracking", "plasticity.tracking.*"]),
]
SIBLINGS = ("plasticity.train", "plasticity.evaluate", "plasticity.analysis")
# upward imports that exist on purpose, and why (each one must still be there: a stale entry fails)
ALLOWED_UP = {
    ("plasticity.config", "plasticity.tasks.registry"):
        "task_options sections are keyed by task name: config checks a key against the registered tasks",
}


def _modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for f in sorted(src.rglob("*.py")):
        parts = list(f.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, known: set[str], names: set[str] | None = None) -> set[str]:
    """Every plasticity module `name` imports, anywhere in the file (``from pkg import mod`` counts as mod); the
    imported ``module:name`` pairs are added to `names`."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    names = set() if names is None else names
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            found |= subs or {mod}
            names |= {f"{mod}:{a.name}" for a in node.names if f"{mod}.{a.name}" not in known}
    return {m for m in found if m == "plasticity" or m.startswith("plasticity.")}


def _layer(module: str) -> int:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    raise AssertionError(f"{module}: in no layer of tests/project/test_layering.py (place it in LAYERS)")


def _graph(src: Path = SRC) -> dict[str, set[str]]:
    mods = _modules(src)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        targets = set()
        for t in _imports(name, path, known):
            while t not in known:  # plasticity.x.attr -> plasticity.x
                t = t.rsplit(".", 1)[0]
            targets.add(t)
        graph[name] = targets - {name}
    return graph


def _sibling(module: str) -> str | None:
    return next((s for s in SIBLINGS if module == s or module.startswith(s + ".")), None)


def sibling_imports(src: Path = SRC) -> list[str]:
    return sorted(f"{m} -> {t}" for m, ts in _graph(src).items() for t in ts
                  if _sibling(m) and _sibling(t) and _sibling(m) != _sibling(t))


def cli_imports(src: Path = SRC) -> list[str]:
    return sorted(f"{m} -> plasticity.cli" for m, ts in _graph(src).items()
                  if "plasticity.cli" in ts and m != "plasticity.cli")


def upward_imports(src: Path = SRC) -> list[str]:
    return sorted(f"{m} ({LAYERS[_layer(m)][0]}) -> {t} ({LAYERS[_layer(t)][0]})"
                  for m, ts in _graph(src).items() for t in ts
                  if _layer(t) < _layer(m) and (m, t) not in ALLOWED_UP)


def import_cycles(src: Path = SRC) -> list[list[str]]:
    """The import graph's cycles: its strongly connected components of more than one module (Tarjan)."""
    graph = _graph(src)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def cli_internals(src: Path = SRC) -> list[str]:
    """``*.cli`` modules importing another package's private module or name (a leading underscore)."""
    mods = _modules(src)
    known = set(mods)
    bad = []
    for name, path in mods.items():
        if not name.endswith(".cli") or name == "plasticity.cli":
            continue
        pairs: set[str] = set()
        targets = _imports(name, path, known, pairs)
        own = _package(name)
        for t in sorted(targets):
            if _package(t) != own and any(p.startswith("_") for p in t.split(".")[1:]):
                bad.append(f"{name} -> {t}")
        for pair in sorted(pairs):
            mod, attr = pair.split(":")
            if _package(mod) != own and attr.startswith("_") and mod.startswith("plasticity"):
                bad.append(f"{name} -> {mod}.{attr}")
    return bad


def test_no_import_cycles():
    assert import_cycles() == []


def test_command_front_ends_use_public_names_only():
    assert cli_internals() == []


def test_every_module_has_a_layer():
    for m in _modules():
        _layer(m)


def test_train_evaluate_analysis_do_not_import_each_other():
    assert sibling_imports() == []


def test_nothing_imports_the_cli_entry_point():
    assert cli_imports() == []


def test_lower_layers_do_not_import_higher_ones():
    assert upward_imports() == []
    graph = _graph()
    stale = [k for k in ALLOWED_UP if k[1] not in graph.get(k[0], set())]
    assert stale == [], f"ALLOWED_UP entries no longer needed: {stale}"


def test_the_import_scan_sees_function_local_and_relative_imports():
    """The scanner itself: a relative, function-local import in a known module is found."""
    graph = _graph()
    assert "plasticity.checkpoints" in graph["plasticity.train.finetune"]  # `from .. import checkpoints`
    assert "plasticity.config" in graph["plasticity.checkpoints"]  # function-local `from .config import ...`
    assert "plasticity.console" in graph["plasticity.evaluate.cli"]  # inside register()


def test_each_rule_catches_a_violation(tmp_path):
    """On a small fake package that breaks every rule once, each check reports exactly that import."""
    files = {
        "__init__.py": "",
        "cli.py": "",
        "config.py": "def f():\n    from .study import plan\n",  # function-local, upward
        "study/__init__.py": "", "study/plan.py": "",
        "train/__init__.py": "", "train/x.py": "from ..evaluate import y\n",  # sibling
        "evaluate/__init__.py": "", "evaluate/y.py": "",
        "evaluate/cli.py": "def r():\n    from plasticity.cli import log\n    from ..study.plan import _helper\n",
        "study/a.py": "from . import b\n", "study/b.py": "def f():\n    from .a import g\n",  # a cycle
    }
    for rel, text in files.items():
        (tmp_path / "plasticity" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "plasticity" / rel).write_text(text)
    src = tmp_path / "plasticity"
    assert sibling_imports(src) == ["plasticity.train.x -> plasticity.evaluate.y"]
    assert cli_imports(src) == ["plasticity.evaluate.cli -> plasticity.cli"]
    assert upward_imports(src) == ["plasticity.config (config/io/errors) -> plasticity.study.plan (study)"]
    assert import_cycles(src) == [["plasticity.study.a", "plasticity.study.b"]]
    assert cli_internals(src) == ["plasticity.evaluate.cli -> plasticity.study.plan._helper"]
