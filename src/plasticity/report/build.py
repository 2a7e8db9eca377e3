"""Build ``<study_dir>/report/index.html`` with paper-style figures and a summary of what the numbers show.

Only this study's numbers are described; nothing is claimed beyond them. Figures whose data is absent are
skipped with a note in the HTML.
"""

from __future__ import annotations

import csv
import html
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import results_columns as selection_names
from ..analysis.columns import probe_mean_best
from ..analysis.stats import bootstrap_ci_over_seeds, correlation, leave_one_out
from ..analysis.stats import finite_or_none as _num
from ..errors import UserError
from ..io import read_json_or_none as _load_json
from ..io import write_json
from . import selection, slices
from .numbers import by_wd, summary_numbers

_METRIC_PREFERENCE = ("pass@", "correct_ratio", "acc", "maj@", "greedy")
_FAMILY_PREFERENCE = ("avg_cot", "avg_cloze", "avg_safety")
_FAMILY_NAMES = {"avg_cot": "CoT", "avg_cloze": "cloze", "avg_safety": "safety"}


def _is_task_metric(col: str) -> bool:
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


# ----------------------------------------------------------------------------------------------- loading


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}g}"




def _read_results(study_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
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


def _headline_spec(study_dir: Path) -> dict[str, str]:
    """The study's ``report.headline`` ({task: metric}) from its study.json; {} when absent."""
    spec = (_load_json(study_dir / "study.json") or {}).get("spec") or {}
    headline = (spec.get("report") or {}).get("headline") or {}
    return {str(k): str(v) for k, v in headline.items()} if isinstance(headline, dict) else {}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """`rows` as CSV, columns in first-seen order."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _wd_column(fields: list[str]) -> str:
    for name in ("optim.weight_decay", "weight_decay"):
        if name in fields:
            return name
    for name in fields:
        if name.endswith("weight_decay"):
            return name
    raise UserError("results.csv has no weight-decay axis column (e.g. optim.weight_decay)")


def _run_dir(study_dir: Path, run: str) -> Path | None:
    if not run:
        return None
    p = Path(run)
    candidates = [p] if p.is_absolute() else [study_dir / p.name, study_dir / p, study_dir.parent.parent / p, p]
    for c in candidates:
        if c.is_dir():
            return c
    return None


class _Point:
    """One grid point: its row, weight decay, seed and loaded analysis files."""

    def __init__(self, row: dict[str, str], wd: float, seed: str | None, run_dir: Path | None):
        self.row = row
        self.wd = wd
        self.seed = seed
        self.run_dir = run_dir
        self._cache: dict[str, dict[str, Any] | None] = {}

    def get(self, col: str) -> float | None:
        return _num(self.row.get(col))

    def analysis(self, name: str) -> dict[str, Any] | None:
        if name not in self._cache:
            self._cache[name] = _load_json(self.run_dir / "analysis" / f"{name}.json") if self.run_dir else None
        return self._cache[name]

    @property
    def label(self) -> str:
        return f"wd={self.wd:g}" + (f", seed={self.seed}" if self.seed is not None else "")


# ----------------------------------------------------------------------------------------------- stats


def _agg(points: list[_Point], col: str) -> dict[float, dict[str, Any]]:
    """Per weight decay: mean, CI (bootstrap over seeds when >= 2 values, else degenerate), n."""
    groups = by_wd(points, col)
    if not groups:
        return {}
    return dict(sorted(bootstrap_ci_over_seeds(groups, n_boot=1000, seed=0).items()))


def _noise_note(agg: dict[float, dict[str, Any]], best: float, n_seeds: int) -> str:
    if n_seeds < 2 or all(a["n"] < 2 for a in agg.values()):
        return "single seed: no CI"
    b = agg[best]
    what = "seed ranges" if max(a["n"] for a in agg.values()) == 2 else "95% CIs"
    overlaps = [
        wd for wd, a in agg.items() if wd != best and a["ci_low"] <= b["ci_high"] and a["ci_high"] >= b["ci_low"]
    ]
    if overlaps:
        return f"differences are within noise ({what} overlap with wd = " + ", ".join(f"{w:g}" for w in overlaps) + ")"
    return f"the best value's {what[:-1]} does not overlap the others'"


# ----------------------------------------------------------------------------------------------- figures


class _Figures:
    def __init__(self, out_dir: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.out_dir = out_dir
        self.entries: list[dict[str, Any]] = []
        plt.rcParams.update(
            {
                "font.size": 9,
                "axes.titlesize": 10,
                "axes.spines.top": False,
                "axes.spines.right": False,
                "legend.frameon": False,
                "figure.dpi": 100,
                "savefig.dpi": 150,
                "axes.formatter.useoffset": False,  # an offset label ("1e-14+2.5e-2") collides with the x label
            }
        )

    def new(self, ncols: int = 1):
        return self.plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.2), squeeze=False)

    interval = "95% bootstrap CI over seeds"  # what error bars are: a seed range with 2 seeds (set per report)

    def save(self, fig, name: str, caption: str) -> None:
        caption = caption.replace("95% bootstrap CI over seeds", self.interval)
        wide = fig.get_size_inches()[0] > 6  # multi-panel: full row in the HTML grid
        for ax in fig.axes:
            _widen_degenerate(ax)
        fig.tight_layout()
        fig.savefig(self.out_dir / f"{name}.png")
        fig.savefig(self.out_dir / f"{name}.svg")
        self.plt.close(fig)
        self.entries.append({"name": name, "caption": caption, "note": None, "wide": wide})

    def skip(self, name: str, caption: str, note: str) -> None:
        self.entries.append({"name": None, "caption": caption, "note": note, "wide": True})


def _ours_note(cols: list[str]) -> str:
    """A caption's closing sentence when some of `cols` are our additions, not the paper's."""
    return (" Entries marked (ours) are our additions, not quantities of the paper." if any(
        selection_names.is_ours(c) for c in cols) else "")


def _widen_degenerate(ax) -> None:
    """Values equal up to rounding (0.025 vs 0.025000000000000001) make an axis span ~1e-17, whose tick labels
    are unreadable: give such an axis +-5% around its centre instead."""
    for get, set_, scale in ((ax.get_xlim, ax.set_xlim, ax.get_xscale), (ax.get_ylim, ax.set_ylim, ax.get_yscale)):
        lo, hi = get()
        mag = max(abs(lo), abs(hi))
        if scale() == "linear" and mag > 0 and hi - lo < 1e-9 * mag:
            c = (lo + hi) / 2
            d = max(0.05 * abs(c), 1e-3)
            set_(c - d, c + d)


def _wd_axis(ax, wds: list[float]) -> None:
    pos = [w for w in wds if w > 0]
    if any(w <= 0 for w in wds) or (pos and max(pos) / min(pos) > 20):
        ax.set_xscale("symlog", linthresh=min(pos) if pos else 1e-3)
        ax.relim()  # margins in symlog space (limits computed before the scale change leave edge markers cut)
        ax.autoscale_view()
    ax.set_xticks(wds)
    ax.set_xticklabels([f"{w:g}" for w in wds])
    ax.set_xlabel("pretraining weight decay")


def _metrics_vs_wd(figs, ds, wds, cols: list[str], ylabel: str, title: str):
    """Each `<prefix>/<rest>` column of `cols` vs weight decay (labelled by `<rest>`), seed CIs: scores in one
    panel, losses (``*_loss``, another scale, lower is better) in a second one when there are any."""
    panels = [([c for c in cols if not c.endswith("_loss")], ylabel, title),
              ([c for c in cols if c.endswith("_loss")], "loss (lower is better)", "held-out loss")]
    panels = [pn for pn in panels if pn[0]]
    fig, ax = figs.new(len(panels))
    i = 0
    for a, (pcols, label, ptitle) in zip(ax[0], panels, strict=True):
        for c in pcols:
            _errplot(a, _agg(ds, c), label=selection_names.ours(c.split("/", 1)[-1], c), color=f"C{i % 10}")
            i += 1
        _wd_axis(a, wds)
        a.set_ylabel(label)
        a.set_title(ptitle)
        a.legend(fontsize=7)
    return fig


def _errplot(ax, agg: dict[float, dict[str, Any]], label: str | None = None, **kw) -> None:
    wds = list(agg)
    means = np.array([agg[w]["mean"] for w in wds])
    if any(agg[w]["n"] >= 2 for w in wds):
        lo = means - np.array([agg[w]["ci_low"] for w in wds])
        hi = np.array([agg[w]["ci_high"] for w in wds]) - means
        ax.errorbar(wds, means, yerr=[lo, hi], marker="o", capsize=3, label=label, **kw)
    else:
        ax.plot(wds, means, marker="o", label=label, **kw)


def _colors(plt, wds: list[float]) -> dict[float, Any]:
    cmap = plt.get_cmap("viridis")
    n = max(len(wds) - 1, 1)
    return {w: cmap(0.9 * i / n) for i, w in enumerate(wds)}


LINESTYLES = ("-", "--", ":", "-.")


def _run_style(points: list[_Point], color: dict[float, Any]) -> dict[int, dict[str, Any]]:
    """Line style per run (figures with one line per run): colour by weight decay, dash pattern by seed, so
    the seeds of one weight decay stay apart."""
    seeds = sorted({p.seed for p in points if p.seed is not None}, key=lambda s: (_num(s) is None, _num(s) or 0, s))
    dash = {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(seeds)}
    return {id(p): {"color": color[p.wd], "linestyle": dash.get(p.seed, "-"), "label": p.label} for p in points}


# ----------------------------------------------------------------------------------------------- main


def build_report(study_dir: Path, out_dir: Path | None = None, headline: dict[str, str] | None = None) -> Path:
    """Write ``index.html``, figures (PNG + SVG) and a copy of ``results.csv``; return the HTML path.

    ``out_dir`` defaults to ``<study_dir>/report``; ``headline`` ({task: metric}) replaces the study's
    ``report.headline``. Raises :class:`UserError` for a missing or invalid study.
    """
    study_dir = Path(study_dir)
    fields, rows = _read_results(study_dir)
    if "checkpoint" in fields and not any(f.endswith("weight_decay") for f in fields):
        if headline is not None:
            raise UserError("--headline: a checkpoints study has no weight-decay headline")
        return _checkpoints_report(study_dir, fields, rows, out_dir)
    wd_col = _wd_column(fields)
    seed_col = "train.seed" if "train.seed" in fields else None
    out = Path(out_dir) if out_dir is not None else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study_dir / "results.csv", out / "results.csv")

    # Pretraining-level figures use every row whose pretraining finished (completed rows, and rows of a running
    # study still pending on fine-tuning or evaluation); downstream figures use completed rows only.
    upstream: list[_Point] = []
    for row in rows:
        wd = _num(row.get(wd_col))
        status = row.get("status") or "completed"
        pretrained = status in ("pending", "running") and _num(row.get("val_loss")) is not None
        if wd is None or not (status == "completed" or pretrained):
            continue  # failed, skipped, or pretraining not finished
        seed = row.get(seed_col) if seed_col else None
        upstream.append(_Point(row, wd, seed, _run_dir(study_dir, row.get("run", ""))))
    if not upstream:
        raise UserError(f"{study_dir / 'results.csv'} has no rows with a weight decay whose pretraining finished")
    completed = [p for p in upstream if (p.row.get("status") or "completed") == "completed"]
    fracs = slices.over_pretraining([p.row for p in completed], fields)
    pre_rows = {id(r) for r in slices.per_run([p.row for p in upstream])}
    points = [p for p in upstream if id(p.row) in pre_rows]  # pretraining-level figures: one point per run
    wds = sorted({p.wd for p in points})
    n_seeds = len({p.seed for p in points}) if seed_col else 1
    metric_cols = [c for c in fields if _is_task_metric(c) and any(p.get(c) is not None for p in completed)]
    avg_cols = [c for c in fields if c.startswith("avg_") and "/" in c and any(p.get(c) is not None for p in completed)]
    headline_spec = headline if headline is not None else _headline_spec(study_dir)
    if headline_spec and not completed:  # a running study before its first evaluation
        ds_rows, ds_note, ds = [], "", []
        names = ", ".join(f"{t} ({m})" for t, m in headline_spec.items())
        main_metric, what = selection.HEADLINE, f"headline = mean over {names}; no completed row yet."
    elif headline_spec:  # report.headline: each task at its own best fine-tuning setting, averaged
        ds_rows, ds_note = slices.downstream([p.row for p in completed], fields, None, headline_spec)
        ds = [_Point(r, _num(r.get(wd_col)) or 0.0, r.get(seed_col) if seed_col else None,
                     _run_dir(study_dir, r.get("run", ""))) for r in ds_rows]
        main_metric, what = selection.HEADLINE, ds_note + "."
        _write_csv(out / "downstream.csv", ds_rows)
    else:
        main_metric = headline_metric(avg_cols, metric_cols)
        what = describe_metric(main_metric, rows) if main_metric else ""
        ds_rows, ds_note = slices.downstream([p.row for p in completed], fields, main_metric)
        ds = [p for p in completed if any(p.row is r for r in ds_rows)]  # downstream figures
    ds_cap = f" Rows: {ds_note}." if ds_note else ""
    phrase = metric_phrase(main_metric, what) if main_metric else ""
    rows_cap = "" if headline_spec else ds_cap  # a report.headline's phrase already says which rows it takes

    figs = _Figures(out)
    if n_seeds == 2:
        figs.interval = "seed range (min-max of the 2 seeds: a bootstrap over 2 seeds gives no more)"
    plt = figs.plt
    color = _colors(plt, wds)
    style = _run_style(points, color)
    summary: list[str] = []

    # (1) val loss vs weight decay
    val = _agg(points, "val_loss")
    cap = "Final validation loss vs pretraining weight decay (error bars: 95% bootstrap CI over seeds)."
    if val:
        fig, ax = figs.new()
        _errplot(ax[0][0], val, color="C0")
        _wd_axis(ax[0][0], list(val))
        ax[0][0].set_ylabel("final val loss")
        ax[0][0].set_title("Validation loss vs weight decay")
        figs.save(fig, "fig1_val_loss_vs_wd", cap)
        best = min(val, key=lambda w: val[w]["mean"])
        summary.append(
            f"Lowest val loss at wd = {best:g} ({val[best]['mean']:.4f}; {_noise_note(val, best, n_seeds)})."
        )
    else:
        figs.skip("fig1", cap, "no val_loss values in results.csv")

    # (2) the study's headline with its tasks (report.headline), the averaged headline per family (paper Figs
    # 2, 9g), then downstream metrics per fine-tuning task
    if headline_spec and not ds:
        figs.skip("fig2_headline_vs_wd", "The headline and each of its tasks' metric vs pretraining weight decay.",
                  "no completed rows yet (fine-tuning or evaluation still pending)")
    elif headline_spec:
        cols = [selection.HEADLINE] + [selection.task_column(fields, t, m) for t, m in headline_spec.items()]
        fig = _metrics_vs_wd(figs, ds, wds, cols, "score", "Headline and its tasks vs weight decay")
        figs.save(fig, "fig2_headline_vs_wd", f"{phrase[:1].upper()}{phrase[1:]} and each of its tasks' metric vs "
                  "pretraining weight decay (legend: eval set / metric). Error bars: 95% bootstrap CI over seeds."
                  + _ours_note(cols))
    fams: dict[str, list[str]] = defaultdict(list)
    for c in avg_cols:
        fams[c.split("/", 1)[0]].append(c)
    for fam, cols in fams.items():
        fig = _metrics_vs_wd(figs, ds, wds, cols, "score (mean over tasks)",
                             f"{fam}: mean over fine-tuning tasks vs weight decay")
        figs.save(fig, f"fig2_{fam}_metrics_vs_wd", selection_names.ours(f"Averaged headline {fam}/<metric>", fam)
                  + f": {describe_metric(cols[0], rows).split(': ', 1)[-1]} Error bars: 95% bootstrap CI over seeds."
                  + (" The paper plots safety per k (Figs 12-16); this mean over k is ours." if fam == "avg_safety"
                     else "") + ds_cap)
    cap = ("Downstream metrics vs pretraining weight decay, one panel per task (legend: eval set / metric; "
           "a+b = pooled over both eval sets' questions)." + ds_cap)
    tasks: dict[str, list[str]] = defaultdict(list)
    for c in metric_cols:
        tasks[c.split("/", 1)[0]].append(c)
    if tasks:
        for task, cols in tasks.items():
            fig = _metrics_vs_wd(figs, ds, wds, cols, "score", f"{task}: downstream metrics vs weight decay")
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)
            figs.save(fig, f"fig2_{safe}_metrics_vs_wd", cap.replace("one panel per task", f"task {task}")
                      + _ours_note(cols))
    else:
        figs.skip("fig2", cap, "no <task>/<eval set>/<metric> columns in results.csv")
    if main_metric:
        summary.append(f"Headline downstream metric: {what}")
        m = _agg(ds, main_metric)
        if m:
            best = max(m, key=lambda w: m[w]["mean"])
            summary.append(
                f"Highest {main_metric} at wd = {best:g} ({m[best]['mean']:.4f}; {_noise_note(m, best, n_seeds)})."
            )

    # (3) val loss vs main metric scatter with Pearson r and leave-one-out
    cap = (f"Final val loss vs {phrase}, one point per run; right: Pearson r without each point (paper Figs 9g, "
           "10)." + rows_cap)
    pairs = [(p, p.get("val_loss"), p.get(main_metric)) for p in ds] if main_metric else []
    pairs = [(p, x, y) for p, x, y in pairs if x is not None and y is not None]
    if len(pairs) >= 2:
        xs = [x for _, x, _ in pairs]
        ys = [y for _, _, y in pairs]
        corr = correlation(xs, ys)
        r = corr["pearson_r"]
        ncols = 2 if len(pairs) >= 3 else 1
        fig, ax = figs.new(ncols)
        a = ax[0][0]
        for p, x, y in pairs:
            a.scatter(x, y, color=color[p.wd], label=f"wd={p.wd:g}", zorder=3)
        handles, labels = a.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=False))
        a.legend(uniq.values(), uniq.keys(), fontsize=7)
        a.set_xlabel("final val loss")
        a.set_ylabel(main_metric)
        a.set_title(f"Pearson r = {_fmt(r, 3)} (n = {len(pairs)})")
        text = f"Pearson r(val loss, {main_metric}) = {_fmt(r, 3)} (n = {len(pairs)}"
        if ncols == 2:
            loo = leave_one_out(xs, ys)
            b = ax[0][1]
            rs = [d["r"] if d["r"] is not None else np.nan for d in loo["loo"]]
            b.bar(range(len(rs)), rs, color=[color[p.wd] for p, _, _ in pairs])
            if r is not None:
                b.axhline(r, color="k", lw=1, ls="--", label="all points")
                b.legend(fontsize=7)
            b.set_xticks(range(len(rs)))
            b.set_xticklabels([p.label for p, _, _ in pairs], rotation=45, ha="right", fontsize=7)
            b.set_ylabel("Pearson r without point")
            b.set_title("Leave-one-out")
            text += f"; leave-one-out range [{_fmt(loo['min_r'], 3)}, {_fmt(loo['max_r'], 3)}]"
            if len(pairs) == 3:
                text += "; with n = 3 each leave-one-out subset has 2 points, so its r is trivially +/-1"
        summary.append(text + ").")
        figs.save(fig, "fig3_val_loss_vs_metric", cap)
    else:
        figs.skip("fig3", cap, "fewer than 2 runs with both val_loss and a downstream metric")

    # probe accuracy vs downstream (paper Fig. 25): probe sets averaged per layer, best layer, vs the headline
    pp = [(probe_mean_best(p.analysis("probes")), p.get(main_metric)) for p in ds] if main_metric else []
    pp = [(x, y) for x, y in pp if x is not None and y is not None]
    if len(pp) >= 3:
        c = correlation([x for x, _ in pp], [y for _, y in pp])
        summary.append(f"Pearson r(best-layer probe accuracy averaged over the probe sets, {main_metric}) = "
                       f"{_fmt(c['pearson_r'], 3)} (n = {len(pp)}; paper Fig. 25).")

    # (4) probe accuracy per layer, per probe set
    cap = "Linear-probe test accuracy per layer, one line per run (colour: weight decay; dash: seed), probe set {}."
    sets: dict[str, list[tuple[_Point, list[int], list[float]]]] = defaultdict(list)
    for p in points:
        for name, s in ((p.analysis("probes") or {}).get("sets") or {}).items():
            layers = [(d["layer"], d["test_accuracy"]) for d in s.get("layers", []) if _num(d.get("test_accuracy"))]
            if layers:
                sets[name].append((p, [ly for ly, _ in layers], [acc for _, acc in layers]))
    if sets:
        for name, lines in sets.items():
            fig, ax = figs.new()
            for p, ls, accs in sorted(lines, key=lambda t: t[0].wd):
                ax[0][0].plot(ls, accs, marker="o", **style[id(p)])
            ax[0][0].set_xlabel("layer")
            ax[0][0].set_ylabel("probe test accuracy")
            ax[0][0].set_title(f"Probe accuracy per layer: {name}")
            ax[0][0].legend(fontsize=7)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
            figs.save(fig, f"fig4_probe_{safe}", cap.format(name))
    else:
        figs.skip("fig4", cap.format("(any)"), "no analysis/probes.json in the run directories")

    # (5) QK / VP pseudo-rank fraction over training
    cap = ("Mean QK and VP pseudo-rank fraction (over layers and heads) during training, one line per run "
           "(colour: weight decay; dash: seed).")
    rank_lines = []
    for p in points:
        cps = (p.analysis("rank") or {}).get("checkpoints") or []
        pts = sorted(
            (c["step"], c["mean"]["qk"]["fraction"], c["mean"]["vp"]["fraction"])
            for c in cps
            if isinstance(c.get("mean"), dict) and "qk" in c["mean"] and "vp" in c["mean"]
        )
        if pts:
            rank_lines.append((p, pts))
    if rank_lines:
        fig, ax = figs.new(2)
        for p, pts in sorted(rank_lines, key=lambda t: t[0].wd):
            steps = [s for s, _, _ in pts]
            ax[0][0].plot(steps, [q for _, q, _ in pts], marker=".", **style[id(p)])
            ax[0][1].plot(steps, [v for _, _, v in pts], marker=".", **style[id(p)])
        for a, k in ((ax[0][0], "QK"), (ax[0][1], "VP")):
            a.set_xlabel("step")
            a.set_ylabel(f"{k} pseudo-rank fraction")
            a.set_title(f"{k} rank fraction over training")
        ax[0][1].legend(fontsize=7)
        figs.save(fig, "fig5_rank_over_training", cap)
    else:
        figs.skip("fig5", cap, "no analysis/rank.json in the run directories")

    # (6) gaps vs weight decay
    cap = ("Train-val loss gap (paper Eq. 3) and unseen-seen loss gap (ours) vs pretraining weight decay: the final "
           "model's loss on sampled validation (unseen training) sequences minus that on sampled training sequences "
           "it was trained on.")
    gaps = {c: _agg(points, c) for c in ("train_val_gap", "unseen_seen_gap")}
    if any(gaps.values()):
        fig, ax = figs.new()
        for i, (c, g) in enumerate(gaps.items()):
            if g:
                _errplot(ax[0][0], g, label=selection_names.ours(c.replace("_", " "), c), color=f"C{i}")
        ax[0][0].axhline(0, color="0.6", lw=0.8)
        _wd_axis(ax[0][0], wds)
        ax[0][0].set_ylabel("loss gap")
        ax[0][0].set_title("Generalization gaps vs weight decay")
        ax[0][0].legend(fontsize=7)
        figs.save(fig, "fig6_gaps_vs_wd", cap)
    else:
        figs.skip("fig6", cap, "no train_val_gap / unseen_seen_gap values in results.csv")

    _fig_loss_curves(figs, points, style)  # paper Fig 6's training and validation loss curves
    _fig_eq3_losses(figs, points, wds)  # paper Fig 6: the two sides of the train-val gap
    _fig_rank_selected_layers(figs, points, style)  # paper Figs 5, 26, 27: layers 5 and 15

    # (7) norm fraction per layer group
    cap = ("Fraction of the total parameter norm per layer group (final model), one line per run "
           "(colour: weight decay; dash: seed).")
    norm_lines = []
    for p in points:
        groups = [
            (g["name"], g["fraction"])
            for g in (p.analysis("norms") or {}).get("groups") or []
            if _num(g.get("fraction")) is not None
        ]
        if groups:
            norm_lines.append((p, groups))
    if norm_lines:
        fig, ax = figs.new()
        fig.set_size_inches(max(4.2, 0.6 * len(norm_lines[0][1]) + 2), 3.4)
        names = norm_lines[0][1]
        order = [n for n, _ in names]
        for p, groups in sorted(norm_lines, key=lambda t: t[0].wd):
            d = dict(groups)
            ax[0][0].plot(
                range(len(order)), [d.get(n, np.nan) for n in order], marker="o", **style[id(p)]
            )
        ax[0][0].set_xticks(range(len(order)))
        ax[0][0].set_xticklabels(order, rotation=45, ha="right", fontsize=7)
        ax[0][0].set_ylabel("norm fraction")
        ax[0][0].set_title("Norm fraction per layer group")
        ax[0][0].legend(fontsize=7)
        figs.save(fig, "fig7_norm_fraction", cap)
    else:
        figs.skip("fig7", cap, "no analysis/norms.json in the run directories")

    # (8) stability-plasticity
    cap = ("Stability vs plasticity (paper App. D, Fig. 18): stability = mean cloze accuracy of the fine-tuned minus "
           f"the pretrained model (x) vs {phrase.split(' (')[0] or 'the headline'} (y), one point per run." + rows_cap)
    x_col = "stability" if "stability" in fields else "forgetting"  # forgetting: results.csv of older versions
    sp = [(p, p.get(x_col), p.get(main_metric)) for p in ds] if main_metric else []
    sp = [(p, x, y) for p, x, y in sp if x is not None and y is not None]
    if sp:
        fig, ax = figs.new()
        for p, x, y in sp:
            ax[0][0].scatter(x, y, color=color[p.wd], label=f"wd={p.wd:g}", zorder=3)
        handles, labels = ax[0][0].get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=False))
        ax[0][0].legend(uniq.values(), uniq.keys(), fontsize=7)
        ax[0][0].set_xlabel("stability (change in mean cloze acc)" if x_col == "stability"
                            else "forgetting (pretraining loss increase; older results.csv)")
        ax[0][0].set_ylabel(main_metric)
        ax[0][0].set_title("Stability-plasticity")
        figs.save(fig, "fig8_stability_plasticity", cap)
    else:
        figs.skip("fig8", cap, "no stability / downstream metric values in results.csv")

    # (9) plasticity over pretraining time: fine-tuned from several fractions of pretraining
    cap = (f"{phrase[:1].upper()}{phrase[1:]} after fine-tuning from a fraction of pretraining, one line per "
           "weight decay (bands: 95% bootstrap CI over seeds).")
    if fracs and main_metric:
        fig, ax = figs.new()
        for wd in wds:
            per = {f: [p.get(main_metric) for p in completed if p.wd == wd and _num(p.row.get(slices.FROM)) == f]
                   for f in fracs}
            xs = [f for f in fracs if any(v is not None for v in per[f])]
            groups = {f: [v for v in per[f] if v is not None] for f in xs}
            ms = [float(np.mean(groups[f])) for f in xs]
            ax[0][0].plot(xs, ms, "o-", color=color[wd], label=f"wd={wd:g}")
            if n_seeds >= 2:
                ci = bootstrap_ci_over_seeds({f: groups[f] for f in xs}, n_boot=1000, seed=0)
                lo, hi = [ci[f]["ci_low"] for f in xs], [ci[f]["ci_high"] for f in xs]
                ax[0][0].fill_between(xs, lo, hi, color=color[wd], alpha=0.15)
        ax[0][0].set_xlabel("fine-tuned from (fraction of pretraining)")
        ax[0][0].set_ylabel(main_metric)
        ax[0][0].set_title("Plasticity over pretraining time")
        ax[0][0].legend(fontsize=7)
        figs.save(fig, "fig9_plasticity_over_pretraining", cap)
        last = {wd: [p.get(main_metric) for p in completed if p.wd == wd and p.get(main_metric) is not None
                     and _num(p.row.get(slices.FROM)) == fracs[-1]] for wd in wds}
        first = {wd: [p.get(main_metric) for p in completed if p.wd == wd and p.get(main_metric) is not None
                      and _num(p.row.get(slices.FROM)) == fracs[0]] for wd in wds}
        change = ", ".join(f"wd {wd:g}: {np.mean(first[wd]):.4g} -> {np.mean(last[wd]):.4g}" for wd in wds
                           if first[wd] and last[wd])
        summary.append(f"{main_metric} fine-tuned from {fracs[0]:g} vs {fracs[-1]:g} of pretraining: {change}.")

    _fig_val_loss_vs_each_task(figs, ds, color, metric_cols)  # paper Figs 9a-f
    ft_cols = ([selection.task_column(fields, t, m) for t, m in headline_spec.items()] if headline_spec and ds
               else [main_metric] if main_metric and not headline_spec else [])
    _fig_finetune_settings(figs, completed, fields, wds, ft_cols)  # paper Figs 21-23
    _fig_probe_average(figs, points, style)  # paper Fig 24: train and test, averaged over the probe sets
    _fig_probe_vs_headline(figs, ds, color, main_metric)  # paper Fig 25
    _fig_group_norms(figs, points, wds)  # paper Fig 29
    _fig_upstream_accuracy(figs, ds, wds, color, main_metric, rows_cap)  # paper Fig 17, App. D

    # trends vs weight decay
    for col, label in (
        ("weight_norm", "Weight norm"),
        ("qk_rank_frac", "QK rank fraction"),
        ("vp_rank_frac", "VP rank fraction"),
        ("stability", "Stability (App. D: change in mean cloze accuracy after fine-tuning)"),
        ("upstream_loss_change", "Upstream (pretraining) val-loss change after fine-tuning"),
    ):
        a = _agg(ds if col in ("stability", "upstream_loss_change") else points, col)
        if len(a) >= 2:
            ws = list(a)
            ms = [a[w]["mean"] for w in ws]
            diffs = np.diff(ms)
            diffs[np.isclose(diffs, 0.0, rtol=0.0, atol=1e-12)] = 0.0  # float noise (e.g. 1/24 computed twice)
            if np.all(diffs == 0):
                verb = "is unchanged"
            elif np.all(diffs < 0):
                verb = "falls monotonically"
            elif np.all(diffs > 0):
                verb = "rises monotonically"
            else:
                verb = "changes non-monotonically"
            vals = ", ".join(f"{m:.4g}" for m in ms)
            summary.append(
                f"{label} {verb} from {ms[0]:.4g} to {ms[-1]:.4g} as wd rises from {ws[0]:g} to {ws[-1]:g} "
                f"(per wd: {vals})."
            )
    if n_seeds < 2:
        summary.append("Single seed: no CI; differences between weight decays are not tested against seed noise.")
    summary.append(
        f"n = {len(points)} pretraining runs ({len(completed)} completed rows), {len(wds)} weight decays, "
        f"{n_seeds} seed(s)"
        + (f"; {len(rows) - len(completed)} rows not completed (failed, skipped or pending) or without a weight "
           "decay" if len(rows) > len(completed) else "")
        + "."
    )
    if len(upstream) > len(completed):
        summary.append(f"{len(upstream) - len(completed)} rows are still pending on fine-tuning or evaluation: "
                       "the pretraining figures include their runs, the downstream figures and numbers do not.")

    ds_cols = [c for c in dict.fromkeys(k for p in ds for k in p.row)
               if (_is_task_metric(c) or c.startswith("avg_")
                   or c in ("stability", "upstream_loss_change", "upstream_acc", "upstream_acc_pretrained"))
               and not c.endswith(("/tasks", "/chosen", "/evaluated_on", "/trained_on"))
               and not (c.startswith("avg_") and c.rsplit("/", 1)[-1] in selection_names.OUR_METRICS)]  # older CSVs
    write_json(out / "summary.json", dict(summary_numbers(points, ds, main_metric, ds_cols), summary=summary,
                                          downstream_rows=ds_note or "all completed rows"))
    path = out / "index.html"
    path.write_text(_html(study_dir, fields, rows, summary, figs.entries))
    return path


# ----------------------------------------------------------------------------------------------- paper figures
# One small function per figure (a figure registry will replace the sequence in build_report).


def _fig_loss_curves(figs, points: list[_Point], style: dict[int, dict[str, Any]]) -> None:
    """Paper Fig 6 (left, middle): training loss (logged steps) and validation loss (eval points) over training,
    one line per run, from each pretraining run's metrics.jsonl."""
    cap = ("Training loss (each logged step's mean next-token loss) and validation loss over pretraining, one line "
           "per run (colour: weight decay; dash: seed); paper Fig 6.")
    curves = []
    for p in points:
        recs = _jsonl(p.run_dir / "metrics.jsonl") if p.run_dir else []
        train = [(r["step"], r["loss"]) for r in recs if _num(r.get("loss")) is not None and "step" in r]
        val = [(r["step"], r["val_loss"]) for r in recs if _num(r.get("val_loss")) is not None and "step" in r]
        if train or val:
            curves.append((p, train, val))
    if not curves:
        figs.skip("fig6_loss_curves", cap, "no metrics.jsonl in the pretraining run directories")
        return
    fig, ax = figs.new(2)
    for p, train, val in sorted(curves, key=lambda c: c[0].wd):
        ax[0][0].plot([s for s, _ in train], [v for _, v in train], **style[id(p)])
        ax[0][1].plot([s for s, _ in val], [v for _, v in val], marker=".", **style[id(p)])
    for a, name in ((ax[0][0], "training loss"), (ax[0][1], "validation loss")):
        a.set_xlabel("step")
        a.set_ylabel(name)
        a.set_title(f"{name[:1].upper()}{name[1:]} over pretraining")
    ax[0][1].legend(fontsize=7)
    figs.save(fig, "fig6_loss_curves", cap)


def _fig_eq3_losses(figs, points: list[_Point], wds: list[float]) -> None:
    """Paper Fig 6 and Eq. 3: the final model's loss on sampled training sequences it trained on and on sampled
    validation sequences (gap.json), vs weight decay."""
    cap = ("Eq. 3's two losses of the final model vs pretraining weight decay: on m training sequences it was "
           "trained on and on m validation sequences (both drawn uniformly, seed 0; their difference is the "
           "train-val gap). Error bars: 95% bootstrap CI over seeds.")
    sides = {"training (seen) sequences": [], "validation sequences": []}
    for p in points:
        tv = (p.analysis("gap") or {}).get("train_val") or {}
        for side, key in zip(sides, ("train_loss", "val_loss"), strict=True):
            if _num(tv.get(key)) is not None:
                sides[side].append((p, float(tv[key])))
    if not any(sides.values()):
        figs.skip("fig6_train_val_losses_vs_wd", cap, "no analysis/gap.json with train_val losses")
        return
    fig, ax = figs.new()
    for i, (side, vals) in enumerate(sides.items()):
        groups: dict[float, list[float]] = defaultdict(list)
        for p, v in vals:
            groups[p.wd].append(v)
        if groups:
            _errplot(ax[0][0], dict(sorted(bootstrap_ci_over_seeds(dict(groups), n_boot=1000, seed=0).items())),
                     label=side, color=f"C{i}")
    _wd_axis(ax[0][0], wds)
    ax[0][0].set_ylabel("loss of the final model")
    ax[0][0].set_title("Eq. 3: training and validation loss")
    ax[0][0].legend(fontsize=7)
    figs.save(fig, "fig6_train_val_losses_vs_wd", cap)


def _fig_rank_selected_layers(figs, points: list[_Point], style: dict[int, dict[str, Any]]) -> None:
    """Paper Figs 5, 26, 27: QK and VP pseudo-rank fraction averaged over the paper's layers (5 and 15; the
    study's ``rank_layers``; a shallower model: the same relative depths) per checkpoint, one line per run."""
    from ..analysis.rank import mean_over_layers, selected_layers

    lines, used = [], set()
    for p in points:
        rank = p.analysis("rank") or {}
        cps = [c for c in rank.get("checkpoints") or [] if c.get("layers") and "num_layers" in c]
        if not cps:
            continue
        sel = rank.get("selected_layers") or selected_layers(int(cps[-1]["num_layers"]))
        pts = [(c["step"], mean_over_layers(c, sel["layers"])) for c in cps]
        pts = sorted((s, m["qk"], m["vp"]) for s, m in pts if m)
        if pts:
            lines.append((p, pts))
            used.add(";".join(map(str, sel["layers"])))
    layers = " / ".join(sorted(used)) or "?"
    cap = (f"QK and VP pseudo-rank fraction averaged over the heads of layers {layers.replace(';', ' and ')} "
           "(0-based; the paper's Figs 5, 26, 27 use layers 5 and 15) over training, one line per run (colour: "
           "weight decay; dash: seed).")
    if not lines:
        figs.skip("fig5_rank_layers_over_training", cap, "no analysis/rank.json with per-layer ranks")
        return
    fig, ax = figs.new(2)
    for p, pts in sorted(lines, key=lambda t: t[0].wd):
        ax[0][0].plot([s for s, _, _ in pts], [q for _, q, _ in pts], marker=".", **style[id(p)])
        ax[0][1].plot([s for s, _, _ in pts], [v for _, _, v in pts], marker=".", **style[id(p)])
    for a, k in ((ax[0][0], "QK"), (ax[0][1], "VP")):
        a.set_xlabel("step")
        a.set_ylabel(f"{k} pseudo-rank fraction")
        a.set_title(f"{k}, layers {layers.replace(';', ' and ')}")
    ax[0][1].legend(fontsize=7)
    figs.save(fig, "fig5_rank_layers_over_training", cap)


def _fig_val_loss_vs_each_task(figs, ds: list[_Point], color: dict[float, Any], metric_cols: list[str]) -> None:
    """Paper Figs 9a-f: final val loss vs each fine-tuning task's paper metrics, one panel per task (the pooled
    eval set when a task has several), one point per run."""
    per_task: dict[str, list[str]] = defaultdict(list)
    for c in metric_cols:
        task, ev, metric = (c.split("/") + ["", ""])[:3]
        if metric and not selection_names.is_ours(c) and not ev.startswith("mean("):
            per_task[task].append(c)
    for task, cols in per_task.items():
        pooled = [c for c in cols if "+" in c.split("/")[1]]
        cols = pooled or cols
        cap = (f"Final validation loss vs the downstream metrics of fine-tuning task {task} (paper Figs 9a-f), one "
               "point per run (colour: weight decay).")
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)
        pts = [(p, p.get("val_loss")) for p in ds if p.get("val_loss") is not None]
        if not pts:
            figs.skip(f"fig3_val_loss_vs_{safe}", cap, "no runs with val_loss")
            continue
        fig, ax = figs.new()
        for i, c in enumerate(cols):
            xy = [(x, p.get(c), p) for p, x in pts if p.get(c) is not None]
            ax[0][0].scatter([x for x, _, _ in xy], [y for _, y, _ in xy], marker="osD^v<>"[i % 7],
                             c=[color[p.wd] for _, _, p in xy], label=c.split("/", 1)[1], zorder=3)
        ax[0][0].set_xlabel("final val loss")
        ax[0][0].set_ylabel("score")
        ax[0][0].set_title(f"{task}: val loss vs downstream")
        ax[0][0].legend(fontsize=7)
        figs.save(fig, f"fig3_val_loss_vs_{safe}", cap)


