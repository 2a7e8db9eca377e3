"""Build ``<study_dir>/report/index.html`` with paper-style figures and a summary of what the numbers show.

Only this study's numbers are described; nothing is claimed beyond them. The data is read once (`ReportData`,
report/data.py); each figure is a registered `Figure` (report/figures/); figures whose data is absent are skipped
with a note in the HTML.
"""

from __future__ import annotations

import csv
import html
import shutil
from pathlib import Path
from typing import Any

from plasticity.analysis.stats import finite_or_none as _num
from plasticity.errors import UserError
from plasticity.files import write_json
from plasticity.report import summary as summary_mod
from plasticity.report.data import load_report_data, read_results
from plasticity.report.figures import Canvas, figures


def build_report(study_dir: Path, out_dir: Path | None = None, headline: dict[str, str] | None = None) -> Path:
    """Write ``index.html``, figures (PNG + SVG), ``summary.json``, a copy of ``results.csv`` (and with a
    report.headline ``downstream.csv``); return the HTML path.

    ``out_dir`` defaults to ``<study_dir>/report``; ``headline`` ({task: metric}) replaces the study's
    ``report.headline``. Raises :class:`UserError` for a missing or invalid study.
    """
    study_dir = Path(study_dir)
    fields, rows = read_results(study_dir)
    if "checkpoint" in fields and not any(f.endswith("weight_decay") for f in fields):
        if headline is not None:
            raise UserError("--headline: a checkpoints study has no weight-decay headline")
        return _checkpoints_report(study_dir, fields, rows, out_dir)
    data = load_report_data(study_dir, fields, rows, headline)
    out = Path(out_dir) if out_dir is not None else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study_dir / "results.csv", out / "results.csv")
    if data.ds_rows is not None:  # a report.headline's rows: each task at its own best fine-tuning setting
        _write_csv(out / "downstream.csv", data.ds_rows)
    canvas = Canvas(out, data)
    for fig in figures():
        fig.render(canvas, data)
    text = summary_mod.sentences(data)
    write_json(out / "summary.json", summary_mod.summary_json(data, text))
    path = out / "index.html"
    path.write_text(_html(study_dir, fields, rows, text, canvas.entries))
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """`rows` as CSV, columns in first-seen order."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


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
