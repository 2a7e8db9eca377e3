"""The ``plasticity`` command line. Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from plasticity.console import data_root_option, log, out, user_errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Pretrain, fine-tune, evaluate and analyze language models to study plasticity.")

# `plasticity --help` lists the commands in this order (a study first: it runs every other step); commands not
# named here (added by other modules) follow in the order they were registered.
COMMAND_ORDER = ("study", "status", "report", "pretrain", "finetune", "evaluate", "analyze", "tasks", "models")


def _print_version(value: bool) -> None:
    if value:
        from plasticity import __version__

        print(f"plasticity {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                 help="print the version and exit"),
) -> None:
    """Pretrain, fine-tune, evaluate and analyze language models to study plasticity."""


@app.command()
@user_errors
def pretrain(
    config: Path = typer.Argument(None, help="YAML config (optional: defaults are used without one)"),
    overrides: list[str] = typer.Argument(None, help="dotted key=value overrides, e.g. optim.weight_decay=1.0"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint"),
) -> None:
    """Pretrain one model (Llama-2 or OLMo-2 shape) from a YAML config plus key=value overrides."""
    from plasticity.config import PretrainConfig, load_config
    from plasticity.train.pretrain import run_pretrain

    cfg_path, ovr = _split_config_arg(config, overrides)
    cfg = load_config(PretrainConfig, cfg_path, ovr)
    summary = run_pretrain(cfg, resume=resume, log=log)
    out.print(f"{cfg.out_dir}: {summary['status']}, val loss {summary.get('final_val_loss')}")


@app.command()
@user_errors
def finetune(
    config: Path = typer.Argument(None, help="YAML config (optional)"),
    overrides: list[str] = typer.Argument(None, help="dotted key=value overrides, e.g. init_from=runs/pt task=gsm8k"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint"),
) -> None:
    """Supervised fine-tuning of a checkpoint on a task (loss on response tokens only)."""
    from plasticity.config import FinetuneConfig, load_config
    from plasticity.train.finetune import run_finetune

    cfg_path, ovr = _split_config_arg(config, overrides)
    cfg = load_config(FinetuneConfig, cfg_path, ovr)
    summary = run_finetune(cfg, resume=resume, log=log)
    out.print(f"{cfg.out_dir}: {summary['status']}, final train loss {summary.get('final_train_loss')}")


@app.command()
@user_errors
def tasks(data_root: Path = data_root_option()) -> None:
    """List the registered fine-tuning/evaluation tasks and where their data comes from."""
    from plasticity.tasks.registry import describe_tasks

    rows = describe_tasks(data_root)
    t = Table(title="tasks")
    cols = ["name", "family", "answer_type", "local_available", "evaluated_on", "train_hub"]
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(r.get(c)) for c in cols])
    out.print(t)


def _split_config_arg(config: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """Allow ``plasticity CMD key=value ...`` without a config file."""
    ovr = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        return None, [str(config), *ovr]
    return config, ovr


@app.command()
def models(
    vocab: int = typer.Option(4096, help="vocabulary size assumed for CPU presets (they take the tokenizer's)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List model presets with parameter counts and training FLOPs/token."""
    import json

    from plasticity.models import describe_presets

    rows = describe_presets(vocab)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="model presets (FLOPs/token = 6N + 12·L·d·ctx, N = non-embedding + lm_head)")
    for col in ("preset", "family", "d", "ffn", "L", "heads", "kv", "vocab", "ctx", "total", "non-emb", "FLOPs/tok"):
        t.add_column(col, justify="right" if col not in ("preset", "family") else "left")
    for r in rows:
        t.add_row(r["preset"] + (" *" if r["paper"] else ""), r["family"], str(r["hidden"]), str(r["intermediate"]),
                  str(r["layers"]), str(r["heads"]), str(r["kv_heads"]),
                  f"{r['vocab']}" + ("†" if r["vocab_from_tokenizer"] else ""), str(r["ctx"]),
                  _human(r["total_params"]), _human(r["non_embedding_params"]), f"{r['flops_per_token']:.3g}")
    out.print(t)
    out.print("* paper Table 1 shape   † vocabulary taken from the tokenizer (shown for --vocab)")


def _human(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _register_stage_commands() -> None:
    from plasticity.analysis.cli import register as register_analyze
    from plasticity.bench.cli import register as register_bench
    from plasticity.data.cli import register as register_data
    from plasticity.evaluate.cli import register as register_evaluate
    from plasticity.report.cli import register as register_report
    from plasticity.study.cli import register as register_study

    register_evaluate(app)
    register_analyze(app)
    register_report(app)
    register_study(app)
    register_bench(app)
    register_data(app)


_register_stage_commands()
_rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
app.registered_commands.sort(key=lambda c: _rank.get(c.name or c.callback.__name__, len(_rank)))  # stable


def main() -> None:
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.exit(code)


if __name__ == "__main__":
    main()
