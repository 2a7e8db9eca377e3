"""Loading a task's rows from local files (JSONL / JSON / parquet), a generator, or the Hugging Face Hub.

Rows keep the Hub's field names. Malformed rows are never dropped silently: bad JSON lines, rows missing a
field and rows the task cannot format are skipped and counted in `LoadedRows.counts` (for summary.json).
A required field missing from a file's FIRST row, an empty or missing file, or a file with no usable row at
all is a `DataError` naming the file (and field).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasticity.errors import DataError
from plasticity.files import iter_jsonl
from plasticity.tasks.base import (
    SPLIT_ALIASES,
    HubSource,
    LocalSource,
    Row,
    SplitSpec,
    Task,
    resolve_local_path,
)
from plasticity.tasks.data_root import resolve_data_root, where_to_put_data

SOURCES = ("local", "hub", "auto")
SKIPPABLE = (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError, DataError)


@dataclass
class LoadedRows:
    """Rows of one task split plus where they came from and what was skipped.

    `counts` keys: rows_read, bad_json (lines that are not UTF-8 JSON, or non-object values), missing_field,
    unformattable, other_split (rows filtered out on purpose: the other side of a seeded partition or rows
    listed in an exclusion file), kept; mixtures add from:<file> (rows taken from each file).
    """

    task: str
    split: str
    source: str
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    origins: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for summary.json."""
        return {
            "task": self.task,
            "split": self.split,
            "source": self.source,
            "n_rows": len(self.rows),
            "origins": list(self.origins),
            "counts": dict(self.counts),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------------------
# File readers


def _missing(row: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    return next((f for f in fields if f not in row), None)


def iter_file(
    path: Path, fields: tuple[str, ...], counts: Counter[str], context: str
) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL / JSON-array / parquet file, checking `fields` (see module docstring)."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .jsonl/.json/.parquet file ({context})")
    if not path.is_file():
        raise DataError(f"{path}: file not found ({context})")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records: list[Any] = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for corrupt files
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DataError(f"{path}: cannot read parquet file: {first}") from e
        numbered = enumerate(records, 1)
    elif suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of objects (use .jsonl for one object per line)")
        numbered = enumerate(data, 1)
    else:
        numbered = iter_jsonl(path)  # a bad line (io.BadLine) is no dict: counted as bad_json
    first = True
    n_read = 0
    for lineno, record in numbered:
        n_read += 1
        counts["rows_read"] += 1
        if not isinstance(record, dict):
            counts["bad_json"] += 1
            continue
        missing = _missing(record, fields)
        if missing is not None:
            if first:
                raise DataError(
                    f"{path}: line {lineno}: missing field '{missing}' ({context}); "
                    f"the row has fields: {', '.join(sorted(record)) or '(none)'}"
                )
            counts["missing_field"] += 1
            continue
        first = False
        yield record
    if n_read == 0:
        raise DataError(f"{path}: file is empty ({context})")


def _iter_hub(src: HubSource) -> Iterator[dict[str, Any]]:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as e:
        raise DataError(
            "loading from the Hugging Face Hub needs the 'datasets' package: pip install 'lm-plasticity[hub]'"
        ) from e
    try:
        ds = datasets.load_dataset(src.path, src.config, split=src.split, revision=src.revision)
    except Exception as e:  # network, auth, missing config: report as a one-line user error
        raise DataError(f"cannot load Hub dataset {src.describe()}: {e}") from e
    for record in ds:
        yield dict(record)


# ---------------------------------------------------------------------------------------------------------
# Validation


def _validator(task: Task, split: str) -> Callable[[Row], None]:
    """A function that raises if `task` cannot use `row` for `split`."""

    def check_train(row: Row) -> None:
        q, r = task.format_example(row)
        if not q.strip() or not r.strip():
            raise ValueError("empty question or response")

    def check_eval(row: Row) -> None:
        if task.family == "cloze":
            task.cloze_item(row)
            return
        if not task.question(row).strip():
            raise ValueError("empty question")
        if task.family == "cot":
            gold = task.gold(row)
            if gold is None or str(gold).strip() == "":
                raise ValueError("no gold answer")

    return check_train if split == "train" else check_eval


def _keep(
    records: Iterator[dict[str, Any]],
    keep: Callable[[Row], bool] | None,
    check: Callable[[Row], None],
    counts: Counter[str],
    limit: int | None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if limit == 0:
        return out
    for record in records:
        if keep is not None and not keep(record):
            counts["other_split"] += 1
            continue
        try:
            check(record)
        except SKIPPABLE:
            counts["unformattable"] += 1
            continue
        out.append(record)
        if limit is not None and len(out) >= limit:
            break
    return out


# ---------------------------------------------------------------------------------------------------------
# Public entry point


def canonical_split(task: Task, split: str) -> str:
    """``train`` or ``eval`` (``test``/``validation`` are aliases of ``eval``), or a DataError."""
    name = SPLIT_ALIASES.get(split)
    if name is None:
        raise DataError(f"unknown split '{split}' for task {task.name}; use train or eval (alias: test)")
    if name not in task.splits:
        if name == "eval" and task.eval_tasks:
            raise DataError(
                f"task {task.name} has no eval split of its own; it is evaluated on the eval splits of "
                f"{', '.join(task.eval_tasks)}"
            )
        raise DataError(f"task {task.name} has no {name} split")
    return name


def local_file(path: str, root: Path | None) -> Path:
    """The file for `path` under `root`; a missing ``x.jsonl`` falls back to an existing ``x.parquet``."""
    p = resolve_local_path(path, root)
    if not p.is_file() and p.suffix.lower() == ".jsonl" and p.with_suffix(".parquet").is_file():
        return p.with_suffix(".parquet")
    return p


def _existing_local_file(path: str, root: Path | None, context: str) -> Path:
    """`local_file`, or a DataError naming the missing file and, for a path under the data root, how to set it."""
    p = local_file(path, root)
    if not p.exists() and not Path(path).expanduser().is_absolute():
        raise DataError(f"{p}: file not found ({context}; {where_to_put_data(resolve_data_root(root))})")
    return p


def _local_ready(spec: SplitSpec, root: Path | None) -> bool:
    try:
        return bool(spec.local) and all(local_file(s.path, root).is_file() for s in spec.local)
    except DataError:
        return False


def load_rows(
    task: Task | str,
    split: str,
    data_root: str | Path | None = None,
    limit: int | None = None,
    *,
    source: str = "local",
) -> LoadedRows:
    """Rows of `task`'s `split` (``train`` or ``eval``), at most `limit` of them.

    `source`: ``local`` (files under the data root, see `resolve_data_root`), ``hub`` (``datasets``, needs
    internet), or ``auto`` (local when all files exist or there is no Hub copy, else Hub). Generated (demo) tasks
    ignore it.
    """
    if isinstance(task, str):
        from plasticity.tasks.registry import get_task

        task = get_task(task)
    if source not in SOURCES:
        raise DataError(f"unknown data source '{source}'; use one of {', '.join(SOURCES)}")
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    split = canonical_split(task, split)
    spec = task.splits[split]
    root = resolve_data_root(data_root)
    context = f"task {task.name}, {split} split"
    counts: Counter[str] = Counter()
    check = _validator(task, split)
    notes = [spec.note] if spec.note else []

    if spec.generator is not None:
        used, origins = "generated", [f"generated ({task.name}, options {task.options})"]
        rows = _keep(iter(spec.generator()), None, check, counts, limit)
        counts["rows_read"] = counts["rows_read"] or len(rows)
    else:
        used = source
        if source == "auto":  # without a Hub copy, the local loader names the missing or unreadable file
            used = "local" if _local_ready(spec, root) or spec.hub is None else "hub"
        if used == "hub":
            if spec.hub is None:
                raise DataError(
                    f"{context}: no Hub source is known; use the local files ({spec.describe_local()})"
                )
            hub = spec.hub
            origins = [f"hub:{hub.describe()}"]
            keep = hub.row_filter.bind(root) if hub.row_filter else None
            records = _hub_records(hub, counts, context)
            rows = _keep(records, keep, check, counts, limit)
        else:
            if not spec.local:
                hub_hint = f" (Hub: {spec.hub.describe()}, use source='hub')" if spec.hub else ""
                raise DataError(f"{context}: no local data source{hub_hint}")
            rows, origins = _load_local(spec, root, check, counts, limit, context, notes)

    counts["kept"] = len(rows)
    if not rows and limit != 0:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        raise DataError(f"{'; '.join(origins)}: no usable rows for {context} ({detail})")
    return LoadedRows(task.name, split, used, rows, dict(counts), origins, notes)


def _hub_records(hub: HubSource, counts: Counter[str], context: str) -> Iterator[dict[str, Any]]:
    first = True
    for record in _iter_hub(hub):
        counts["rows_read"] += 1
        missing = _missing(record, hub.fields)
        if missing is not None:
            if first:
                raise DataError(f"Hub dataset {hub.describe()}: missing field '{missing}' ({context})")
            counts["missing_field"] += 1
            continue
        first = False
        yield record


def _load_local(
    spec: SplitSpec,
    root: Path | None,
    check: Callable[[Row], None],
    counts: Counter[str],
    limit: int | None,
    context: str,
    notes: list[str],
) -> tuple[list[dict[str, Any]], list[str]]:
    origins: list[str] = []
    mixture = len(spec.local) > 1 or any(s.sample is not None for s in spec.local)
    if not mixture:
        src = spec.local[0]
        path = _existing_local_file(src.path, root, context)
        origins.append(str(path) + (f" ({src.row_filter.describe()})" if src.row_filter else ""))
        keep = src.row_filter.bind(root) if src.row_filter else None
        return _keep(iter_file(path, src.fields, counts, context), keep, check, counts, limit), origins
    rows: list[dict[str, Any]] = []
    for src in spec.local:
        rows.extend(_load_part(src, root, check, counts, context, notes, origins))
    random.Random(spec.shuffle_seed).shuffle(rows)
    return (rows if limit is None else rows[:limit]), origins


def _load_part(
    src: LocalSource,
    root: Path | None,
    check: Callable[[Row], None],
    counts: Counter[str],
    context: str,
    notes: list[str],
    origins: list[str],
) -> list[dict[str, Any]]:
    path = _existing_local_file(src.path, root, context)
    keep = src.row_filter.bind(root) if src.row_filter else None
    part = _keep(iter_file(path, src.fields, counts, context), keep, check, counts, None)
    if src.sample is not None:
        if src.sample > len(part):
            notes.append(f"asked for {src.sample} rows of {src.path}, only {len(part)} usable rows exist")
        part = random.Random(src.sample_seed).sample(part, min(src.sample, len(part)))
    counts[f"from:{src.path}"] = len(part)
    origins.append(
        str(path) + (f" (sample {src.sample}, seed {src.sample_seed})" if src.sample is not None else "")
    )
    return part
