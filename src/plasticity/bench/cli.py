"""The `plasticity bench` command (kept apart from `bench` so that the CLI starts without importing torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal


def register(app: Any) -> None:
    """Add the `bench` command to the CLI."""
    import typer

    @app.command(rich_help_panel="Developer tools")
    def bench(
        quick: bool = typer.Option(False, "--quick", help="fewer repeats and presets (< 5 minutes on 2 cores)"),
        tiny: bool = typer.Option(False, "--tiny", help="toy sizes: checks that every section runs (seconds)"),
        ablation: bool = typer.Option(False, "--ablation", help="also time our loop with each lever off / on"),
        json_path: Path = typer.Option(None, "--json", help="also write the JSON record to this file"),
        threads: int = typer.Option(None, help="torch threads (default: torch's, one per core)"),
        clock: Literal["wall", "cpu"] = typer.Option("wall", help="wall time, or cpu: this process's CPU time "
                                                                   "(for a shared machine, with --threads 1)"),
    ) -> None:
        """Developer tool: time our training loop, sampler, cloze scoring and analysis against plain baselines."""
        import sys

        from plasticity.bench.suite import run, set_clock, table

        set_clock(clock)
        from plasticity.console import log

        if threads:
            import torch

            torch.set_num_threads(threads)
        mode = "tiny" if tiny else "quick" if quick else "full"
        rec = run(mode, log=log, ablation=ablation)
        print(table(rec))
        line = json.dumps(rec)
        print(line)
        if json_path is not None:
            json_path.write_text(line + "\n", encoding="utf-8")
        sys.stdout.flush()
