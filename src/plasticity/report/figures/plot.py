"""Drawing helpers shared by the figures: weight-decay axes, error bars, colours and line styles."""

from __future__ import annotations

from typing import Any

import numpy as np

from plasticity import results_columns as names
from plasticity.analysis.stats import finite_or_none as _num
from plasticity.report.data import Point, agg

LINESTYLES = ("-", "--", ":", "-.")


def ours_note(cols: list[str]) -> str:
    """A caption's closing sentence when some of `cols` are our additions, not the paper's."""
    return (" Entries marked (ours) are our additions, not quantities of the paper." if any(
        names.is_ours(c) for c in cols) else "")


def widen_degenerate(ax) -> None:
    """Values equal up to rounding (0.025 vs 0.025000000000000001) make an axis span ~1e-17, whose tick labels
    are unreadable: give such an axis +-5% around its centre instead."""
    for get, set_, scale in ((ax.get_xlim, ax.set_xlim, ax.get_xscale), (ax.get_ylim, ax.set_ylim, ax.get_yscale)):
        lo, hi = get()
        mag = max(abs(lo), abs(hi))
        if scale() == "linear" and mag > 0 and hi - lo < 1e-9 * mag:
            c = (lo + hi) / 2
            d = max(0.05 * abs(c), 1e-3)
            set_(c - d, c + d)


def wd_axis(ax, wds: list[float]) -> None:
    pos = [w for w in wds if w > 0]
    if any(w <= 0 for w in wds) or (pos and max(pos) / min(pos) > 20):
        ax.set_xscale("symlog", linthresh=min(pos) if pos else 1e-3)
        ax.relim()  # margins in symlog space (limits computed before the scale change leave edge markers cut)
        ax.autoscale_view()
    ax.set_xticks(wds)
    ax.set_xticklabels([f"{w:g}" for w in wds])
    ax.set_xlabel("pretraining weight decay")


def errplot(ax, agg: dict[float, dict[str, Any]], label: str | None = None, **kw) -> None:
    wds = list(agg)
    means = np.array([agg[w]["mean"] for w in wds])
    if any(agg[w]["n"] >= 2 for w in wds):
        lo = means - np.array([agg[w]["ci_low"] for w in wds])
        hi = np.array([agg[w]["ci_high"] for w in wds]) - means
        ax.errorbar(wds, means, yerr=[lo, hi], marker="o", capsize=3, label=label, **kw)
    else:
        ax.plot(wds, means, marker="o", label=label, **kw)


def metrics_vs_wd(canvas, ds: list[Point], wds: list[float], cols: list[str], ylabel: str, title: str):
    """Each `<prefix>/<rest>` column of `cols` vs weight decay (labelled by `<rest>`), seed CIs: scores in one
    panel, losses (``*_loss``, another scale, lower is better) in a second one when there are any."""
    panels = [([c for c in cols if not c.endswith("_loss")], ylabel, title),
              ([c for c in cols if c.endswith("_loss")], "loss (lower is better)", "held-out loss")]
    panels = [pn for pn in panels if pn[0]]
    fig, ax = canvas.new(len(panels))
    i = 0
    for a, (pcols, label, ptitle) in zip(ax[0], panels, strict=True):
        for c in pcols:
            errplot(a, agg(ds, c), label=names.ours(c.split("/", 1)[-1], c), color=f"C{i % 10}")
            i += 1
        wd_axis(a, wds)
        a.set_ylabel(label)
        a.set_title(ptitle)
        a.legend(fontsize=7)
    return fig


def scatter_by_wd(ax, xy: list[tuple[float, float, Point]], color: dict[float, Any]) -> None:
    """One point per run coloured by weight decay, one legend entry per weight decay."""
    for x, y, p in xy:
        ax.scatter(x, y, color=color[p.wd], label=f"wd={p.wd:g}", zorder=3)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)


def colors(plt, wds: list[float]) -> dict[float, Any]:
    cmap = plt.get_cmap("viridis")
    n = max(len(wds) - 1, 1)
    return {w: cmap(0.9 * i / n) for i, w in enumerate(wds)}


def run_style(points: list[Point], color: dict[float, Any]) -> dict[int, dict[str, Any]]:
    """Line style per run (figures with one line per run): colour by weight decay, dash pattern by seed, so
    the seeds of one weight decay stay apart."""
    seeds = sorted({p.seed for p in points if p.seed is not None}, key=lambda s: (_num(s) is None, _num(s) or 0, s))
    dash = {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(seeds)}
    return {id(p): {"color": color[p.wd], "linestyle": dash.get(p.seed, "-"), "label": p.label} for p in points}