def _fig_upstream_accuracy(figs, ds: list[_Point], wds: list[float], color: dict[float, Any],
                           main_metric: str | None, rows_cap: str) -> None:
    """Paper App. D: the pretrained models' upstream accuracy (mean cloze accuracy on the stability tasks) vs
    weight decay and, Fig 17, the headline vs the fine-tuned models' upstream accuracy."""
    cap = ("Left: upstream accuracy (mean accuracy on the App. D cloze benchmarks) of the pretrained models and of "
           "the fine-tuned models (mean over the CoT fine-tuning tasks) vs pretraining weight decay. Right (paper Fig "
           f"17): {main_metric or 'the headline'} vs the fine-tuned models' upstream accuracy, one point per run."
           + rows_cap)
    pre = _agg(ds, "upstream_acc_pretrained")  # measured by the evaluate nodes: completed rows only
    fin = _agg(ds, "upstream_acc")
    if not pre and not fin:
        figs.skip("fig8_upstream_accuracy", cap, "no upstream_acc / upstream_acc_pretrained values in results.csv")
        return
    fig, ax = figs.new(2)
    for i, (label, agg) in enumerate((("pretrained", pre), ("fine-tuned", fin))):
        if agg:
            _errplot(ax[0][0], agg, label=label, color=f"C{i}")
    _wd_axis(ax[0][0], wds)
    ax[0][0].set_ylabel("upstream accuracy")
    ax[0][0].set_title("Upstream accuracy vs weight decay")
    ax[0][0].legend(fontsize=7)
    xy = [(p.get("upstream_acc"), p.get(main_metric), p) for p in ds] if main_metric else []
    xy = [(x, y, p) for x, y, p in xy if x is not None and y is not None]
    for x, y, p in xy:
        ax[0][1].scatter(x, y, color=color[p.wd], label=f"wd={p.wd:g}", zorder=3)
    if xy:
        handles, labels = ax[0][1].get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=False))
        ax[0][1].legend(uniq.values(), uniq.keys(), fontsize=7)
    ax[0][1].set_xlabel("upstream accuracy after fine-tuning")
    ax[0][1].set_ylabel(main_metric or "headline")
    ax[0][1].set_title("Plasticity vs upstream accuracy")
    figs.save(fig, "fig8_upstream_accuracy", cap)


