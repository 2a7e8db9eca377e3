"""Attention pseudo-rank over training (paper Figs 5, 26, 27): the mean over all layers and heads, and over
the paper's layers."""

from __future__ import annotations

from plasticity.analysis.rank import mean_over_layers, selected_layers
from plasticity.report.data import Point
from plasticity.report.figures.base import Missing, Needs, figure

_NO_RANK = "no analysis/rank.json in the run directories"


@figure("fig5_rank_over_training", "Mean QK and VP pseudo-rank fraction (over layers and heads) during training, one "
        "line per run (colour: weight decay; dash: seed).", needs=Needs(analysis=("rank",)))
def rank_over_training(canvas, data, points, item) -> None:
    lines = []
    for p in points:
        cps = (p.analysis("rank") or {}).get("checkpoints") or []
        pts = sorted((c["step"], c["mean"]["qk"]["fraction"], c["mean"]["vp"]["fraction"]) for c in cps
                     if isinstance(c.get("mean"), dict) and "qk" in c["mean"] and "vp" in c["mean"])
        if pts:
            lines.append((p, pts))
    if not lines:
        raise Missing(_NO_RANK)
    _draw(canvas, lines, lambda k: f"{k} rank fraction over training")


def _layer_lines(points: list[Point]) -> tuple[list, str]:
    """Per run (step, qk, vp) averaged over the selected layers, and the layers used ("5;15 / ...")."""
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
    return lines, " / ".join(sorted(used)) or "?"


def _layers_caption(data, item) -> str:
    layers = _layer_lines(data.points)[1]
    return (f"QK and VP pseudo-rank fraction averaged over the heads of layers {layers.replace(';', ' and ')} "
            "(0-based; the paper's Figs 5, 26, 27 use layers 5 and 15) over training, one line per run (colour: "
            "weight decay; dash: seed).")


_NO_LAYERS = "no analysis/rank.json with per-layer ranks"


@figure("fig5_rank_layers_over_training", _layers_caption, needs=Needs(analysis=("rank",), reason=_NO_LAYERS))
def rank_layers_over_training(canvas, data, points, item) -> None:
    """Paper Figs 5, 26, 27: QK and VP pseudo-rank fraction averaged over the paper's layers (5 and 15; the
    study's ``rank_layers``; a shallower model: the same relative depths) per checkpoint, one line per run."""
    lines, layers = _layer_lines(points)
    if not lines:
        raise Missing(_NO_LAYERS)
    _draw(canvas, lines, lambda k: f"{k}, layers {layers.replace(';', ' and ')}")


def _draw(canvas, lines, title) -> None:
    fig, ax = canvas.new(2)
    for p, pts in sorted(lines, key=lambda t: t[0].wd):
        ax[0][0].plot([s for s, _, _ in pts], [q for _, q, _ in pts], marker=".", **canvas.style[id(p)])
        ax[0][1].plot([s for s, _, _ in pts], [v for _, _, v in pts], marker=".", **canvas.style[id(p)])
    for a, k in ((ax[0][0], "QK"), (ax[0][1], "VP")):
        a.set_xlabel("step")
        a.set_ylabel(f"{k} pseudo-rank fraction")
        a.set_title(title(k))
    ax[0][1].legend(fontsize=7)
    canvas.save(fig)
