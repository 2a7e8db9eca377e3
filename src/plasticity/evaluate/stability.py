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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from plasticity.checkpoints import MANIFEST, ModelSource, RunDir, check_vocab, load_model_checked, resolve_model_source
from plasticity.config import EvaluateConfig, PretrainConfig
from plasticity.errors import UserError
from plasticity.evaluate.target import Target
from plasticity.files import read_json, write_json
from plasticity.hardware import resolve_precision
from plasticity.hashing import stable_hash
from plasticity.models import model_device

PAPER_CLOZE = ("hellaswag", "piqa", "winogrande", "arc_easy", "arc_challenge")
OFFLINE_CLOZE = ("demo_choice",)


def resolve_cloze_sets(tasks: list[str] | None, data_root: str | None = None) -> list[str]:
    """`tasks` if given; else the paper's five cloze benchmarks whose local data exists, else demo_choice."""
    if tasks:
        return list(tasks)
    from plasticity.tasks.registry import get_task

    found = [t for t in PAPER_CLOZE if get_task(t).local_available(data_root)]
    return found or list(OFFLINE_CLOZE)


def cloze_accuracies(model: Any, tokenizer: Any, tasks: list[str], settings: dict[str, Any], log=print
                     ) -> dict[str, Any]:
    """{task name: {acc, n, evaluated_on}} of one loaded model on cloze-scorable tasks (names or YAML paths), with
    the stability `settings` (max_questions, batch_size, data_root, data_source)."""
    from plasticity.evaluate.evaluator import eval_cloze, evaluated_on
    from plasticity.tasks.loading import load_rows
    from plasticity.tasks.registry import get_task

    out: dict[str, Any] = {}
    for name in tasks:
        task = get_task(name)
        if task.cloze_fn is None:
            raise UserError(f"evaluate.stability_tasks: task {name} has no cloze items (pick cloze tasks)")
        loaded = load_rows(task, "eval", settings["data_root"], settings["max_questions"],
                           source=settings["data_source"])
        metrics, _ = eval_cloze(task, list(loaded.rows), model, tokenizer, settings["batch_size"], 0, log)
        out[task.name] = {"acc": metrics["acc"]["value"], "n": metrics["acc"]["n"],
                          "evaluated_on": evaluated_on(name, loaded, len(loaded.rows))}
    return out


class _Base:
    """The pretrained model a fine-tuning run started from, loaded on first use (at most once)."""

    def __init__(self, source: ModelSource, local: Path, device: Any, dtype: Any = None) -> None:
        self.source, self.local, self.device, self.dtype, self._loaded = source, local, device, dtype, None

    def load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoTokenizer

            model = load_model_checked(self.local, device=self.device, dtype=self.dtype)
            tok = AutoTokenizer.from_pretrained(str(self.local), revision=None)  # a local dir: no Hub revision
            check_vocab(tok, model, self.local)
            self._loaded = (model, tok)
        return self._loaded


def _base_cloze(base: _Base, base_run: RunDir | None, key: dict[str, Any], log) -> dict[str, Any]:
    """Cloze accuracies of the pretrained checkpoint, cached under its run (keyed by checkpoint and settings)."""
    def compute() -> dict[str, Any]:
        return cloze_accuracies(*base.load(), key["tasks"], key, log)

    if base_run is None:
        return compute()
    from filelock import FileLock

    init_dir = base.local
    manifest = init_dir / MANIFEST
    yaml_tasks = {t: Path(t).read_text() for t in key["tasks"] if t.endswith((".yaml", ".yml")) and Path(t).is_file()}
    ident = dict(key, checkpoint=init_dir.name, manifest=manifest.read_text() if manifest.is_file() else None,
                 task_files=yaml_tasks)  # a changed checkpoint or task file is a new cache entry
    h = stable_hash(ident, 12)
    cache = base_run.upstream_cloze_dir / f"{init_dir.name}-{h}.json"
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