def _fig_finetune_settings(figs, completed: list[_Point], fields: list[str], wds: list[float], cols: list[str]) -> None:
    """Paper App. E.2 with swept fine-tuning axes: each column vs weight decay, one line per fine-tuning setting
    (Figs 21-22), and per pretraining run the mean over the settings (Fig 23 rows 1, 3, 5; the report's other
    downstream figures take the best setting, rows 2, 4, 6). Nothing without fine-tuning axes."""
    axes = slices.finetune_axes(fields)
    if not axes or not cols:
        return
    rows = completed
    if slices.FROM in fields:  # fine-tuned from the end of pretraining, as the other downstream figures
        last = max((f for f in (_num(p.row.get(slices.FROM)) for p in rows) if f is not None), default=None)
        rows = [p for p in rows if last is None or _num(p.row.get(slices.FROM)) == last]
    settings = sorted({tuple(p.row.get(a, "") for a in axes) for p in rows})
    fig, ax = figs.new(len(cols))
    for a, col in zip(ax[0], cols, strict=True):
        for i, s in enumerate(settings):
            pts = [p for p in rows if tuple(p.row.get(x, "") for x in axes) == s]
            agg = _agg(pts, col)
            if agg:
                a.plot(list(agg), [v["mean"] for v in agg.values()], marker=".", color=f"C{i % 10}",
                       label=" ".join(f"{x.split('.')[-1]}={v}" for x, v in zip(axes, s, strict=True)), lw=1)
        _wd_axis(a, wds)
        a.set_ylabel(col)
        a.set_title(f"{col.split('/')[0]}: per fine-tuning setting")
    ax[0][-1].legend(fontsize=6)
    figs.save(fig, "fig2_per_finetune_setting", "Each headline column vs pretraining weight decay, one line per "
              f"fine-tuning setting ({', '.join(axes)}), mean over seeds; paper Figs 21-22.")
    fig, ax = figs.new(len(cols))
    for a, col in zip(ax[0], cols, strict=True):
        by_run: dict[str, list[_Point]] = defaultdict(list)
        for p in rows:
            by_run[p.row.get("run", "")].append(p)
        groups: dict[float, list[float]] = defaultdict(list)
        for pts in by_run.values():
            vals = [v for v in (p.get(col) for p in pts) if v is not None]
            if vals:
                groups[pts[0].wd].append(float(np.mean(vals)))
        if groups:
            _errplot(a, dict(sorted(bootstrap_ci_over_seeds(dict(groups), n_boot=1000, seed=0).items())), color="C0")
        _wd_axis(a, wds)
        a.set_ylabel(f"{col} (mean over settings)")
        a.set_title(f"{col.split('/')[0]}: average over settings")
    figs.save(fig, "fig2_average_over_finetune_settings", "Each headline column averaged over the fine-tuning "
              f"settings ({', '.join(axes)}) per pretraining run, vs pretraining weight decay; paper Fig 23 rows 1, "
              "3, 5. Error bars: 95% bootstrap CI over seeds.")


