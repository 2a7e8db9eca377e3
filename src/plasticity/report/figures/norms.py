"""Weight-norm figures: the fraction of the total norm per layer group, and the input / intermediate / output
layer norms vs weight decay (paper Fig 29)."""

from __future__ import annotations

import numpy as np

from plasticity.analysis.stats import finite_or_none as _num
from plasticity.report.data import agg_groups
from plasticity.report.figures.base import Missing, Needs, figure
from plasticity.report.figures.plot import errplot, wd_axis

_NO_NORMS = "no analysis/norms.json in the run directories"


@figure("fig7_norm_fraction", "Fraction of the total parameter norm per layer group (final model), one line per run "
        "(colour: weight decay; dash: seed).", needs=Needs(analysis=("norms",)))
def norm_fraction(canvas, data, points, item) -> None:
    lines = []
    for p in points:
        groups = [(g["name"], g["fraction"]) for g in (p.analysis("norms") or {}).get("groups") or []
                  if _num(g.get("fraction")) is not None]
        if groups:
            lines.append((p, groups))
    if not lines:
        raise Missing(_NO_NORMS)
    fig, ax = canvas.new()
    fig.set_size_inches(max(4.2, 0.6 * len(lines[0][1]) + 2), 3.4)
    order = [n for n, _ in lines[0][1]]
    for p, groups in sorted(lines, key=lambda t: t[0].wd):
        d = dict(groups)
        ax[0][0].plot(range(len(order)), [d.get(n, np.nan) for n in order], marker="o", **canvas.style[id(p)])
    ax[0][0].set_xticks(range(len(order)))
    ax[0][0].set_xticklabels(order, rotation=45, ha="right", fontsize=7)
    ax[0][0].set_ylabel("norm fraction")
    ax[0][0].set_title("Norm fraction per layer group")
    ax[0][0].legend(fontsize=7)
    canvas.save(fig)


_NO_GROUPS = "no analysis/norms.json with per-group norms"


@figure("fig7_group_norms_vs_wd", "L2 norm of the input layer (embedding), an intermediate layer (mean over the "
        "blocks) and the output layer (lm_head) vs pretraining weight decay; paper Fig 29. Error bars: 95% "
        "bootstrap CI over seeds.", needs=Needs(analysis=("norms",), reason=_NO_GROUPS))
def group_norms_vs_wd(canvas, data, points, item) -> None:
    """Paper Fig 29: L2 norm of the input layer (embedding), the intermediate layers (mean over blocks) and the
    output layer (lm_head) vs weight decay."""
    parts: dict[str, dict[float, list[float]]] = {"input layer": {}, "intermediate layer": {}, "output layer": {}}
    for p in points:
        groups = {g.get("name"): _num(g.get("norm")) for g in (p.analysis("norms") or {}).get("groups") or []}
        blocks = [v for k, v in groups.items() if str(k).startswith("layers.") and v is not None]
        for part, v in (("input layer", groups.get("embedding")), ("output layer", groups.get("lm_head")),
                        ("intermediate layer", float(np.mean(blocks)) if blocks else None)):
            if v is not None:
                parts[part].setdefault(p.wd, []).append(v)
    parts = {k: v for k, v in parts.items() if v}
    if not parts:
        raise Missing(_NO_GROUPS)
    fig, ax = canvas.new(len(parts))
    for a, (part, groups) in zip(ax[0], parts.items(), strict=True):
        errplot(a, agg_groups(groups), color="C0")
        wd_axis(a, data.wds)
        a.set_ylabel("L2 norm")
        a.set_title(part)
    canvas.save(fig)
