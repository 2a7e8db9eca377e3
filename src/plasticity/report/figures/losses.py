"""Pretraining losses: final val loss (the paper's x axis), the generalization gaps and Eq. 3's two losses,
the loss curves (paper Fig 6)."""

from __future__ import annotations

from collections import defaultdict

from plasticity import results_columns as names
from plasticity.analysis.stats import finite_or_none as _num
from plasticity.report.data import agg, agg_groups
from plasticity.report.figures.base import Missing, Needs, figure
from plasticity.report.figures.plot import errplot, wd_axis


@figure("fig1_val_loss_vs_wd", "Final validation loss vs pretraining weight decay (error bars: 95% bootstrap CI "
        "over seeds).", needs=Needs(columns=("val_loss",)))
def val_loss_vs_wd(canvas, data, points, item) -> None:
    val = agg(points, "val_loss")
    fig, ax = canvas.new()
    errplot(ax[0][0], val, color="C0")
    wd_axis(ax[0][0], list(val))
    ax[0][0].set_ylabel("final val loss")
    ax[0][0].set_title("Validation loss vs weight decay")
    canvas.save(fig)


GAPS_CAPTION = ("Train-val loss gap (paper Eq. 3) and unseen-seen loss gap (ours) vs pretraining weight decay: the "
                "final model's loss on sampled validation (unseen training) sequences minus that on sampled training "
                "sequences it was trained on.")


@figure("fig6_gaps_vs_wd", GAPS_CAPTION, needs=Needs(columns=("train_val_gap", "unseen_seen_gap")))
def gaps_vs_wd(canvas, data, points, item) -> None:
    gaps = {c: agg(points, c) for c in ("train_val_gap", "unseen_seen_gap")}
    fig, ax = canvas.new()
    for i, (c, g) in enumerate(gaps.items()):
        if g:
            errplot(ax[0][0], g, label=names.ours(c.replace("_", " "), c), color=f"C{i}")
    ax[0][0].axhline(0, color="0.6", lw=0.8)
    wd_axis(ax[0][0], data.wds)
    ax[0][0].set_ylabel("loss gap")
    ax[0][0].set_title("Generalization gaps vs weight decay")
    ax[0][0].legend(fontsize=7)
    canvas.save(fig)


CURVES_CAPTION = ("Training loss (each logged step's mean next-token loss) and validation loss over pretraining, one "
                  "line per run (colour: weight decay; dash: seed); paper Fig 6.")


@figure("fig6_loss_curves", CURVES_CAPTION, needs=Needs(metrics=True))
def loss_curves(canvas, data, points, item) -> None:
    """Paper Fig 6 (left, middle): training loss (logged steps) and validation loss (eval points) over training,
    one line per run, from each pretraining run's metrics.jsonl."""
    curves = []
    for p in points:
        recs = p.metrics()
        train = [(r["step"], r["loss"]) for r in recs if _num(r.get("loss")) is not None and "step" in r]
        val = [(r["step"], r["val_loss"]) for r in recs if _num(r.get("val_loss")) is not None and "step" in r]
        if train or val:
            curves.append((p, train, val))
    if not curves:
        raise Missing("no metrics.jsonl in the pretraining run directories")
    fig, ax = canvas.new(2)
    for p, train, val in sorted(curves, key=lambda c: c[0].wd):
        ax[0][0].plot([s for s, _ in train], [v for _, v in train], **canvas.style[id(p)])
        ax[0][1].plot([s for s, _ in val], [v for _, v in val], marker=".", **canvas.style[id(p)])
    for a, name in ((ax[0][0], "training loss"), (ax[0][1], "validation loss")):
        a.set_xlabel("step")
        a.set_ylabel(name)
        a.set_title(f"{name[:1].upper()}{name[1:]} over pretraining")
    ax[0][1].legend(fontsize=7)
    canvas.save(fig)


EQ3_CAPTION = ("Eq. 3's two losses of the final model vs pretraining weight decay: on m training sequences it was "
               "trained on and on m validation sequences (both drawn uniformly, seed 0; their difference is the "
               "train-val gap). Error bars: 95% bootstrap CI over seeds.")
_NO_EQ3 = "no analysis/gap.json with train_val losses"


@figure("fig6_train_val_losses_vs_wd", EQ3_CAPTION, needs=Needs(analysis=("gap",), reason=_NO_EQ3))
def eq3_losses(canvas, data, points, item) -> None:
    """Paper Fig 6 and Eq. 3: the final model's loss on sampled training sequences it trained on and on sampled
    validation sequences (gap.json), vs weight decay."""
    sides: dict[str, list] = {"training (seen) sequences": [], "validation sequences": []}
    for p in points:
        tv = (p.analysis("gap") or {}).get("train_val") or {}
        for side, key in zip(sides, ("train_loss", "val_loss"), strict=True):
            if _num(tv.get(key)) is not None:
                sides[side].append((p, float(tv[key])))
    if not any(sides.values()):
        raise Missing(_NO_EQ3)
    fig, ax = canvas.new()
    for i, (side, vals) in enumerate(sides.items()):
        groups: dict[float, list[float]] = defaultdict(list)
        for p, v in vals:
            groups[p.wd].append(v)
        if groups:
            errplot(ax[0][0], agg_groups(groups), label=side, color=f"C{i}")
    wd_axis(ax[0][0], data.wds)
    ax[0][0].set_ylabel("loss of the final model")
    ax[0][0].set_title("Eq. 3: training and validation loss")
    ax[0][0].legend(fontsize=7)
    canvas.save(fig)
