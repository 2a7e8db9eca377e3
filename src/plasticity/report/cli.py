"""``plasticity report STUDY_DIR [--out DIR]``: build the HTML report of a study directory."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""
    from ..console import user_errors

    @app.command("report")
    @user_errors
    def report(
        study_dir: Path = typer.Argument(..., help="study directory (<out_dir>/<name>/ with results.csv)"),
        out: Path = typer.Option(None, "--out", help="output directory (default: STUDY_DIR/report)"),
        export: Path = typer.Option(None, "--export", metavar="DIR",
                                    help="copy results.csv, study.json and each run's small files (configs, "
                                         "summaries, metrics, analyses, eval results; no weights or samples) "
                                         "to DIR, then build the report from that copy (DIR/<name>/report)"),
    ) -> None:
        """Write figures, a results table and a summary of a study as STUDY_DIR/report/index.html."""
        from .build import build_report

        if export is not None:
            from ..errors import UserError
            from .export import export_study

            if out is not None:
                raise UserError("--out and --export: give one (--export builds the report in DIR/<name>/report)")

            study_dir, n, size = export_study(study_dir, export)
            typer.echo(f"exported {n} files ({size / 1e6:.2f} MB) to {study_dir}", err=True)
        path = build_report(study_dir, None if export is not None else out)
        typer.echo(str(path))
