"""The ``evaluate`` command; `register(app)` adds it to a Typer app (plasticity.cli registers it lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.table import Table

from plasticity.config import EvaluateConfig

_D = EvaluateConfig()  # option defaults (the single source: plasticity.config.EvaluateConfig)


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


def register(app: typer.Typer) -> None:
    from plasticity.console import data_root_option, log, out, user_errors

    @app.command()
    @user_errors
    def evaluate(
        target: str = typer.Argument(..., help="fine-tuning run dir, HF checkpoint dir, or Hub id"),
        revision: str = typer.Option(None, "--revision", help="Hub commit sha, tag or branch of a Hub id TARGET"),
        task: str = typer.Option(None, "--task", help="task name (default: the run's task)"),
        k: int = typer.Option(_D.k, "--k", help="samples per question at temperature 1"),
        max_questions: int = typer.Option(_D.max_questions, "--max-questions",
                                         help="evaluate only the first N questions"),
        max_new_tokens: int = typer.Option(_D.max_new_tokens, "--max-new-tokens"),
        seed: int = typer.Option(_D.seed, "--seed"),
        batch_size: int = typer.Option(_D.batch_size, "--batch-size"),
        out_dir: Path = typer.Option(None, "--out", help="output folder (default: <run>/eval)"),
        data_root: Path = data_root_option(),
        data_source: Literal["local", "hub", "auto"] = typer.Option(
            _D.data_source, "--data-source", help="local files under --data-root, the Hugging Face Hub, or auto "
            "(local where the files exist, else the Hub)"),
        reward_model: str = typer.Option(_D.reward_model, "--reward-model",
                                          help="ORM (HF sequence classifier) for RM@k"),
        judge: str = typer.Option(
            _D.judge, "--judge", help="harmfulness reward model for safety (default: refusal-pattern fallback)"
        ),
        stability: bool = typer.Option(
            True, "--stability/--no-stability",
            help="also measure stability: cloze accuracy (App. D) and pretraining val loss, base vs fine-tuned",
        ),
        stability_tasks: str = typer.Option(
            None, "--stability-tasks", help="comma-separated cloze sets for stability (default: the paper's five "
            "where local, else demo_choice)"),
        workers: int = typer.Option(1, "--workers", min=1, help="processes to split the questions across (torchrun "
                                    "on this machine; launch `torchrun ... -m plasticity.cli evaluate` for GPUs)"),
    ) -> None:
        """Evaluate a model: Greedy/Maj@k/Pass@k(/RM@k) for CoT tasks, acc/acc_norm for cloze, harmfulness."""
        import os

        from plasticity.evaluate.run import run_evaluate
        from plasticity.io import check_output_dir

        if out_dir is not None:  # before any generation: a bad --out must not waste the whole evaluation
            check_output_dir(out_dir, "--out")
        from plasticity.config import from_dict, validate

        cfg = from_dict(EvaluateConfig, dict(k=k, max_questions=max_questions, max_new_tokens=max_new_tokens,
                                             seed=seed, batch_size=batch_size,
                                             data_root=None if data_root is None else str(data_root),
                                             data_source=data_source, reward_model=reward_model, judge=judge))
        validate(cfg)  # before any model loads
        if workers > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            argv = [target, "--k", str(k), "--max-new-tokens", str(max_new_tokens), "--seed", str(seed),
                    "--batch-size", str(batch_size), "--data-source", data_source,
                    "--stability" if stability else "--no-stability"]
            for flag, value in (("--revision", revision), ("--task", task), ("--max-questions", max_questions),
                                ("--out", out_dir), ("--data-root", data_root), ("--reward-model", reward_model),
                                ("--judge", judge), ("--stability-tasks", stability_tasks)):
                if value is not None:
                    argv += [flag, str(value)]
            raise typer.Exit(launch_workers(workers, argv))
        results = run_evaluate(target, task, out_dir, cfg, log=log, revision=revision)
        if int(os.environ.get("RANK", "0")) != 0:
            return  # rank 0 reports (and measures stability)
        table = Table(title=f"evaluate {target}")
        for col in ("task", "metric", "value", "95% CI", "n"):
            table.add_column(col)
        for name, res in results.items():
            for metric, m in res["metrics"].items():
                ci = "-" if m["ci_low"] is None else f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
                table.add_row(name, metric, _fmt(m["value"]), ci, str(m["n"]))
        out.print(table)
        from plasticity.checkpoints import RunDir
        from plasticity.evaluate.stability import upstream_stability

        run = Path(target)
        if stability and (run / "config.yaml").exists() and (run / "summary.json").exists():
            if RunDir(run).pretrain_run() is not None:
                sets = [t.strip() for t in stability_tasks.split(",") if t.strip()] if stability_tasks else None
                st = upstream_stability(run, out_path=(out_dir / "stability.json") if out_dir else None, log=log,
                                        cloze_tasks=sets, cloze_max_questions=max_questions, batch_size=batch_size,
                                        data_root=cfg.data_root, data_source=data_source)
                out.print(f"stability (App. D, mean cloze acc change over {', '.join(st['cloze_sets'])}): "
                          f"{_fmt(st['stability'])}; upstream val loss: base {st['base_val_loss']:.4f} -> "
                          f"fine-tuned {st['finetuned_val_loss']:.4f} ({st['upstream_loss_change']:+.4f})")
