"""The report's data, read once: `ReportData` from ``results.csv``, the study's ``study.json`` and the runs'
`RunDir`s (``results.csv`` records each row's pretraining run in ``run`` and its fine-tuning runs in
``finetune_runs``, both relative to the study directory), with the row selections the figures draw from.

Which rows a figure uses (`ReportData.rows`): ``runs`` (one row per pretraining run whose pretraining finished:
val loss, analyses, loss curves), ``downstream`` (completed rows fine-tuned from the end of pretraining, at the
best fine-tuning setting per run when one is swept: `slices.downstream`), ``completed`` (every completed row, for
the figures that show the swept axes themselves).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from plasticity.analysis.stats import bootstrap_ci_over_seeds
from plasticity.analysis.stats import finite_or_none as _num
from plasticity.checkpoints import RunDir
from plasticity.errors import UserError
from plasticity.files import read_json_or_none
from plasticity.report import selection, slices
from plasticity.report.numbers import by_wd
from plasticity.results_columns import LOWER_IS_BETTER

RowSet = Literal["runs", "downstream", "completed"]
_METRIC_PREFERENCE = ("pass@", "correct_ratio", "acc", "maj@", "greedy")
_FAMILY_PREFERENCE = ("avg_cot", "avg_cloze", "avg_safety")
_FAMILY_NAMES = {"avg_cot": "CoT", "avg_cloze": "cloze", "avg_safety": "safety"}
N_BOOT_FIGURES = 1000


def run_dir(study_dir: Path, run: str | None) -> RunDir | None:
    """The run a results.csv path names: relative to the study directory (as ``plasticity study`` writes
    ``run`` and ``finetune_runs``), or absolute; None when empty or not a directory (e.g. a copy without runs)."""
    if not run:
        return None
    path = Path(study_dir) / run  # an absolute `run` stays itself
    return RunDir(path) if path.is_dir() else None


@dataclass(eq=False)
class Point:
    """One results.csv row: its weight decay, seed and run directory (analysis files read once, on demand)."""

    row: dict[str, Any]
    wd: float
    seed: str | None = None
    run: RunDir | None = None
    study_dir: Path | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def get(self, col: str | None) -> float | None:
        return _num(self.row.get(col)) if col else None

    def analysis(self, name: str) -> dict[str, Any] | None:
        """The run's ``analysis/<name>.json`` (None: no run directory, or the file is absent or unreadable)."""
        if name not in self._cache:
            self._cache[name] = self.run.analysis(name) if self.run else None
        return self._cache[name]

    def metrics(self) -> list[dict[str, Any]]:
        """The run's ``metrics.jsonl`` records (bad lines skipped; [] when absent)."""
        if "metrics.jsonl" not in self._cache:
            self._cache["metrics.jsonl"] = _jsonl(self.run.metrics_path) if self.run else []
        return self._cache["metrics.jsonl"]

    @property
    def finetune_runs(self) -> list[RunDir]:
        """The row's fine-tuning runs (``finetune_runs``) that exist."""
        runs = [run_dir(self.study_dir or Path("."), p) for p in str(self.row.get("finetune_runs") or "").split(";")]
        return [r for r in runs if r is not None]

    @property
    def label(self) -> str:
        return f"wd={self.wd:g}" + (f", seed={self.seed}" if self.seed is not None else "")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


