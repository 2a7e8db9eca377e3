"""Downstream figures: the headline and each task's metrics vs weight decay (paper Figs 2, 9g), val loss vs
downstream (Figs 9, 10), stability-plasticity and upstream accuracy (App. D, Figs 17, 18), plasticity over
pretraining time, and the swept fine-tuning settings (App. E, Figs 21-23)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from plasticity import results_columns as names
from plasticity.analysis.stats import bootstrap_ci_over_seeds, correlation, leave_one_out
from plasticity.analysis.stats import finite_or_none as _num
from plasticity.report import selection, slices
from plasticity.report.data import Point, ReportData, agg, agg_groups, describe_metric
from plasticity.report.figures.base import HEADLINE_COL, STABILITY_COL, Needs, figure
from plasticity.report.figures.plot import errplot, metrics_vs_wd, ours_note, scatter_by_wd, wd_axis


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


def _cap_first(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}"


# ----------------------------------------------------------------------------------------------- vs weight decay


def _headline_caption(data: ReportData, item) -> str:
    if not data.ds:
        return "The headline and each of its tasks' metric vs pretraining weight decay."
    cols = [selection.HEADLINE] + data.headline_cols
    return (f"{_cap_first(data.phrase)} and each of its tasks' metric vs pretraining weight decay (legend: eval set / "
            "metric). Error bars: 95% bootstrap CI over seeds." + ours_note(cols))


@figure("fig2_headline_vs_wd", _headline_caption, rows="downstream", when=lambda d: bool(d.headline_spec),
        needs=Needs(reason="no completed rows yet (fine-tuning or evaluation still pending)"))
def headline_vs_wd(canvas, data, points, item) -> None:
    """A report.headline and each of its tasks' metric vs weight decay."""
    cols = [selection.HEADLINE] + data.headline_cols
    canvas.save(metrics_vs_wd(canvas, points, data.wds, cols, "score", "Headline and its tasks vs weight decay"))


def _by_prefix(cols: list[str]) -> dict[str, list[str]]:
    """Columns grouped by their first ``/`` part (``avg_cot/greedy`` -> ``avg_cot``), in order."""
    groups: dict[str, list[str]] = defaultdict(list)
    for c in cols:
        groups[c.split("/", 1)[0]].append(c)
    return groups


def _families(data: ReportData) -> dict[str, list[str]]:
    return _by_prefix(data.avg_cols)


def _family_caption(data: ReportData, fam) -> str:
    fam = f"avg_{fam}"
    cols = _families(data)[fam]
    return (names.ours(f"Averaged headline {fam}/<metric>", fam)
            + f": {describe_metric(cols[0], data.rows).split(': ', 1)[-1]} Error bars: 95% bootstrap CI over seeds."
            + (" The paper plots safety per k (Figs 12-16); this mean over k is ours." if fam == "avg_safety" else "")
            + data.ds_cap)


@figure("fig2_avg_{item}_metrics_vs_wd", _family_caption, rows="downstream",
        items=lambda d: [f[len("avg_"):] for f in _families(d)])
def family_vs_wd(canvas, data, points, fam) -> None:
    """Paper Figs 2, 9g: each averaged ``avg_<family>/<metric>`` column vs weight decay."""
    fam = f"avg_{fam}"
    canvas.save(metrics_vs_wd(canvas, points, data.wds, _families(data)[fam], "score (mean over tasks)",
                              f"{fam}: mean over fine-tuning tasks vs weight decay"))


def _tasks(data: ReportData) -> dict[str, list[str]]:
    return _by_prefix(data.metric_cols)


def _task_caption(data: ReportData, task) -> str:
    cap = ("Downstream metrics vs pretraining weight decay, one panel per task (legend: eval set / metric; "
           "a+b = pooled over both eval sets' questions)." + data.ds_cap)
    return cap if task is None else cap.replace("one panel per task", f"task {task}") + ours_note(_tasks(data)[task])


@figure("fig2_{item}_metrics_vs_wd", _task_caption, rows="downstream", items=lambda d: list(_tasks(d)),
        no_items="no <task>/<eval set>/<metric> columns in results.csv")
def task_vs_wd(canvas, data, points, task) -> None:
    """Each fine-tuning task's metrics vs weight decay, one figure per task."""
    canvas.save(metrics_vs_wd(canvas, points, data.wds, _tasks(data)[task], "score",
                              f"{task}: downstream metrics vs weight decay"))