def upstream_stability(source: str | Path | RunDir | Target, cfg: EvaluateConfig | None = None, *,
                       out_path: Path | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Stability of a fine-tuning run (a run dir, or the `Target` its evaluation resolved and loaded): App. D
    cloze-accuracy change (``stability``) and the pretraining validation loss change (``upstream_loss_change``,
    only for runs fine-tuned from a plasticity pretraining run), with the settings of `cfg` (``stability_tasks``,
    ``stability_max_questions`` (default ``max_questions``), ``stability_sequences``, ``batch_size``,
    ``data_root`` (default: the run's), ``data_source``). Written to `out_path` (default
    ``<run>/eval/stability.json``).

    The fine-tuned model is the target's (loaded once, shared with its evaluation); it is released before the
    base model loads, so one model is in memory at a time."""
    cfg = cfg if cfg is not None else EvaluateConfig()
    target = Target.of(source)
    ft, run = target.finetune, target.run
    if ft is None or run is None:
        raise UserError(f"{target.spec}: not a fine-tuning run (stability compares a fine-tuned model with the "
                        "model it started from)")
    base_run = run.pretrain_run(ft)
    base_source = resolve_model_source(ft.init_from, ft.revision)  # a Hub base model: its snapshot
    init_dir = base_source.local_dir()
    data_root = cfg.data_root if cfg.data_root is not None else ft.data_root
    tasks = resolve_cloze_sets(cfg.stability_tasks, data_root)
    max_questions = cfg.stability_max_questions if cfg.stability_max_questions is not None else cfg.max_questions
    key = {"tasks": tasks, "max_questions": max_questions, "batch_size": cfg.batch_size,
           "data_root": data_root, "data_source": cfg.data_source}

    model, tok = target.load()
    device, dtype = model_device(model), next(model.parameters()).dtype  # the base model is loaded alike
    tuned = cloze_accuracies(model, tok, tasks, key, log)
    val, seq_len = _val_sequences(base_run, cfg.stability_sequences, log) if base_run is not None else (None, None)
    precision = resolve_precision("auto", device)
    tuned_loss = _mean_loss(model, val, precision) if val is not None else None
    del model, tok
    target.release()

    base = _Base(base_source, init_dir, device, dtype)
    base_res = _base_cloze(base, base_run, key, log)
    b, f = _mean_acc(base_res), _mean_acc(tuned)
    out: dict[str, Any] = {
        "base_run": None if base_run is None else str(base_run.path),
        "base_model": base_source.describe() if base_source.kind == "hub" else str(init_dir),
        "finetuned_model": str(run.final),
        "stability": None if b is None or f is None else f - b,
        "definition": "mean cloze acc (fine-tuned) - mean cloze acc (pretrained) over cloze_sets (paper App. D)",
        "cloze_sets": list(tuned), "base_avg_acc": b, "finetuned_avg_acc": f,
        "base_acc": {t: r["acc"] for t, r in base_res.items()},
        "finetuned_acc": {t: r["acc"] for t, r in tuned.items()},
        "evaluated_on": [r["evaluated_on"] for r in tuned.values()],
    }
    if val is not None:
        base_loss = _mean_loss(base.load()[0], val, precision)
        out.update({"n_sequences": len(val), "seq_len": seq_len, "base_val_loss": base_loss,
                    "finetuned_val_loss": tuned_loss, "upstream_loss_change": tuned_loss - base_loss})
    write_json(out_path or run.eval_dir / "stability.json", out)
    return out


def _val_sequences(base_run: RunDir, max_sequences: int, log) -> tuple[Any, int]:
    """The first `max_sequences` held-out pretraining validation sequences of the base run, and their length."""
    from plasticity.data.packed import prepare_data

    pcfg = base_run.config(PretrainConfig)
    data = prepare_data(pcfg.data, pcfg.tokenizer, log=log)
    seqs = data.sequences("val", pcfg.data.seq_len)
    return seqs.get(range(min(len(seqs), max_sequences))), pcfg.data.seq_len


def _mean_loss(model: Any, val: Any, precision: str) -> float:
    from plasticity.losses import mean_token_loss

    return mean_token_loss(model, val, 8, precision)
