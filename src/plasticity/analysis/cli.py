"""The ``plasticity analyze`` command (registered on the main app by :func:`register`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import ANALYSES, AnalyzeConfig

_D = AnalyzeConfig()  # option defaults (the single source: plasticity.config.AnalyzeConfig)

def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def add_downstream(res: dict, finetuned: list[Path]) -> None:
    """Join evaluated fine-tuning runs onto their pretraining rows of a ``compare_runs`` result: the study's
    ``{task}/{eval_set}/{metric}``, ``avg_<family>/<metric>`` and ``stability`` columns, correlated with val loss."""
    from ..checkpoints import RunDir
    from ..errors import UserError
    from ..io import read_json
    from ..results_columns import headline, task_columns
    from .stats import correlation, leave_one_out

    rows = {str(Path(r["run"]).resolve()): r for r in res["rows"]}
    per_row: dict[str, dict] = {}
    for ft in finetuned:
        base = RunDir(ft).pretrain_run() if (ft / "config.yaml").is_file() else None
        key = str(base.path.resolve()) if base is not None else None
        if key not in rows:
            raise UserError(f"--finetuned {ft}: not fine-tuned from one of the compared pretraining runs")
        task = read_json(ft / "summary.json").get("task") if (ft / "summary.json").is_file() else None
        if not task:
            raise UserError(f"--finetuned {ft}: not a completed fine-tuning run (no summary.json task)")
        per_row.setdefault(key, {})[task] = task_columns(task, ft / "eval", rows[key])
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
    from ..console import data_root_option, user_errors

    @app.command()
    @user_errors
    def analyze(
        targets: list[Path] = typer.Argument(..., help="pretraining run dirs, HF checkpoint dirs or a Hub id"),
        revision: str = typer.Option(None, "--revision", help="Hub commit sha, tag or branch of a Hub id TARGET"),
        what: str = typer.Option(",".join(ANALYSES), "--what", help="comma-separated analyses"),
        compare: bool = typer.Option(False, "--compare", help="compare already analysed runs; writes --out"),
        finetuned: list[Path] = typer.Option(None, "--finetuned", help="--compare: evaluated fine-tuning runs of "
                                             "those pretraining runs (repeatable); adds their result columns"),
        out: Path = typer.Option(None, "--out", help="the output folder of one TARGET (default: <target>/analysis; "
                                 "required for a Hub id); with --compare, the output JSON (default: compare.json)"),
        data_root: Path = data_root_option(),
        n_probe: int = typer.Option(_D.n_probe, "--n-probe", help="examples per probe set"),
        probe_sets: str = typer.Option(None, "--probe-sets", help="comma-separated: bbc_topic,sst2,ag_news"),
        gap_sequences: int = typer.Option(_D.gap_sequences, "--gap-sequences",
                                          help="sequences per set for the loss gaps"),
        gap_data: Path = typer.Option(None, "--gap-data", help="external checkpoints: text/JSONL held-out data"),
        threshold: float = typer.Option(_D.rank_threshold, "--rank-threshold", help="pseudo-rank energy threshold"),
        rank_layers: str = typer.Option(None, "--rank-layers",
                                        help="comma-separated 0-based layers of the paper-style pseudo-rank "
                                             "(default: the paper's 5,15)"),
    ) -> None:
        """Probes, attention pseudo-rank, loss gaps and parameter norms of runs or checkpoints."""
        from rich.table import Table

        from ..console import log
        from ..console import out as console
        from .run import compare_runs, run_analyze

        if compare:
            dest = out or Path("compare.json")
            res = compare_runs(targets, None if finetuned else dest)
            if finetuned:
                from ..io import write_json

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
            from ..errors import UserError

            raise UserError("--out works with a single target (without --compare)")
        sets = [s.strip() for s in probe_sets.split(",") if s.strip()] if probe_sets else None
        layers = None
        if rank_layers:
            from ..errors import UserError

            try:
                layers = [int(x) for x in rank_layers.split(",") if x.strip()]
            except ValueError:
                raise UserError(f"--rank-layers {rank_layers!r}: give 0-based layer numbers, e.g. 5,15") from None
        cfg = AnalyzeConfig(probe_sets=sets, n_probe=n_probe, gap_sequences=gap_sequences, rank_threshold=threshold,
                            rank_layers=layers, data_root=str(data_root) if data_root else None,
                            gap_data=str(gap_data) if gap_data else None)
        table = Table("target", "total norm", "QK rank", "VP rank", "best probe", "train-val gap", "unseen-seen")
        for t in targets:
            r = run_analyze(t, what, out, cfg, log=log, revision=revision)
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
