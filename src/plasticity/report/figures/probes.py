"""Linear-probe figures (paper Figs 24, 25): test accuracy per layer per probe set, train and test accuracy
averaged over the sets, and the best layer's averaged accuracy vs the headline."""

from __future__ import annotations

from plasticity.analysis.columns import probe_layer_means, probe_mean_best
from plasticity.analysis.stats import finite_or_none as _num
from plasticity.report.data import Point, ReportData
from plasticity.report.figures.base import HEADLINE_COL, Missing, Needs, figure
from plasticity.report.figures.plot import scatter_by_wd

_PER_SET = "Linear-probe test accuracy per layer, one line per run (colour: weight decay; dash: seed), probe set {}."


def _set_lines(points: list[Point]) -> dict[str, list[tuple[Point, list[int], list[float]]]]:
    """Per probe set (first-seen order): (run, layers, test accuracies) of each run that has it."""
    sets: dict[str, list[tuple[Point, list[int], list[float]]]] = {}
    for p in points:
        for name, s in ((p.analysis("probes") or {}).get("sets") or {}).items():
            layers = [(d["layer"], d["test_accuracy"]) for d in s.get("layers", []) if _num(d.get("test_accuracy"))]
            if layers:
                sets.setdefault(name, []).append((p, [ly for ly, _ in layers], [acc for _, acc in layers]))
    return sets


@figure("fig4_probe_{item}", lambda d, name: _PER_SET.format("(any)" if name is None else name),
        items=lambda d: list(_set_lines(d.points)), no_items="no analysis/probes.json in the run directories")
def probe_per_layer(canvas, data, points, name) -> None:
    """Test accuracy per layer of one probe set, one line per run."""
    fig, ax = canvas.new()
    for p, ls, accs in sorted(_set_lines(points)[name], key=lambda t: t[0].wd):
        ax[0][0].plot(ls, accs, marker="o", **canvas.style[id(p)])
    ax[0][0].set_xlabel("layer")
    ax[0][0].set_ylabel("probe test accuracy")
    ax[0][0].set_title(f"Probe accuracy per layer: {name}")
    ax[0][0].legend(fontsize=7)
    canvas.save(fig)


_NO_AVERAGE = "no analysis/probes.json with train and test accuracy"


@figure("fig4_probe_average", "Linear-probe train (left) and test (right) accuracy per layer, averaged over the "
        "probe sets, one line per run (colour: weight decay; dash: seed); paper Fig 24.",
        needs=Needs(analysis=("probes",), reason=_NO_AVERAGE))
def probe_average(canvas, data, points, item) -> None:
    """Paper Fig 24 (right columns): per layer, probe train and test accuracy averaged over the probe sets."""
    lines = [(p, *probe_layer_means(p.analysis("probes"))) for p in points]
    lines = [ln for ln in lines if ln[1]]
    if not lines:
        raise Missing(_NO_AVERAGE)
    fig, ax = canvas.new(2)
    for p, layers, train, test in sorted(lines, key=lambda t: t[0].wd):
        ax[0][0].plot(layers, train, marker="o", **canvas.style[id(p)])
        ax[0][1].plot(layers, test, marker="o", **canvas.style[id(p)])
    for a, k in ((ax[0][0], "train"), (ax[0][1], "test")):
        a.set_xlabel("layer")
        a.set_ylabel(f"probe {k} accuracy (mean over sets)")
        a.set_title(f"Probe {k} accuracy, averaged over sets")
    ax[0][1].legend(fontsize=7)
    canvas.save(fig)


def probe_vs_headline_pairs(data: ReportData, points: list[Point]) -> list[tuple[float, float, Point]]:
    """(best-layer probe accuracy averaged over the sets, headline, run) of each run that has both."""
    main = data.main_metric
    pts = [(probe_mean_best(p.analysis("probes")), p.get(main), p) for p in points] if main else []
    return [(x, y, p) for x, y, p in pts if x is not None and y is not None]


_NO_PAIRS = "no runs with both probes.json and the headline"


@figure("fig4_probe_vs_headline", lambda d, item: (
            "Best-layer probe test accuracy (averaged over the probe sets per layer, then the best layer) vs "
            f"{d.main_metric or 'the headline'}, one point per run; paper Fig 25."),
        rows="downstream", needs=Needs(columns=(HEADLINE_COL,), analysis=("probes",), reason=_NO_PAIRS))
def probe_vs_headline(canvas, data, points, item) -> None:
    """Paper Fig 25: the best layer's test accuracy averaged over the probe sets vs the headline, per run."""
    pts = probe_vs_headline_pairs(data, points)
    if not pts:
        raise Missing(_NO_PAIRS)
    fig, ax = canvas.new()
    scatter_by_wd(ax[0][0], pts, canvas.color)
    ax[0][0].set_xlabel("best-layer probe accuracy (mean over sets)")
    ax[0][0].set_ylabel(data.main_metric)
    ax[0][0].set_title("Probe accuracy vs downstream")
    canvas.save(fig)