def _fig_probe_average(figs, points: list[_Point], style: dict[int, dict[str, Any]]) -> None:
    """Paper Fig 24 (right columns): per layer, probe train and test accuracy averaged over the probe sets."""
    cap = ("Linear-probe train (left) and test (right) accuracy per layer, averaged over the probe sets, one line per "
           "run (colour: weight decay; dash: seed); paper Fig 24.")
    lines = []
    for p in points:
        sets = list(((p.analysis("probes") or {}).get("sets") or {}).values())
        per: dict[int, dict[str, list[float]]] = defaultdict(lambda: {"train": [], "test": []})
        for s in sets:
            for d in s.get("layers") or []:
                for k in ("train", "test"):
                    if _num(d.get(f"{k}_accuracy")) is not None:
                        per[d["layer"]][k].append(float(d[f"{k}_accuracy"]))
        layers = sorted(ly for ly, v in per.items() if len(v["train"]) == len(v["test"]) == len(sets) > 0)
        if layers:
            lines.append((p, layers, [np.mean(per[ly]["train"]) for ly in layers],
                          [np.mean(per[ly]["test"]) for ly in layers]))
    if not lines:
        figs.skip("fig4_probe_average", cap, "no analysis/probes.json with train and test accuracy")
        return
    fig, ax = figs.new(2)
    for p, layers, train, test in sorted(lines, key=lambda t: t[0].wd):
        ax[0][0].plot(layers, train, marker="o", **style[id(p)])
        ax[0][1].plot(layers, test, marker="o", **style[id(p)])
    for a, k in ((ax[0][0], "train"), (ax[0][1], "test")):
        a.set_xlabel("layer")
        a.set_ylabel(f"probe {k} accuracy (mean over sets)")
        a.set_title(f"Probe {k} accuracy, averaged over sets")
    ax[0][1].legend(fontsize=7)
    figs.save(fig, "fig4_probe_average", cap)


