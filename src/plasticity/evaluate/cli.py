"""The ``evaluate`` command; `register(app)` adds it to a Typer app (plasticity.cli registers it lazily)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from plasticity.config import EvaluateConfig


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def launch_workers(n: int, argv: list[str]) -> int:
    """Run ``plasticity evaluate ARGV`` as `n` torchrun processes on this machine; their exit code."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "plasticity.cli", "evaluate", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or n) // n)))
    return subprocess.run(cmd, env=env).returncode


def _launch(workers: int, cfg: EvaluateConfig, target: str, options: dict[str, object], stability: bool) -> int:
    """`launch_workers` with the same command: the settings travel as a ``--config`` file (every field, as
    validated here)."""
    import tempfile

    import yaml

    from plasticity.config import to_dict

    with tempfile.TemporaryDirectory(prefix="plasticity-evaluate-") as tmp:
        settings = Path(tmp) / "evaluate.yaml"
        settings.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        argv = [target, "--config", str(settings), "--stability" if stability else "--no-stability"]
        for flag, value in options.items():
            if value is not None:
                argv += [flag, str(value)]
        return launch_workers(workers, argv)


def register(app: typer.Typer) -> None:
    from plasticity.console import config_command, data_root_option, log, out, user_errors

    @app.command()
    @user_errors
    @config_command(EvaluateConfig, data_root=(Path, data_root_option()))
    def evaluate(
        target: str = typer.Argument(..., help="fine-tuning run dir, HF checkpoint dir, or Hub id"),
        revision: str = typer.Option(None, "--revision", help="Hub commit sha, tag or branch of a Hub id TARGET"),
        task: str = typer.Option(None, "--task", help="task name (default: the run's task)"),
        out_dir: Path = typer.Option(None, "--out", help="output folder (default: <run>/eval)"),
        stability: bool = typer.Option(
            True, "--stability/--no-stability",
            help="also measure stability (fine-tuning runs): cloze accuracy (App. D) and pretraining val loss, "
                 "base vs fine-tuned",
        ),
        workers: int = typer.Option(1, "--workers", min=1, help="processes to split the questions across (torchrun "
                                    "on this machine; launch `torchrun ... -m plasticity.cli evaluate` for GPUs)"),
        cfg: EvaluateConfig = None,
    ) -> None:
        """Evaluate a model: Greedy/Maj@k/Pass@k(/RM@k) for CoT tasks, acc/acc_norm for cloze, harmfulness; and
        the stability of a fine-tuning run. Every EvaluateConfig field is an option (or a key of --config)."""
        import os

        from plasticity.evaluate.pipeline import evaluate_with_stability
        from plasticity.files import check_output_dir

        if out_dir is not None:  # before any generation: a bad --out must not waste the whole evaluation
            check_output_dir(out_dir, "--out")
        if workers > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise typer.Exit(_launch(workers, cfg, target, {"--revision": revision, "--task": task, "--out": out_dir},
                                     stability))
        ev = evaluate_with_stability(target, cfg, task=task, out_dir=out_dir, stability=stability, log=log,
                                     revision=revision)
        if int(os.environ.get("RANK", "0")) != 0:
            return  # rank 0 reports (and measures stability)
        table = Table(title=f"evaluate {target}")
        for col in ("task", "metric", "value", "95% CI", "n"):
            table.add_column(col)
        for name, res in ev.results.items():
            for metric, m in res["metrics"].items():
                ci = "-" if m["ci_low"] is None else f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
                table.add_row(name, metric, _fmt(m["value"]), ci, str(m["n"]))
        out.print(table)
        st = ev.stability
        if st is not None:
            line = (f"stability (App. D, mean cloze acc change over {', '.join(st['cloze_sets'])}): "
                    f"{_fmt(st['stability'])}")
            if "upstream_loss_change" in st:
                line += (f"; upstream val loss: base {st['base_val_loss']:.4f} -> fine-tuned "
                         f"{st['finetuned_val_loss']:.4f} ({st['upstream_loss_change']:+.4f})")
            out.print(line)
