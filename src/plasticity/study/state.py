"""Node state on disk: ``<out_dir>/nodes/<id>.json`` (done or failed, written atomically once the node ends)
and ``<out_dir>/nodes/<id>.lock`` (an OS file lock held while a process runs the node; the kernel drops it when
the process dies, so a killed run never leaves a stale lock). See docs/artifacts.md."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from plasticity.errors import UserError
from plasticity.files import write_json
from plasticity.study.plan import Node, Plan

FORMAT_VERSION = 2  # layout of study directories and node markers; bumped on incompatible changes


def marker_path(root: Path, node_id: str) -> Path:
    return root / "nodes" / f"{node_id}.json"


def read_marker(root: Path, node_id: str) -> dict[str, Any] | None:
    p = marker_path(root, node_id)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable marker: the node runs again (its own outputs are checked on resume)


def write_marker(root: Path, node: Node, status: str, **fields: Any) -> None:
    write_json(marker_path(root, node.id), dict(id=node.id, kind=node.kind, label=node.label, status=status,
                                                format_version=FORMAT_VERSION, **fields))


def clear_marker(root: Path, node_id: str) -> None:
    marker_path(root, node_id).unlink(missing_ok=True)


def is_running(root: Path, node_id: str) -> bool:
    """Whether another process holds the node's lock (probed without blocking)."""
    p = root / "nodes" / f"{node_id}.lock"
    if not p.exists():
        return False
    with open(p, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def node_states(plan: Plan) -> dict[str, str]:
    """done / failed / running / skipped (an input failed) / pending, for every node."""
    states: dict[str, str] = {}
    for n in plan.nodes.values():
        m = read_marker(plan.root, n.id)
        if m is not None and m.get("status") == "done" and outputs_present(n, m):
            states[n.id] = "done"
        elif is_running(plan.root, n.id):
            states[n.id] = "running"
        elif m is not None and m.get("status") == "failed":
            states[n.id] = "failed"
        elif any(states.get(d) in ("failed", "skipped") for d in n.deps):
            states[n.id] = "skipped"
        else:
            states[n.id] = "pending"
    return states


def outputs_present(node: Node, marker: dict[str, Any]) -> bool:
    """A done marker counts only while the node's main output is still there (its stage says which)."""
    from plasticity.study.stages import STAGES

    return STAGES[node.kind].outputs_present(node, Path(marker.get("out") or node.out))


def check_study_dir(study_dir: Path, root: Path) -> None:
    """Refuse a study directory or node store written by an incompatible plasticity version (one line)."""
    s = study_dir / "study.json"
    if s.exists():
        try:
            v = json.loads(s.read_text()).get("format_version")
        except (OSError, ValueError):
            raise UserError(f"{s}: unreadable study file (corrupt?); move the study directory away") from None
        if v != FORMAT_VERSION:
            raise UserError(f"{study_dir}: written by a plasticity with study format {v}; this version reads "
                            f"format {FORMAT_VERSION} (use another out_dir or name)")
    elif (study_dir / "sweep.json").exists():
        raise UserError(f"{study_dir}: written by an older plasticity (study format 1); this version reads "
                        f"format {FORMAT_VERSION} (use another out_dir or name)")
    f = root / "nodes" / "FORMAT"
    if f.exists() and f.read_text().strip() != str(FORMAT_VERSION):
        raise UserError(f"{root / 'nodes'}: node store format {f.read_text().strip()!r}; this version reads "
                        f"format {FORMAT_VERSION} (use another out_dir)")
    f.parent.mkdir(parents=True, exist_ok=True)
    if not f.exists():
        tmp = f.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(f"{FORMAT_VERSION}\n")
        os.replace(tmp, f)


def load_study(path: str | Path | None):
    """The study spec of `path`: a study YAML, a study directory (``<out_dir>/<name>/`` with the ``study.json``
    that ``plasticity study`` writes: its nodes are found under that directory's parent, wherever it now is), or
    None: the default study."""
    from plasticity.config import from_dict
    from plasticity.study.spec import StudySpec, load_spec, validate_spec

    if path is None or not Path(path).is_dir():
        return load_spec(path)
    study_dir = Path(path)
    f = study_dir / "study.json"
    if not f.is_file():
        raise UserError(f"{study_dir}: not a study directory (no study.json); give the study YAML, or the "
                        "<out_dir>/<name>/ directory that `plasticity study` wrote")
    try:
        raw = json.loads(f.read_text())
    except (OSError, ValueError):
        raise UserError(f"{f}: unreadable study file (corrupt?)") from None
    if raw.get("format_version") != FORMAT_VERSION or not isinstance(raw.get("spec"), dict):
        raise UserError(f"{f}: study format {raw.get('format_version')}; this version reads format {FORMAT_VERSION}")
    if raw["spec"].get("name") != study_dir.resolve().name:
        raise UserError(f"{study_dir}: holds study '{raw['spec'].get('name')}', whose directory is named after it; "
                        "give the study YAML instead")
    spec = from_dict(StudySpec, dict(raw["spec"], out_dir=str(study_dir.resolve().parent)))
    validate_spec(spec)
    return spec