def _fig_probe_vs_headline(figs, ds: list[_Point], color: dict[float, Any], main_metric: str | None) -> None:
    """Paper Fig 25: the best layer's test accuracy averaged over the probe sets vs the headline, per run."""
    cap = (f"Best-layer probe test accuracy (averaged over the probe sets per layer, then the best layer) vs "
           f"{main_metric or 'the headline'}, one point per run; paper Fig 25.")
    pts = [(probe_mean_best(p.analysis("probes")), p.get(main_metric), p) for p in ds] if main_metric else []
    pts = [(x, y, p) for x, y, p in pts if x is not None and y is not None]
    if not pts:
        figs.skip("fig4_probe_vs_headline", cap, "no runs with both probes.json and the headline")
        return
    fig, ax = figs.new()
    for x, y, p in pts:
        ax[0][0].scatter(x, y, color=color[p.wd], label=f"wd={p.wd:g}", zorder=3)
    handles, labels = ax[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    ax[0][0].legend(uniq.values(), uniq.keys(), fontsize=7)
    ax[0][0].set_xlabel("best-layer probe accuracy (mean over sets)")
    ax[0][0].set_ylabel(main_metric)
    ax[0][0].set_title("Probe accuracy vs downstream")
    figs.save(fig, "fig4_probe_vs_headline", cap)


def _fig_group_norms(figs, points: list[_Point], wds: list[float]) -> None:
    """Paper Fig 29: L2 norm of the input layer (embedding), the intermediate layers (mean over blocks) and the
    output layer (lm_head) vs weight decay."""
    cap = ("L2 norm of the input layer (embedding), an intermediate layer (mean over the blocks) and the output layer "
           "(lm_head) vs pretraining weight decay; paper Fig 29. Error bars: 95% bootstrap CI over seeds.")
    parts = {"input layer": {}, "intermediate layer": {}, "output layer": {}}
    for p in points:
        groups = {g.get("name"): _num(g.get("norm")) for g in (p.analysis("norms") or {}).get("groups") or []}
        blocks = [v for k, v in groups.items() if str(k).startswith("layers.") and v is not None]
        for part, v in (("input layer", groups.get("embedding")), ("output layer", groups.get("lm_head")),
                        ("intermediate layer", float(np.mean(blocks)) if blocks else None)):
            if v is not None:
                parts[part].setdefault(p.wd, []).append(v)
    parts = {k: v for k, v in parts.items() if v}
    if not parts:
        figs.skip("fig7_group_norms_vs_wd", cap, "no analysis/norms.json with per-group norms")
        return
    fig, ax = figs.new(len(parts))
    for a, (part, groups) in zip(ax[0], parts.items(), strict=True):
        _errplot(a, dict(sorted(bootstrap_ci_over_seeds(groups, n_boot=1000, seed=0).items())), color="C0")
        _wd_axis(a, wds)
        a.set_ylabel("L2 norm")
        a.set_title(part)
    figs.save(fig, "fig7_group_norms_vs_wd", cap)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (bad lines skipped); [] when it is absent."""
    import json

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


# ----------------------------------------------------------------------------------------------- html

_CSS = """
body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1.5em 1em;align-items:start}
figure{margin:0}
figure.wide,.figs .note{grid-column:1/-1}
figure.wide img{max-width:900px}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:0.85em;color:#444}
table{border-collapse:collapse;font-size:0.75em}
td,th{border:1px solid #ccc;padding:2px 5px;text-align:right}
th{background:#f3f3f3}
.note{color:#a60;font-size:0.9em}
.table{overflow-x:auto}
"""

# Records on window load how many <img> loaded (``data-images-loaded="ok/total"``), which did not
# (``data-broken``, JSON list of src), uncaught JS errors and console.error calls (``data-js-errors``) and the page
# height (``data-page-height``) as <body> attributes, for ``plasticity.report.browser``. No network, no effect on
# what the page shows.
_LOAD_CHECK_JS = """(function(){var E=[];
addEventListener("error",function(e){if(e instanceof ErrorEvent)E.push(String(e.message));},true);
addEventListener("unhandledrejection",function(e){E.push("unhandled rejection: "+e.reason);});
var f=console.error;console.error=function(){E.push("console.error: "+[].join.call(arguments," "));
return f.apply(console,arguments);};
addEventListener("load",function(){var im=[].slice.call(document.images),d=document.body.dataset;
var b=im.filter(function(i){return !(i.complete&&i.naturalWidth>0);});
d.imagesLoaded=(im.length-b.length)+"/"+im.length;
d.broken=JSON.stringify(b.map(function(i){return i.getAttribute("src");}));
d.jsErrors=JSON.stringify(E);d.pageHeight=String(document.documentElement.scrollHeight);});})();"""


def _html(study_dir: Path, fields: list[str], rows: list[dict[str, str]], summary: list[str], entries) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>Study report: {e(study_dir.name)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_LOAD_CHECK_JS}</script></head><body>",
        f"<h1>Study report: {e(study_dir.name)}</h1>",
        "<h2>Summary</h2>",
        f'<p id="summary">{e(" ".join(summary))}</p>',
        '<h2>Figures</h2><div class="figs">',
    ]
    for ent in entries:
        if ent["name"]:
            n = e(ent["name"])
            cls = ' class="wide"' if ent.get("wide") else ""
            parts.append(
                f'<figure{cls}><a href="{n}.svg"><img src="{n}.png" alt="{n}"></a>'
                f"<figcaption>{e(ent['caption'])}</figcaption></figure>"
            )
        else:
            parts.append(f'<p class="note">Skipped: {e(ent["caption"])} ({e(ent["note"])})</p>')
    parts.append("</div>")
    parts.append('<h2>Results (<a href="results.csv">results.csv</a>)</h2><div class="table"><table>')
    parts.append("<tr>" + "".join(f"<th>{e(f)}</th>" for f in fields) + "</tr>")
    for row in rows:
        cells = []
        for f in fields:
            v = row.get(f) or ""
            x = _num(v)
            cells.append(f"<td>{e(f'{x:.5g}' if x is not None and f != 'run' else v)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></div></body></html>")
    return "\n".join(parts) + "\n"


def _checkpoints_report(study_dir: Path, fields: list[str], rows: list[dict[str, str]], out_dir: Path | None) -> Path:
    """A study over existing checkpoints (no weight-decay grid): the results table, one row per entry (by its
    name) and fine-tuning setting; the figures over weight decay need a pretraining grid."""
    out = Path(out_dir) if out_dir is not None else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study_dir / "results.csv", out / "results.csv")
    names = list(dict.fromkeys(r.get("checkpoint") or "" for r in rows))
    done = sum((r.get("status") or "") == "completed" for r in rows)
    summary = [f"Study over {len(names)} existing checkpoints ({', '.join(names)}): {len(rows)} rows, {done} "
               "completed. Figures over weight decay need a pretraining grid; every number is in the table."]
    path = out / "index.html"
    path.write_text(_html(study_dir, fields, rows, summary, []))
    return path