# ----------------------------------------------------------------------------------------------- vs val loss


def _val_loss_caption(data: ReportData, item) -> str:
    return (f"Final val loss vs {data.phrase}, one point per run; right: Pearson r without each point (paper Figs "
            "9g, 10)." + data.rows_cap)


@figure("fig3_val_loss_vs_metric", _val_loss_caption, rows="downstream",
        needs=Needs(columns=("val_loss", HEADLINE_COL), together=True, min_points=2,
                    reason="fewer than 2 runs with both val_loss and a downstream metric"))
def val_loss_vs_headline(canvas, data, points, item) -> None:
    """Val loss vs the headline, one point per run, with Pearson r and its leave-one-out values."""
    pairs = [(p, p.get("val_loss"), p.get(data.main_metric)) for p in points]
    pairs = [(p, x, y) for p, x, y in pairs if x is not None and y is not None]
    xs, ys = [x for _, x, _ in pairs], [y for _, _, y in pairs]
    r = correlation(xs, ys)["pearson_r"]
    ncols = 2 if len(pairs) >= 3 else 1
    fig, ax = canvas.new(ncols)
    a = ax[0][0]
    scatter_by_wd(a, [(x, y, p) for p, x, y in pairs], canvas.color)
    a.set_xlabel("final val loss")
    a.set_ylabel(data.main_metric)
    a.set_title(f"Pearson r = {_fmt(r, 3)} (n = {len(pairs)})")
    if ncols == 2:
        loo = leave_one_out(xs, ys)
        b = ax[0][1]
        rs = [d["r"] if d["r"] is not None else np.nan for d in loo["loo"]]
        b.bar(range(len(rs)), rs, color=[canvas.color[p.wd] for p, _, _ in pairs])
        if r is not None:
            b.axhline(r, color="k", lw=1, ls="--", label="all points")
            b.legend(fontsize=7)
        b.set_xticks(range(len(rs)))
        b.set_xticklabels([p.label for p, _, _ in pairs], rotation=45, ha="right", fontsize=7)
        b.set_ylabel("Pearson r without point")
        b.set_title("Leave-one-out")
    canvas.save(fig)


def _paper_task_cols(data: ReportData) -> dict[str, list[str]]:
    """Per fine-tuning task, the paper's metric columns (the pooled eval set when a task has several)."""
    per_task: dict[str, list[str]] = defaultdict(list)
    for c in data.metric_cols:
        task, ev, metric = (c.split("/") + ["", ""])[:3]
        if metric and not names.is_ours(c) and not ev.startswith("mean("):
            per_task[task].append(c)
    return {t: [c for c in cols if "+" in c.split("/")[1]] or cols for t, cols in per_task.items()}


@figure("fig3_val_loss_vs_{item}", lambda d, task: (
            f"Final validation loss vs the downstream metrics of fine-tuning task {task} (paper Figs 9a-f), one "
            "point per run (colour: weight decay)."),
        rows="downstream", items=lambda d: list(_paper_task_cols(d)),
        needs=Needs(columns=("val_loss",), reason="no runs with val_loss"))
def val_loss_vs_each_task(canvas, data, points, task) -> None:
    """Paper Figs 9a-f: final val loss vs each fine-tuning task's paper metrics, one point per run."""
    pts = [(p, p.get("val_loss")) for p in points if p.get("val_loss") is not None]
    fig, ax = canvas.new()
    for i, c in enumerate(_paper_task_cols(data)[task]):
        xy = [(x, p.get(c), p) for p, x in pts if p.get(c) is not None]
        ax[0][0].scatter([x for x, _, _ in xy], [y for _, y, _ in xy], marker="osD^v<>"[i % 7],
                         c=[canvas.color[p.wd] for _, _, p in xy], label=c.split("/", 1)[1], zorder=3)
    ax[0][0].set_xlabel("final val loss")
    ax[0][0].set_ylabel("score")
    ax[0][0].set_title(f"{task}: val loss vs downstream")
    ax[0][0].legend(fontsize=7)
    canvas.save(fig)


# ----------------------------------------------------------------------------------------------- App. D


def _stability_caption(data: ReportData, item) -> str:
    return ("Stability vs plasticity (paper App. D, Fig. 18): stability = mean cloze accuracy of the fine-tuned minus "
            f"the pretrained model (x) vs {data.phrase.split(' (')[0] or 'the headline'} (y), one point per run."
            + data.rows_cap)