@dataclass(eq=False)
class ReportData:
    """Everything the figures and the summary read, built once by `load_report_data`."""

    study_dir: Path
    fields: list[str]
    rows: list[dict[str, str]]  # every results.csv row
    upstream: list[Point]  # rows whose pretraining finished (completed, or pending on fine-tuning / evaluation)
    completed: list[Point]
    points: list[Point]  # one per pretraining run ("runs")
    ds: list[Point]  # the downstream rows ("downstream")
    seed_col: str | None
    metric_cols: list[str]  # {task}/{eval set}/{metric} columns with a value in a completed row
    avg_cols: list[str]  # avg_<family>/<metric> columns with a value in a completed row
    headline_spec: dict[str, str]  # report.headline ({task: metric}), {} without one
    main_metric: str | None  # the headline column
    what: str  # the sentence defining the headline
    ds_note: str  # which rows the downstream figures use ('' when all completed rows)
    ds_rows: list[dict[str, Any]] | None  # report.headline's merged rows (downstream.csv), else None

    # ---- derived
    @property
    def wds(self) -> list[float]:
        return sorted({p.wd for p in self.points})

    @property
    def n_seeds(self) -> int:
        return len({p.seed for p in self.points}) if self.seed_col else 1

    @property
    def fracs(self) -> list[float]:
        """The ``finetune_from`` values of a study fine-tuning from several points of pretraining."""
        return slices.over_pretraining([p.row for p in self.completed], self.fields)

    @property
    def ds_cap(self) -> str:
        return f" Rows: {self.ds_note}." if self.ds_note else ""

    @property
    def rows_cap(self) -> str:
        """Which rows a downstream caption describes ('' with a report.headline: its phrase says so)."""
        return "" if self.headline_spec else self.ds_cap

    @property
    def phrase(self) -> str:
        return metric_phrase(self.main_metric, self.what) if self.main_metric else ""

    @property
    def headline_cols(self) -> list[str]:
        """The report.headline's task columns ([] without one)."""
        return [selection.task_column(self.fields, t, m) for t, m in self.headline_spec.items()]

    @property
    def lower_is_better(self) -> bool | None:
        """Whether a lower headline is better: its metric's direction; a report.headline mixing directions
        has none (None)."""
        if not self.main_metric:
            return None
        if self.main_metric == selection.HEADLINE and self.headline_spec:
            lows = {m in LOWER_IS_BETTER for m in self.headline_spec.values()}
            return lows.pop() if len(lows) == 1 else None
        return self.main_metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER

    def select(self, rows: RowSet) -> list[Point]:
        return {"runs": self.points, "downstream": self.ds, "completed": self.completed}[rows]

    def at_fraction(self, frac: float) -> list[Point]:
        """The downstream rows fine-tuned from `frac` of pretraining: best fine-tuning setting per run (each
        task's own with a report.headline) when one is swept, as at the end of pretraining."""
        rows = [p for p in self.completed if _num(p.row.get(slices.FROM)) == frac]
        return _downstream_points(self, rows)


def agg(points: list[Point], col: str) -> dict[float, dict[str, Any]]:
    """Per weight decay: mean, CI (bootstrap over seeds when >= 2 values, else degenerate), n."""
    groups = by_wd(points, col)
    if not groups:
        return {}
    return dict(sorted(bootstrap_ci_over_seeds(groups, n_boot=N_BOOT_FIGURES, seed=0).items()))


def agg_groups(groups: dict[float, list[float]]) -> dict[float, dict[str, Any]]:
    """`agg` of values already grouped by weight decay."""
    return dict(sorted(bootstrap_ci_over_seeds(dict(groups), n_boot=N_BOOT_FIGURES, seed=0).items()))


# ----------------------------------------------------------------------------------------------- loading


