"""``plasticity report STUDY [--out DIR]``: build the HTML report of a study (its directory or its YAML)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""
    from plasticity.console import user_errors

    @app.command("report")
    @user_errors
    def report(
        study: Path = typer.Argument(..., metavar="STUDY",
                                     help="study directory (<out_dir>/<name>/ with results.csv) or the study YAML"),
        out: Path = typer.Option(None, "--out", help="output directory (default: <study dir>/report)"),
        export: Path = typer.Option(None, "--export", metavar="DIR",
                                    help="copy results.csv, study.json and each run's small files (configs, "
                                         "summaries, metrics, analyses, eval results; no weights or samples) "
                                         "to DIR, then build the report from that copy (DIR/<name>/report)"),
        headline: str = typer.Option(None, "--headline", metavar="TASK=METRIC,...",
                                     help="report this headline instead of the study's report.headline (e.g. "
                                          "addition=greedy,sst2=acc_template); needs --out, so the study's own "
                                          "report stays as it was"),
    ) -> None:
        """Write figures, a results table and a summary of a study as <study dir>/report/index.html."""
        from plasticity.errors import UserError
        from plasticity.report.build import build_report

        study_dir = study_dir_of_arg(study)
        if headline is not None and out is None:
            raise UserError("--headline needs --out DIR (the study's own report keeps its report.headline)")
        if out is not None:
            check_report_out(study_dir, out, headline is not None)
        if export is not None:
            from plasticity.report.export import export_study

            if out is not None:
                raise UserError("--out and --export: give one (--export builds the report in DIR/<name>/report)")

            study_dir, n, size = export_study(study_dir, export)
            typer.echo(f"exported {n} files ({size / 1e6:.2f} MB) to {study_dir}", err=True)
        path = build_report(study_dir, None if export is not None else out,
                            headline=None if headline is None else parse_headline(headline))
        typer.echo(str(path))


def check_report_out(study_dir: Path, out: Path, other_headline: bool) -> None:
    """``--out`` may not be the study directory (its results.csv would be copied onto itself) nor, with
    ``--headline``, the study's own ``report/`` (which keeps the study's headline); one line, exit 2."""
    from plasticity.errors import UserError
    from plasticity.files import check_output_dir

    study, dest = Path(study_dir).resolve(), Path(out).expanduser().resolve()
    if dest == study:
        raise UserError(f"--out {out}: is the study directory itself; give a folder of its own "
                        f"(default: {study / 'report'})")
    if other_headline and dest == study / "report":
        raise UserError(f"--out {out}: is the study's own report, which keeps its report.headline; give another "
                        "folder for the --headline report")
    check_output_dir(out, "--out")


def parse_headline(text: str) -> dict[str, str]:
    """``"addition=greedy,sst2=acc"`` -> ``{"addition": "greedy", "sst2": "acc"}``."""
    from plasticity.errors import UserError

    pairs = [p.strip().split("=") for p in text.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise UserError(f"--headline {text!r}: give TASK=METRIC pairs separated by commas, "
                        "e.g. addition=greedy,sst2=acc")
    from plasticity.results_columns import METRIC_NAME, METRIC_NAMES

    bad = [m.strip() for _, m in pairs if METRIC_NAME.fullmatch(m.strip()) is None]
    if bad:  # the same names a study's report.headline accepts
        raise UserError(f"--headline: {bad[0]!r}: not a metric name ({METRIC_NAMES})")
    return {t.strip(): m.strip() for t, m in pairs}


def study_dir_of_arg(study: Path) -> Path:
    """`study` itself when it is a directory, else the directory ``<out_dir>/<name>/`` of the study YAML `study`."""
    if study.is_dir() or not study.is_file():
        return study  # a missing path: build_report names it
    from plasticity.study.run_study import study_dir_of
    from plasticity.study.spec import load_spec

    return study_dir_of(load_spec(study))
