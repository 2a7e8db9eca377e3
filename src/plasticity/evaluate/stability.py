"""Stability side of the stability-plasticity trade-off (paper Appendix D): how much upstream capability a
fine-tuned model keeps.

* ``stability`` (the paper's definition, the headline): average cloze accuracy of the fine-tuned model minus
  that of the pretrained model it started from, over the cloze benchmarks (paper: HellaSwag, PIQA,
  Winogrande, ARC-Easy, ARC-Challenge). Negative = upstream accuracy lost. The base model's cloze results are
  cached per checkpoint (``<pretrain run>/upstream_cloze/``) and reused by all its fine-tuning runs.
* ``upstream_loss_change``: fine-tuned minus base loss on held-out pretraining validation sequences of the
  base run (a plasticity-specific extra, not in the paper).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoints import RunDir, check_vocab, load_model_checked, resolve_model_source
from ..config import FinetuneConfig, PretrainConfig, from_dict, read_yaml
from ..errors import UserError
from ..hardware import default_device, resolve_precision
from ..hashing import stable_hash
from ..io import read_json, write_json

PAPER_CLOZE = ("hellaswag", "piqa", "winogrande", "arc_easy", "arc_challenge")
OFFLINE_CLOZE = ("demo_choice",)


def resolve_cloze_sets(tasks: list[str] | None, data_root: str | None = None) -> list[str]:
    """`tasks` if given; else the paper's five cloze benchmarks whose local data exists, else demo_choice."""
    if tasks:
        return list(tasks)
    from ..tasks.registry import get_task

    found = [t for t in PAPER_CLOZE if get_task(t).local_available(data_root)]
    return found or list(OFFLINE_CLOZE)


def cloze_accuracies(model_dir: Path, tasks: list[str], max_questions: int | None, batch_size: int,
                     data_root: str | None, data_source: str, log=print) -> dict[str, Any]:
    """{task name: {acc, n, evaluated_on}} of one checkpoint on cloze-scorable tasks (names or YAML paths)."""
    from transformers import AutoTokenizer

    from ..tasks.loading import load_rows
    from ..tasks.registry import get_task
    from .run import eval_cloze, evaluated_on

    device = default_device()
    model = load_model_checked(model_dir, device=device)
    tok = AutoTokenizer.from_pretrained(str(model_dir), revision=None)  # a local checkpoint dir: no Hub revision
    check_vocab(tok, model, model_dir)
    out: dict[str, Any] = {}
    for name in tasks:
        task = get_task(name)
        if task.cloze_fn is None:
            raise UserError(f"evaluate.stability_tasks: task {name} has no cloze items (pick cloze tasks)")
        loaded = load_rows(task, "eval", data_root, max_questions, source=data_source)
        metrics, _ = eval_cloze(task, list(loaded.rows), model, tok, {"batch_size": batch_size, "seed": 0}, log)
        out[task.name] = {"acc": metrics["acc"]["value"], "n": metrics["acc"]["n"],
                     "evaluated_on": evaluated_on(name, loaded, len(loaded.rows))}
    del model
    return out


def _base_cloze(init_dir: Path, base_run: Path | None, key: dict[str, Any], log) -> dict[str, Any]:
    """Cloze accuracies of the pretrained checkpoint, cached under its run (keyed by checkpoint and settings)."""
    def compute() -> dict[str, Any]:
        return cloze_accuracies(init_dir, key["tasks"], key["max_questions"], key["batch_size"], key["data_root"],
                                key["data_source"], log)

    if base_run is None:
        return compute()
    from filelock import FileLock

    manifest = init_dir / "manifest.json"
    yaml_tasks = {t: Path(t).read_text() for t in key["tasks"] if t.endswith((".yaml", ".yml")) and Path(t).is_file()}
    ident = dict(key, checkpoint=init_dir.name, manifest=manifest.read_text() if manifest.is_file() else None,
                 task_files=yaml_tasks)  # a changed checkpoint or task file is a new cache entry
    h = stable_hash(ident, 12)
    cache = base_run / "upstream_cloze" / f"{init_dir.name}-{h}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):  # fine-tuning runs of one checkpoint evaluated in parallel compute it once
        if cache.is_file():
            log(f"base cloze results from cache {cache}")
            return read_json(cache)["results"]
        res = compute()
        write_json(cache, {"checkpoint": str(init_dir), "settings": key, "results": res})
        return res


