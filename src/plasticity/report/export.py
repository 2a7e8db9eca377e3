"""``plasticity report STUDY_DIR --export DIR``: the small files behind a study's numbers, in the study's own
layout, so that results can be committed (no checkpoints, weights or samples) and ``plasticity report`` rebuilds
the tables and figures from them alone.

Layout (mirrors the study's ``out_dir``): ``DIR/<name>/{results.csv,study.json}`` and, for every node of the
study that has a directory under ``out_dir/runs``, ``DIR/runs/<node id>/`` with the files of `KEEP`.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from plasticity.errors import UserError
from plasticity.files import read_json_or_none
from plasticity.names import check_node_id

# (directory inside a node dir, file pattern): configs, summaries, metrics, analyses and evaluation results
KEEP = [("", "*.json"), ("", "*.yaml"), ("", "metrics.jsonl"), ("analysis", "*.json"), ("eval", "*.json"),
        ("upstream_cloze", "*.json")]
SKIP = ("*.samples.jsonl", "*.lock", "*.tmp")


def _kept(node_dir: Path) -> list[Path]:
    out = []
    for sub, pattern in KEEP:
        d = node_dir / sub if sub else node_dir
        if d.is_dir():
            out += [f for f in sorted(d.glob(pattern)) if f.is_file()
                    and not any(fnmatch.fnmatch(f.name, s) for s in SKIP)]
    return out


def export_study(study_dir: Path, dest: Path) -> tuple[Path, int, int]:
    """Copy `study_dir`'s results and its nodes' small files into `dest` (see the module docstring).
    Returns (the exported study dir, files copied, bytes copied). Refuses a `dest` inside the study's out_dir."""
    study_dir, dest = Path(study_dir).resolve(), Path(dest).resolve()
    meta = read_json_or_none(study_dir / "study.json")
    if meta is None or not (study_dir / "results.csv").is_file():
        raise UserError(f"not a study directory (needs study.json and results.csv): {study_dir}")
    runs = study_dir.parent / "runs"
    if dest == study_dir.parent or runs in dest.parents or dest == runs or study_dir in dest.parents:
        raise UserError(f"--export {dest}: must lie outside the study's out_dir ({study_dir.parent})")
    out = dest / study_dir.name
    out.mkdir(parents=True, exist_ok=True)
    files = [(study_dir / n, out / n) for n in ("results.csv", "study.json")]
    nodes = meta.get("nodes") or []
    if not isinstance(nodes, list):
        raise UserError(f"{study_dir / 'study.json'}: 'nodes' is not a list (edited or corrupt)")
    for node in nodes:  # ids become paths under dest: `<kind>-<hash>` only, never `../x`
        node_dir = runs / check_node_id(node, f"{study_dir / 'study.json'}: nodes")
        if node_dir.is_dir():
            files += [(f, dest / "runs" / node / f.relative_to(node_dir)) for f in _kept(node_dir)]
    size = 0
    for src, dst in files:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        size += dst.stat().st_size
    return out, len(files), size