@figure("fig8_stability_plasticity", _stability_caption, rows="downstream",
        needs=Needs(columns=(STABILITY_COL, HEADLINE_COL), together=True,
                    reason="no stability / downstream metric values in results.csv"))
def stability_plasticity(canvas, data, points, item) -> None:
    x_col = "stability" if "stability" in data.fields else "forgetting"  # forgetting: older results.csv
    sp = [(p.get(x_col), p.get(data.main_metric), p) for p in points]
    fig, ax = canvas.new()
    scatter_by_wd(ax[0][0], [(x, y, p) for x, y, p in sp if x is not None and y is not None], canvas.color)
    ax[0][0].set_xlabel("stability (change in mean cloze acc)" if x_col == "stability"
                        else "forgetting (pretraining loss increase; older results.csv)")
    ax[0][0].set_ylabel(data.main_metric)
    ax[0][0].set_title("Stability-plasticity")
    canvas.save(fig)


def _upstream_caption(data: ReportData, item) -> str:
    return ("Left: upstream accuracy (mean accuracy on the App. D cloze benchmarks) of the pretrained models and of "
            "the fine-tuned models (mean over the CoT fine-tuning tasks) vs pretraining weight decay. Right (paper Fig "
            f"17): {data.main_metric or 'the headline'} vs the fine-tuned models' upstream accuracy, one point per "
            "run." + data.rows_cap)


@figure("fig8_upstream_accuracy", _upstream_caption, rows="downstream",
        needs=Needs(columns=("upstream_acc", "upstream_acc_pretrained")))
def upstream_accuracy(canvas, data, points, item) -> None:
    """Paper App. D: the pretrained models' upstream accuracy (mean cloze accuracy on the stability tasks) vs
    weight decay and, Fig 17, the headline vs the fine-tuned models' upstream accuracy."""
    pre = agg(points, "upstream_acc_pretrained")  # measured by the evaluate nodes: completed rows only
    fin = agg(points, "upstream_acc")
    fig, ax = canvas.new(2)
    for i, (label, a) in enumerate((("pretrained", pre), ("fine-tuned", fin))):
        if a:
            errplot(ax[0][0], a, label=label, color=f"C{i}")
    wd_axis(ax[0][0], data.wds)
    ax[0][0].set_ylabel("upstream accuracy")
    ax[0][0].set_title("Upstream accuracy vs weight decay")
    ax[0][0].legend(fontsize=7)
    main = data.main_metric
    xy = [(p.get("upstream_acc"), p.get(main), p) for p in points] if main else []
    xy = [(x, y, p) for x, y, p in xy if x is not None and y is not None]
    if xy:
        scatter_by_wd(ax[0][1], xy, canvas.color)
    ax[0][1].set_xlabel("upstream accuracy after fine-tuning")
    ax[0][1].set_ylabel(main or "headline")
    ax[0][1].set_title("Plasticity vs upstream accuracy")
    canvas.save(fig)


# ----------------------------------------------------------------------------------------------- over pretraining


@figure("fig9_plasticity_over_pretraining", lambda d, item: (
            f"{_cap_first(d.phrase)} after fine-tuning from a fraction of pretraining, one line per weight decay "
            "(bands: 95% bootstrap CI over seeds)."),
        rows="completed", when=lambda d: bool(d.fracs and d.main_metric))
def plasticity_over_pretraining(canvas, data, points, item) -> None:
    """The headline fine-tuned from each ``finetune_from``, one line per weight decay: from each fraction the
    rows the other downstream figures take from the end (the best fine-tuning setting per run when one is
    swept, never every setting pooled as if seeds)."""
    fracs, main = data.fracs, data.main_metric
    at = {f: data.at_fraction(f) for f in fracs}
    fig, ax = canvas.new()
    for wd in data.wds:
        per = {f: [p.get(main) for p in at[f] if p.wd == wd] for f in fracs}
        xs = [f for f in fracs if any(v is not None for v in per[f])]
        groups = {f: [v for v in per[f] if v is not None] for f in xs}
        ms = [float(np.mean(groups[f])) for f in xs]
        ax[0][0].plot(xs, ms, "o-", color=canvas.color[wd], label=f"wd={wd:g}")
        if data.n_seeds >= 2:
            ci = bootstrap_ci_over_seeds({f: groups[f] for f in xs}, n_boot=1000, seed=0)
            lo, hi = [ci[f]["ci_low"] for f in xs], [ci[f]["ci_high"] for f in xs]
            ax[0][0].fill_between(xs, lo, hi, color=canvas.color[wd], alpha=0.15)
    ax[0][0].set_xlabel("fine-tuned from (fraction of pretraining)")
    ax[0][0].set_ylabel(main)
    ax[0][0].set_title("Plasticity over pretraining time")
    ax[0][0].legend(fontsize=7)
    canvas.save(fig)


