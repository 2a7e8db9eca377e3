"""The ``plasticity analyze`` command (registered on the main app by :func:`register`)."""

from __future__ import annotations

from pathlib import Path

import typer

from plasticity.config import AnalyzeConfig


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def add_downstream(res: dict, finetuned: list[Path]) -> None:
    """Join evaluated fine-tuning runs onto their pretraining rows of a ``compare_runs`` result: the study's
    ``{task}/{eval_set}/{metric}``, ``avg_<family>/<metric>`` and ``stability`` columns, correlated with val loss."""
    from plasticity.analysis.stats import correlation, leave_one_out
    from plasticity.checkpoints import RunDir
    from plasticity.errors import UserError
    from plasticity.results_columns import headline, task_columns

    rows = {str(Path(r["run"]).resolve()): r for r in res["rows"]}
    per_row: dict[str, dict] = {}
    for path in finetuned:
        ft = RunDir(path)
        base = ft.pretrain_run() if ft.config_path.is_file() else None
        key = str(base.path.resolve()) if base is not None else None
        if key not in rows:
            raise UserError(f"--finetuned {ft}: not fine-tuned from one of the compared pretraining runs")
        task = (ft.summary(strict=True) or {}).get("task")
        if not task:
            raise UserError(f"--finetuned {ft}: not a completed fine-tuning run (no summary.json task)")
        per_row.setdefault(key, {})[task] = task_columns(task, ft.eval_dir, rows[key])
    for key, tasks in per_row.items():
        rows[key].update(headline(tasks))
    known = {*res["quantities"], "run", "weight_decay", "final_val_loss"}
    new = sorted({k for r in res["rows"] for k in r} - known)
    for k in new:
        pairs = [(r["final_val_loss"], r[k]) for r in res["rows"]
                 if r.get("final_val_loss") is not None and isinstance(r.get(k), int | float)]
        if len(pairs) >= 3:
            c = correlation([p[1] for p in pairs], [p[0] for p in pairs])
            c["leave_one_out"] = leave_one_out([p[1] for p in pairs], [p[0] for p in pairs])
            res["correlations_with_val_loss"][k] = c
    res["quantities"] = sorted(set(res["quantities"]) | set(new))


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` command to ``app``."""
    from plasticity.console import config_command, data_root_option, user_errors

    @app.command()
    @user_errors
    @config_command(AnalyzeConfig, data_root=(Path, data_root_option()))
    def analyze(
        targets: list[Path] = typer.Argument(..., help="pretraining run dirs, HF checkpoint dirs or a Hub id"),
        revision: str = typer.Option(None, "--revision", help="Hub commit sha, tag or branch of a Hub id TARGET"),
        compare: bool = typer.Option(False, "--compare", help="compare already analysed runs; writes --out"),
        finetuned: list[Path] = typer.Option(None, "--finetuned", help="--compare: evaluated fine-tuning runs of "
                                             "those pretraining runs (repeatable); adds their result columns"),
        out: Path = typer.Option(None, "--out", help="the output folder of one TARGET (default: <target>/analysis; "
                                 "required for a Hub id); with --compare, the output JSON (default: compare.json)"),
        cfg: AnalyzeConfig = None,
    ) -> None:
        """Probes, attention pseudo-rank, loss gaps and parameter norms of runs or checkpoints. Every AnalyzeConfig
        field is an option (or a key of --config)."""
        from rich.table import Table

        from plasticity.analysis.analyzer import compare_runs, run_analyze
        from plasticity.console import log
        from plasticity.console import out as console

        if compare:
            dest = out or Path("compare.json")
            res = compare_runs(targets, None if finetuned else dest)
            if finetuned:
                from plasticity.files import write_json

                add_downstream(res, finetuned)
                write_json(dest, res)
            cols = ["weight_decay", "final_val_loss", *[q for q in res["quantities"] if q.count("/") < 2]]
            table = Table(*cols)
            for r in res["rows"]:
                table.add_row(*[_fmt(r.get(c)) for c in cols])
            console.print(table)
            console.print(f"wrote {dest}")
            return
        if out is not None and len(targets) > 1:
            from plasticity.errors import UserError

            raise UserError("--out works with a single target (without --compare)")
        table = Table("target", "total norm", "QK rank", "VP rank", "best probe", "train-val gap", "unseen-seen")
        for t in targets:
            r = run_analyze(t, cfg, out_dir=out, log=log, revision=revision)
            norm = (r.get("norms") or {}).get("total_norm")
            cks = (r.get("rank") or {}).get("checkpoints") or []
            mean = cks[-1]["mean"] if cks else {}
            probes = (r.get("probes") or {}).get("sets") or {}
            best = ", ".join(f"{k} {v['best_test_accuracy']:.3f}" for k, v in probes.items()) or None
            gap = r.get("gap") or {}
            table.add_row(str(t), _fmt(norm), _fmt((mean.get("qk") or {}).get("rank")),
                          _fmt((mean.get("vp") or {}).get("rank")), _fmt(best),
                          _fmt((gap.get("train_val") or {}).get("gap")),
                          _fmt((gap.get("unseen_seen") or {}).get("gap")))
        console.print(table)
