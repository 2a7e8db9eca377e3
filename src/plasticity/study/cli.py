"""``plasticity study [STUDY.yaml]`` and ``plasticity status [STUDY.yaml]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer
from rich.table import Table

SHOWN = ("val_loss", "weight_norm", "qk_rank_frac", "vp_rank_frac", "unseen_seen_gap", "probe_", "avg_cot/greedy",
         "avg_cot/maj@", "avg_cot/pass@", "avg_cloze/acc", "avg_safety/", "stability")


def _shown(c: str, axes: list[str]) -> bool:
    """Axis columns, pretraining-level numbers and the averaged headline (per-task columns: results.csv)."""
    return c in axes or (("/" not in c or c.startswith("avg_")) and not c.endswith("/tasks")
                         and any(x in c for x in SHOWN))


def register(app: typer.Typer) -> None:
    """Add the ``study`` and ``status`` commands to ``app``."""
    from plasticity.console import log, out, user_errors

    @app.command("study")
    @user_errors
    def study(
        spec: Path = typer.Argument(None, help="study YAML; without one the default study runs (--print-default)"),
        workers: int = typer.Option(None, help="parallel worker processes (default: one 1-thread worker per core)"),
        executor: Literal["local", "ray"] = typer.Option(None, help="where nodes run (default: the study's "
                                                         "`executor`, else local); ray: RAY_ADDRESS or a local Ray"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (cached / to run, tokens, FLOPs)"),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="re-run nodes that failed before"),
        no_report: bool = typer.Option(False, "--no-report", help="skip the HTML report"),
        print_default: bool = typer.Option(False, "--print-default",
                                           help="print the default study's YAML (to copy and edit) and exit"),
    ) -> None:
        """Run a study: tokenizer -> data -> pretrain -> analyze / finetune -> evaluate for every grid point,
        cached per node, resumable; then results.csv and the report."""
        from plasticity.errors import UserError
        from plasticity.study.plan import build_plan
        from plasticity.study.run_study import plan_table, row_axes, run_study
        from plasticity.study.spec import check_memory_fits, load_spec
        from plasticity.study.state import node_states

        if print_default:
            from plasticity.study.default import DEFAULT_STUDY_FILE

            print(DEFAULT_STUDY_FILE.read_text(), end="")
            return
        sp = load_spec(spec)
        if (executor or sp.executor) == "local":  # nodes run here: the grid must fit this machine's memory
            check_memory_fits(sp)
        from plasticity.study.sizing import check_fits, size_plan

        plan = build_plan(sp)
        sizes = size_plan(plan)
        check_fits(plan, sizes)  # a GPU node that cannot fit its GPUs: one line, before anything starts
        if dry_run:
            _print_nodes(out, plan_table(plan, node_states(plan)), f"plan of study '{sp.name}' (dry run)", totals=True,
                         sizes=sizes)
            res = sp.resources
            if any(s.devices for s in sizes.values()):
                out.print(f"memory per device: estimates (weights, gradients, AdamW state, activations, logits; "
                          f"evaluation: fp32 weights and KV cache, reward model not counted) against "
                          f"{res.gpu_memory_gb:g} GB GPUs (resources.gpu_memory_gb, 90% usable); time at "
                          f"{res.gpu_tflops:g} "
                          "TFLOP/s per GPU (resources.gpu_tflops)")
            from plasticity.study.epochs import epoch_lines

            for line in epoch_lines(plan):
                out.print(line, soft_wrap=True)
            return
        from plasticity.files import check_output_dir

        check_output_dir(Path(sp.out_dir) / sp.name, "out_dir")
        if sp.analyze is not None and "probes" in sp.analyze.what and sp.analyze.probe_sets:
            from plasticity.analysis.analyzer import check_probe_sets

            check_probe_sets(sp.analyze.probe_sets, sp.analyze.data_root)
        res = run_study(sp, workers=workers, executor=executor, retry_failed=retry_failed, log=log)
        print_results(out, f"study '{sp.name}' ({len(res.rows)} rows; all columns in results.csv)", res.rows,
                      row_axes(sp))
        out.print(f"results: {res.study_dir / 'results.csv'}")
        if not no_report and any(r.get("status") == "completed" for r in res.rows):
            from plasticity.report.build import build_report

            try:
                out.print(f"report: {build_report(res.study_dir)}")
            except UserError as e:
                log(f"report skipped: {e}")
        if not res.ok:
            bad = {k: v for k, v in res.states.items() if v != "done"}
            log(f"{len(bad)} of {len(res.states)} nodes did not finish: " + ", ".join(
                f"{k} ({v})" for k, v in list(bad.items())[:6]) + (" ..." if len(bad) > 6 else ""))
            raise typer.Exit(1)

    @app.command("status")
    @user_errors
    def status(
        spec: Path = typer.Argument(None, help="study YAML or its directory <out_dir>/<name>/ (default: the "
                                    "default study)"),
        json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    ) -> None:
        """Show every node of a study: done / running / failed / skipped / pending, with its key metric."""
        import json

        from plasticity.study.plan import build_plan
        from plasticity.study.run_study import plan_table
        from plasticity.study.state import load_study, node_states

        sp = load_study(spec)
        plan = build_plan(sp)
        rows = plan_table(plan, node_states(plan))
        if json_out:
            print(json.dumps(rows, indent=2))
            return
        _print_nodes(out, rows, f"study '{sp.name}' ({Path(sp.out_dir) / sp.name})")


def column_header(col: str) -> str:
    """A results.csv column as a short table header whose words can wrap: ``optim.weight_decay`` -> ``wd``,
    ``finetune.optim.lr`` -> ``ft lr``, ``avg_cot/pass@4`` -> ``avg cot pass@4``."""
    h = col.replace("finetune.", "ft.").replace("optim.", "").replace("train.", "").replace("weight_decay", "wd")
    h = h.replace("_frac", "")
    for sep in "._/":
        h = h.replace(sep, " ")
    return h


def print_results(out, title: str, rows: list[dict[str, Any]], axes: list[str]) -> None:
    """The study's closing table: status, the axes, pretraining-level numbers and the averaged headline.
    Nothing is cut: on a terminal long headers wrap at their words; in a log or pipe the table takes the width
    it needs."""
    cols = ["status", *(c for c in (rows[0] if rows else {}) if _shown(c, axes))]
    t = Table(title=title)
    for c in cols:
        t.add_column(column_header(c), justify="right", overflow="fold")
    for r in rows:
        t.add_row(*[_cell(r.get(c)) for c in cols])
    if out.is_terminal:
        out.print(t)
        return
    width = out.width
    out.width = max(width, out.measure(t, options=out.options.update(max_width=100_000)).maximum)
    try:
        out.print(t)
    finally:
        out.width = width


def _print_nodes(out, rows: list[dict[str, Any]], title: str, totals: bool = False, sizes=None) -> None:
    from plasticity.study.sizing import describe

    t = Table(title=title)
    cols = ["node", "state", "axes", "metric / reason", "est. tokens", "est. FLOPs"]
    if sizes is not None:
        cols += ["devices", "mem/device", "est. time"]
    for c in cols:
        t.add_column(c, justify="right" if c.startswith(("est", "mem")) else "left", overflow="fold")
    style = {"done": "green", "failed": "red", "running": "yellow", "skipped": "magenta"}
    for r in rows:
        cells = [r["node"], f"[{style.get(r['state'], 'default')}]{r['state']}[/]", r["label"], str(r["metric"]),
                 _cell(r["est_tokens"]), f"{r['est_flops']:.3g}" if r["est_flops"] else "-"]
        if sizes is not None:
            cells += list(describe(sizes[r["node"]])) if r["node"] in sizes else ["-", "-", "-"]
        t.add_row(*cells)
    out.print(t)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    out.print(", ".join(f"{v} {k}" for k, v in counts.items()))
    if totals:
        todo = [r for r in rows if r["state"] in ("pending", "running")]
        tok = sum(r["est_tokens"] or 0 for r in todo)
        fl = sum(r["est_flops"] or 0 for r in todo)
        out.print(f"to run: {len(todo)} nodes, ~{tok:,} tokens, ~{fl:.3g} FLOPs (estimates: pretraining exact "
                  "token budget; fine-tuning/evaluation upper bounds; the rest not counted)")


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