# ----------------------------------------------------------------------------------------------- App. E.2


def _setting_cols(data: ReportData) -> list[str]:
    """The columns shown per fine-tuning setting: the report.headline's tasks, else the headline."""
    if data.headline_spec:
        return data.headline_cols if data.ds else []
    return [data.main_metric] if data.main_metric else []


def _at_last_fraction(data: ReportData) -> list[Point]:
    """Completed rows fine-tuned from the end of pretraining, as the other downstream figures."""
    rows = data.completed
    if slices.FROM in data.fields:
        last = max((f for f in (_num(p.row.get(slices.FROM)) for p in rows) if f is not None), default=None)
        rows = [p for p in rows if last is None or _num(p.row.get(slices.FROM)) == last]
    return rows


def _has_settings(data: ReportData) -> bool:
    return bool(slices.finetune_axes(data.fields) and _setting_cols(data))


def _setting(p: Point, axes: list[str]) -> tuple[str, ...]:
    return tuple(p.row.get(a, "") for a in axes)


@figure("fig2_per_finetune_setting", lambda d, item: (
            "Each headline column vs pretraining weight decay, one line per fine-tuning setting "
            f"({', '.join(slices.finetune_axes(d.fields))}), mean over seeds; paper Figs 21-22."),
        rows="completed", when=_has_settings)
def per_finetune_setting(canvas, data, points, item) -> None:
    """Paper App. E.2 with swept fine-tuning axes: each column vs weight decay, one line per setting."""
    axes, cols, rows = slices.finetune_axes(data.fields), _setting_cols(data), _at_last_fraction(data)
    settings = sorted({_setting(p, axes) for p in rows})
    fig, ax = canvas.new(len(cols))
    for a, col in zip(ax[0], cols, strict=True):
        for i, s in enumerate(settings):
            m = agg([p for p in rows if _setting(p, axes) == s], col)
            if m:
                a.plot(list(m), [v["mean"] for v in m.values()], marker=".", color=f"C{i % 10}",
                       label=" ".join(f"{x.split('.')[-1]}={v}" for x, v in zip(axes, s, strict=True)), lw=1)
        wd_axis(a, data.wds)
        a.set_ylabel(col)
        a.set_title(f"{col.split('/')[0]}: per fine-tuning setting")
    ax[0][-1].legend(fontsize=6)
    canvas.save(fig)


@figure("fig2_average_over_finetune_settings", lambda d, item: (
            "Each headline column averaged over the fine-tuning settings "
            f"({', '.join(slices.finetune_axes(d.fields))}) per pretraining run, vs pretraining weight decay; paper "
            "Fig 23 rows 1, 3, 5. Error bars: 95% bootstrap CI over seeds."),
        rows="completed", when=_has_settings)
def average_over_finetune_settings(canvas, data, points, item) -> None:
    """Paper Fig 23 rows 1, 3, 5: per pretraining run the mean over the settings (the report's other downstream
    figures take the best setting, rows 2, 4, 6)."""
    cols, rows = _setting_cols(data), _at_last_fraction(data)
    fig, ax = canvas.new(len(cols))
    for a, col in zip(ax[0], cols, strict=True):
        by_run: dict[str, list[Point]] = defaultdict(list)
        for p in rows:
            by_run[p.row.get("run", "")].append(p)
        groups: dict[float, list[float]] = defaultdict(list)
        for pts in by_run.values():
            vals = [v for v in (p.get(col) for p in pts) if v is not None]
            if vals:
                groups[pts[0].wd].append(float(np.mean(vals)))
        if groups:
            errplot(a, agg_groups(groups), color="C0")
        wd_axis(a, data.wds)
        a.set_ylabel(f"{col} (mean over settings)")
        a.set_title(f"{col.split('/')[0]}: average over settings")
    canvas.save(fig)


