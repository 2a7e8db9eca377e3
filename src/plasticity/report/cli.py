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
    ) -> None:
        """Write figures, a results table and a summary of a study as STUDY_DIR/report/index.html."""
        from .build import build_report

        path = build_report(study_dir, out)
        typer.echo(str(path))