def _mean_acc(res: dict[str, Any]) -> float | None:
    accs = [r["acc"] for r in res.values() if r["acc"] is not None]
    return sum(accs) / len(accs) if accs and len(accs) == len(res) else None


def upstream_stability(finetune_run: str | Path, max_sequences: int = 128, out_path: Path | None = None,
                       log=print, cloze_tasks: list[str] | None = None, cloze_max_questions: int | None = None,
                       batch_size: int = 16, data_root: str | None = None,
                       data_source: str = "auto") -> dict[str, Any]:
    """Stability of a fine-tuning run: App. D cloze-accuracy change (``stability``) and the pretraining
    validation loss change (``upstream_loss_change``, only for runs fine-tuned from a plasticity pretraining run).
    Written to `out_path` (default ``<run>/eval/stability.json``)."""
    run = Path(finetune_run)
    ft = RunDir(run)
    base = ft.pretrain_run()
    base_run = base.path if base is not None else None
    ft_cfg = ft.config(FinetuneConfig)
    source = resolve_model_source(ft_cfg.init_from, ft_cfg.revision)  # a Hub base model: its snapshot
    init_dir = source.local_dir()
    data_root = data_root if data_root is not None else ft_cfg.data_root
    tasks = resolve_cloze_sets(cloze_tasks, data_root)
    key = {"tasks": tasks, "max_questions": cloze_max_questions, "batch_size": batch_size,
           "data_root": data_root, "data_source": data_source}
    base_model = source.describe() if source.kind == "hub" else str(init_dir)
    base = _base_cloze(init_dir, base_run, key, log)
    tuned = cloze_accuracies(run / "final", tasks, cloze_max_questions, batch_size, data_root, data_source, log)
    b, f = _mean_acc(base), _mean_acc(tuned)
    out: dict[str, Any] = {
        "base_run": None if base_run is None else str(base_run), "base_model": base_model,
        "finetuned_model": str(run / "final"),
        "stability": None if b is None or f is None else f - b,
        "definition": "mean cloze acc (fine-tuned) - mean cloze acc (pretrained) over cloze_sets (paper App. D)",
        "cloze_sets": list(tuned), "base_avg_acc": b, "finetuned_avg_acc": f,
        "base_acc": {t: r["acc"] for t, r in base.items()}, "finetuned_acc": {t: r["acc"] for t, r in tuned.items()},
        "evaluated_on": [r["evaluated_on"] for r in tuned.values()],
    }
    if base_run is not None:
        out.update(_loss_change(base_run, init_dir, run, max_sequences, log))
    write_json(out_path or run / "eval" / "stability.json", out)
    return out


def _loss_change(base_run: Path, init_dir: Path, run: Path, max_sequences: int, log) -> dict[str, Any]:
    """Validation loss on the base run's held-out pretraining text, before and after fine-tuning."""
    from ..data.packed import prepare_data
    from ..losses import mean_token_loss

    pcfg = from_dict(PretrainConfig, read_yaml(base_run / "config.yaml"))
    data = prepare_data(pcfg.data, pcfg.tokenizer, log=log)
    seqs = data.sequences("val", pcfg.data.seq_len)
    val = seqs.get(range(min(len(seqs), max_sequences)))
    device = default_device()
    precision = resolve_precision("auto", device)
    out: dict[str, Any] = {"n_sequences": len(val), "seq_len": pcfg.data.seq_len}
    for name, path in (("base", init_dir), ("finetuned", run / "final")):
        model = load_model_checked(path, device=device)
        out[f"{name}_val_loss"] = mean_token_loss(model, val, 8, precision)
        del model
    out["upstream_loss_change"] = out["finetuned_val_loss"] - out["base_val_loss"]
    return out
