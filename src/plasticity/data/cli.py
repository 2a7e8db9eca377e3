"""``plasticity data CONFIG.yaml [key=value ...]``: prepare (or report) a pretraining corpus's token cache without
training, so a corpus can be tokenized on a CPU box before GPUs are rented; ``--dry-run`` reports offline what
would be done (token budget, shard plan, epochs where the corpus size is known)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer


def data_report(cfg, meta: dict | None, stats: dict | None) -> dict[str, Any]:
    """Everything ``plasticity data`` prints: the corpus (when prepared), the budget, and the epochs over the
    corpus at the config's own budget and at each of the paper's."""
    from plasticity.train.budget import epochs_for, paper_budgets, token_budget

    budget = token_budget(cfg)
    rep: dict[str, Any] = dict(source=cfg.data.source, budget=budget, prepared=meta is not None)
    if meta is not None:
        rep["corpus"] = {k: meta[k] for k in ("train_documents", "val_documents", "train_tokens", "val_tokens",
                                              "shards", "dtype", "vocab")}
        rep["epochs"] = epochs_for(cfg, meta)
        rep["paper"] = [dict(b, epochs=b["tokens"] / max(meta["train_tokens"], 1)) for b in paper_budgets()]
    else:
        rep["paper"] = paper_budgets()
    if stats:
        rep["preparation"] = stats
    return rep


def _print_report(rep: dict[str, Any], dry_run: bool, plan: dict | None) -> None:
    from rich.table import Table

    from plasticity.console import out

    b = rep["budget"]
    if b:
        out.print(f"budget: {b['token_budget']:,} tokens ({b['total_steps']:,} steps x {b['tokens_per_step']:,} "
                  f"tokens; {b['params_total']:,} params)")
    else:
        out.print("budget: unknown offline (the vocabulary, hence the parameter count, comes from the tokenizer)")
    if plan is not None:
        if plan["streamed"]:
            out.print(plan["note"])
        else:
            out.print(f"shard plan: {plan['files']} files, {plan['input_bytes']:,} bytes of input, {plan['jobs']} "
                      f"shard jobs of <= {plan['shard_mb']:g} MiB")
    c = rep.get("corpus")
    if c:
        out.print(f"corpus: {c['train_documents']:,} train / {c['val_documents']:,} validation documents, "
                  f"{c['train_tokens']:,} / {c['val_tokens']:,} tokens, {c['shards']['train']} + {c['shards']['val']} "
                  f"shards ({c['dtype']}, vocab {c['vocab']:,})")
        if rep.get("epochs") is not None:
            out.print(f"epochs at this config's budget: {rep['epochs']:.3f}"
                      + (" (repeats data)" if rep["epochs"] > 1 else ""))
    elif dry_run:
        out.print("corpus: not prepared yet (run without --dry-run to prepare it)")
    p = rep.get("preparation")
    if p:
        out.print(f"prepared in {p['seconds']:.1f}s, {p['tokens_per_second']:,.0f} tokens/s ({p['workers']} workers, "
                  f"{p['executor']}; {p['resumed_jobs']} of {p['jobs']} jobs resumed)")
    t = Table(title="paper budgets" + (" and epochs over this corpus" if c else ""))
    t.add_column("run")
    t.add_column("tokens", justify="right")
    if c:
        t.add_column("epochs", justify="right")
    for r in rep["paper"]:
        t.add_row(r["run"], f"{r['tokens']:,}", *([f"{r['epochs']:.2f}"] if c else []))
    out.print(t)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command to ``app``."""
    from plasticity.console import log, user_errors

    @app.command("data")
    @user_errors
    def data(
        config: Path = typer.Argument(None, help="pretraining YAML config (its data: and tokenizer: sections)"),
        overrides: list[str] = typer.Argument(None, help="dotted key=value overrides, e.g. data.num_workers=8"),
        dry_run: bool = typer.Option(False, "--dry-run", help="report the budget and shard plan offline; "
                                                               "prepare nothing"),
        executor: str = typer.Option("local", help="local (worker processes) or ray (RAY_ADDRESS or a local Ray)"),
        json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Prepare (or report) a corpus's token cache: documents, tokens, shards, epochs at each paper budget,
        time and tokens/s."""
        from plasticity.config import PretrainConfig, load_config
        from plasticity.errors import UserError

        if executor not in ("local", "ray"):
            raise UserError(f"--executor: must be local or ray, got {executor!r}")
        ovr = list(overrides or [])
        if config is not None and "=" in str(config) and not config.exists():
            config, ovr = None, [str(config), *ovr]
        cfg = load_config(PretrainConfig, config, ovr)
        stats = None
        plan = None
        if dry_run:
            from plasticity.data.prepare import shard_plan
            from plasticity.train.budget import cached_meta

            plan = shard_plan(cfg.data)
            meta = cached_meta(cfg)
        else:
            from plasticity.data.packed import prepare_data

            prepared = prepare_data(cfg.data, cfg.tokenizer, log=log, executor=executor, bar=sys.stderr.isatty())
            meta = prepared.meta
            try:
                stats = json.loads((prepared.dir / "prepare.json").read_text())
            except (OSError, ValueError):
                stats = None
        rep = data_report(cfg, meta, stats)
        if plan is not None:
            rep["plan"] = plan
        if json_out:
            print(json.dumps(rep, indent=2, default=str))
        else:
            _print_report(rep, dry_run, plan)