def read_results(study_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """results.csv's columns and rows; one-line UserError for a missing study or an unreadable / empty file."""
    if not study_dir.is_dir():
        raise UserError(f"study directory not found: {study_dir}")
    path = study_dir / "results.csv"
    if not path.is_file():
        raise UserError(f"not a study directory (no results.csv): {study_dir}")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = list(reader.fieldnames or [])
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not rows:
        raise UserError(f"{path} has no rows")
    return fields, rows


def headline_spec_of(study_dir: Path) -> dict[str, str]:
    """The study's ``report.headline`` ({task: metric}) from its study.json; {} when absent."""
    spec = (read_json_or_none(study_dir / "study.json") or {}).get("spec") or {}
    headline = (spec.get("report") or {}).get("headline") or {}
    return {str(k): str(v) for k, v in headline.items()} if isinstance(headline, dict) else {}


def wd_column(fields: list[str]) -> str:
    for name in ("optim.weight_decay", "weight_decay"):
        if name in fields:
            return name
    for name in fields:
        if name.endswith("weight_decay"):
            return name
    raise UserError("results.csv has no weight-decay axis column (e.g. optim.weight_decay)")


def is_task_metric(col: str) -> bool:
    """A ``{task}/{eval set}/{metric}`` column (or a legacy ``{task}/{metric}`` one of older results.csv files)."""
    parts = col.split("/")
    return (len(parts) in (2, 3) and not col.startswith("avg_")
            and parts[-1] not in ("stability", "upstream_loss_change", "upstream_acc", "forgetting", "tasks"))


def headline_metric(avg_cols: list[str], task_cols: list[str]) -> str | None:
    """The paper's headline: the averaged CoT metric (Pass@k first), else cloze acc, else safety; a per-task
    column only when the study has no averages."""
    for fam in _FAMILY_PREFERENCE:
        cols = [c for c in avg_cols if c.split("/", 1)[0] == fam]
        for pref in _METRIC_PREFERENCE:
            for c in cols:
                if c.split("/", 1)[1].startswith(pref):
                    return c
        if cols:
            return cols[0]
    for pref in _METRIC_PREFERENCE:
        for c in task_cols:
            if c.rsplit("/", 1)[1].startswith(pref):
                return c
    return task_cols[0] if task_cols else None


def describe_metric(col: str, rows: list[dict[str, str]]) -> str:
    """One sentence saying what a headline column averages over (for summaries and captions)."""
    fam, metric = col.split("/", 1)
    if fam not in _FAMILY_NAMES:
        return f"{col} (fine-tuning task / eval set / metric)."
    tasks = next((r.get(f"{fam}/tasks") for r in rows if r.get(f"{fam}/tasks")), "") or ""
    names = ", ".join(t for t in tasks.split(";") if t) or "?"
    return (f"{col}: mean of {metric} over the {_FAMILY_NAMES[fam]} fine-tuning tasks ({names}); each task's value "
            "is on its eval set, pooled over the questions of all its eval sets when it has several.")


def metric_phrase(main_metric: str, what: str) -> str:
    """How captions name the headline: ``the headline (mean over ...)`` / ``the headline avg_cot/greedy (mean of
    greedy over ...)``, from ``what`` (the summary's sentence defining it, which starts with the column name)."""
    name = "the headline" if main_metric == selection.HEADLINE else f"the headline {main_metric}"
    defn = what.rstrip(".")
    for sep in (" = ", ": ", " "):
        if defn.startswith(main_metric + sep):
            defn = defn[len(main_metric + sep):].strip()
            break
    if defn.startswith("(") and defn.endswith(")"):
        defn = defn[1:-1]
    return f"{name} ({defn})" if defn else name


def _downstream_points(data: ReportData, completed: list[Point]) -> list[Point]:
    """`slices.downstream` over `completed`, as points (merged ones with a report.headline)."""
    rows = [p.row for p in completed]
    if data.headline_spec:
        merged, _ = slices.downstream(rows, data.fields, None, data.headline_spec)
        return [_merged_point(data, r) for r in merged]
    chosen, _ = slices.downstream(rows, data.fields, data.main_metric)
    return [p for p in completed if any(p.row is r for r in chosen)]


def _merged_point(data: ReportData, r: dict[str, Any]) -> Point:
    return Point(r, _num(r.get(wd_column(data.fields))) or 0.0, r.get(data.seed_col) if data.seed_col else None,
                 run_dir(data.study_dir, r.get("run", "")), data.study_dir)


def load_report_data(study_dir: Path, fields: list[str], rows: list[dict[str, str]],
                     headline: dict[str, str] | None = None) -> ReportData:
    """The report's data of a weight-decay study; `headline` ({task: metric}) replaces its report.headline.
    One-line UserError when no row has a weight decay whose pretraining finished."""
    wd_col = wd_column(fields)
    seed_col = "train.seed" if "train.seed" in fields else None
    # Pretraining-level figures use every row whose pretraining finished (completed rows, and rows of a running
    # study still pending on fine-tuning or evaluation); downstream figures use completed rows only.
    upstream: list[Point] = []
    for row in rows:
        wd = _num(row.get(wd_col))
        status = row.get("status") or "completed"
        pretrained = status in ("pending", "running") and _num(row.get("val_loss")) is not None
        if wd is None or not (status == "completed" or pretrained):
            continue  # failed, skipped, or pretraining not finished
        seed = row.get(seed_col) if seed_col else None
        upstream.append(Point(row, wd, seed, run_dir(study_dir, row.get("run", "")), study_dir))
    if not upstream:
        raise UserError(f"{study_dir / 'results.csv'} has no rows with a weight decay whose pretraining finished")
    completed = [p for p in upstream if (p.row.get("status") or "completed") == "completed"]
    pre_rows = {id(r) for r in slices.per_run([p.row for p in upstream])}
    points = [p for p in upstream if id(p.row) in pre_rows]  # pretraining-level figures: one point per run
    metric_cols = [c for c in fields if is_task_metric(c) and any(p.get(c) is not None for p in completed)]
    avg_cols = [c for c in fields if c.startswith("avg_") and "/" in c and any(p.get(c) is not None for p in completed)]
    spec = headline if headline is not None else headline_spec_of(study_dir)
    data = ReportData(study_dir, fields, rows, upstream, completed, points, [], seed_col, metric_cols, avg_cols,
                      spec, None, "", "", None)
    if spec and not completed:  # a running study before its first evaluation
        names = ", ".join(f"{t} ({m})" for t, m in spec.items())
        data.main_metric, data.what = selection.HEADLINE, f"headline = mean over {names}; no completed row yet."
    elif spec:  # report.headline: each task at its own best fine-tuning setting, averaged
        data.ds_rows, data.ds_note = slices.downstream([p.row for p in completed], fields, None, spec)
        data.ds = [_merged_point(data, r) for r in data.ds_rows]
        data.main_metric, data.what = selection.HEADLINE, data.ds_note + "."
    else:
        data.main_metric = headline_metric(avg_cols, metric_cols)
        data.what = describe_metric(data.main_metric, rows) if data.main_metric else ""
        chosen, data.ds_note = slices.downstream([p.row for p in completed], fields, data.main_metric)
        data.ds = [p for p in completed if any(p.row is r for r in chosen)]  # downstream figures
    return data

