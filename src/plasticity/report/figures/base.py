"""The figure registry: one `Figure` per plot (its name, caption, which rows it draws, what it needs, how it
draws), registered with `@figure` like lm-eval's tasks, and the `Canvas` the figures are saved on.

A figure whose needs are missing is not drawn: the report shows its caption and the stated reason instead
(``Skipped: ...``). A figure that does not apply to the study's shape (``when``: e.g. fine-tuning from several
points of pretraining) is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasticity.report.data import Point, ReportData, RowSet

HEADLINE_COL = "<headline>"  # in Needs.columns: the report's headline column
STABILITY_COL = "<stability>"  # in Needs.columns: stability (forgetting in results.csv of older versions)


class Missing(Exception):  # noqa: N818 (a skip reason, not an error)
    """Raised by a figure's draw function: the data it needs is absent (the message says what)."""


@dataclass(frozen=True)
class Needs:
    """What a figure needs in its rows, checked before it draws. ``columns``: a value of any of them (of all of
    them on one row with ``together``) in at least ``min_points`` rows; ``analysis``: some run with
    ``analysis/<name>.json`` for each name; ``metrics``: some run with ``metrics.jsonl``; ``reason``: the stated
    reason when a need is missing (default: one naming it)."""

    columns: tuple[str, ...] = ()
    together: bool = False
    min_points: int = 1
    analysis: tuple[str, ...] = ()
    metrics: bool = False
    reason: str | None = None

    def missing(self, data: ReportData, points: list[Point]) -> str | None:
        """Why the figure cannot be drawn from `points` (None: nothing is missing)."""
        cols = [column(data, c) for c in self.columns]
        if self.columns:
            have = [p for p in points if (all if self.together else any)(c and p.get(c) is not None for c in cols)]
            if len(have) < self.min_points:
                names = " / ".join(c or self.columns[i] for i, c in enumerate(cols))
                return self.reason or (f"fewer than {self.min_points} runs with {names}" if self.min_points > 1
                                       else f"no {names} values in results.csv")
        elif len(points) < self.min_points:
            return self.reason or f"fewer than {self.min_points} rows"
        for name in self.analysis:
            if not any(p.analysis(name) for p in points):
                return self.reason or f"no analysis/{name}.json in the run directories"
        if self.metrics and not any(p.metrics() for p in points):
            return self.reason or "no metrics.jsonl in the pretraining run directories"
        return None


def column(data: ReportData, name: str) -> str | None:
    """A results.csv column of `Needs.columns` (the `HEADLINE_COL` / `STABILITY_COL` tokens resolved)."""
    if name == HEADLINE_COL:
        return data.main_metric
    if name == STABILITY_COL:
        return "stability" if "stability" in data.fields else "forgetting"
    return name


Caption = str | Callable[[ReportData, Any], str]


@dataclass(frozen=True)
class Figure:
    """One plot of the report.

    ``name``: the file stem (``<name>.png`` and ``.svg``), with ``{item}`` for one figure per item (per task,
    probe set, ...); ``caption``: text or ``caption(data, item)``; ``rows``: which rows it draws (`ReportData`);
    ``needs``: checked first, a missing need skips it with a stated reason; ``when(data)``: whether it applies
    to the study at all; ``items(data)``: the items of a per-item figure (none: skipped with ``no_items`` when
    given, else absent); ``draw(canvas, data, points, item)``: makes and saves it, may raise `Missing`."""

    name: str
    caption: Caption
    draw: Callable[..., None]
    rows: RowSet = "runs"
    needs: Needs = field(default_factory=Needs)
    when: Callable[[ReportData], bool] | None = None
    items: Callable[[ReportData], list[Any]] | None = None
    no_items: str | None = None

    def caption_for(self, data: ReportData, item: Any = None) -> str:
        return self.caption if isinstance(self.caption, str) else self.caption(data, item)

    def file_name(self, item: Any = None) -> str:
        return self.name.replace("{item}", safe_name(str(item))) if item is not None else self.name

    def render(self, canvas: Canvas, data: ReportData) -> None:
        """Draw this figure (each of its items) on `canvas`, or record why it is skipped."""
        if self.when is not None and not self.when(data):
            return
        points = data.select(self.rows)
        items = self.items(data) if self.items is not None else [None]
        if not items and self.no_items is not None:
            canvas.skip(self.caption_for(data, None), self.no_items)
        for item in items:
            reason = self.needs.missing(data, points)
            if reason is None:
                try:
                    canvas.current = (self.file_name(item), self.caption_for(data, item))
                    self.draw(canvas, data, points, item)
                    continue
                except Missing as e:
                    reason = str(e)
            canvas.skip(self.caption_for(data, item), reason)


REGISTRY: dict[str, Figure] = {}


def figure(name: str, caption: Caption, **kw: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated ``draw(canvas, data, points, item)`` as the figure `name` (see `Figure`)."""

    def register(draw: Callable[..., None]) -> Callable[..., None]:
        if name in REGISTRY:
            raise ValueError(f"figure {name!r} registered twice")
        REGISTRY[name] = Figure(name, caption, draw, **kw)
        return draw

    return register


def safe_name(text: str) -> str:
    """`text` as a file-name part: letters, digits, ``-`` and ``_``; anything else becomes ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


# ----------------------------------------------------------------------------------------------- canvas


class Canvas:
    """Where figures are drawn and saved (``<name>.png`` + ``.svg`` in `out_dir`), with the report's colours
    (by weight decay) and line styles (per run), and the list of entries (drawn or skipped) for the HTML."""

    def __init__(self, out_dir: Path, data: ReportData | None = None):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from plasticity.report.figures.plot import colors, run_style

        self.plt = plt
        self.out_dir = Path(out_dir)
        self.entries: list[dict[str, Any]] = []
        self.current = ("figure", "")  # the name and caption of the figure being drawn (`Figure.render`)
        # what error bars are: a seed range with 2 seeds (a bootstrap over 2 values gives no more)
        self.interval = "95% bootstrap CI over seeds"
        if data is not None and data.n_seeds == 2:
            self.interval = "seed range (min-max of the 2 seeds: a bootstrap over 2 seeds gives no more)"
        self.color = colors(plt, data.wds) if data is not None else {}
        self.style = run_style(data.points, self.color) if data is not None else {}
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

    def save(self, fig, name: str | None = None, caption: str | None = None) -> None:
        """Save `fig` as ``<name>.png`` and ``.svg`` (default: the figure being drawn, with its caption)."""
        from plasticity.report.figures.plot import widen_degenerate

        name = name or self.current[0]
        caption = self.current[1] if caption is None else caption
        caption = caption.replace("95% bootstrap CI over seeds", self.interval)
        wide = fig.get_size_inches()[0] > 6  # multi-panel: full row in the HTML grid
        for ax in fig.axes:
            widen_degenerate(ax)
        fig.tight_layout()
        fig.savefig(self.out_dir / f"{name}.png")
        fig.savefig(self.out_dir / f"{name}.svg")
        self.plt.close(fig)
        self.entries.append({"name": name, "caption": caption, "note": None, "wide": wide})

    def skip(self, caption: str, note: str) -> None:
        self.entries.append({"name": None, "caption": caption, "note": note, "wide": True})
