"""Stability side of the stability-plasticity trade-off: how much upstream (pretraining) capability a
fine-tuned model keeps. Both the base model and the fine-tuned model are scored on the same held-out
pretraining validation sequences of the base run; ``forgetting`` = fine-tuned loss - base loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import FinetuneConfig, PretrainConfig, from_dict, read_yaml
from ..data.packed import PackedSequences, prepare_data
from ..errors import UserError
from ..hardware import default_device, resolve_precision
from ..io import read_json, write_json
from ..train.checkpoint import load_model_checked
from ..train.pretrain import mean_loss


def pretrain_run_of(finetune_run: Path) -> Path | None:
    """The pretraining run directory a fine-tuning run started from (None for external checkpoints)."""
    cfg = from_dict(FinetuneConfig, read_yaml(finetune_run / "config.yaml"))
    p = Path(cfg.init_from)
    if p.name == "final" or p.parent.name == "checkpoints":
        p = p.parent if p.name == "final" else p.parent.parent
    if (p / "config.yaml").exists() and (p / "summary.json").exists():
        if read_json(p / "summary.json").get("kind") == "pretrain":
            return p
    return None


def upstream_stability(finetune_run: str | Path, max_sequences: int = 128, out_path: Path | None = None,
                       log=print) -> dict[str, Any]:
    """Validation loss on the base run's held-out pretraining text, before and after fine-tuning."""
    run = Path(finetune_run)
    base_run = pretrain_run_of(run)
    if base_run is None:
        raise UserError(f"{run}: not fine-tuned from a plasticity pretraining run; upstream data unknown")
    pcfg = from_dict(PretrainConfig, read_yaml(base_run / "config.yaml"))
    data = prepare_data(pcfg.data, pcfg.tokenizer, log=log)
    seqs = PackedSequences(data.val_bin, pcfg.data.seq_len, data.meta["dtype"])
    val = seqs.get(range(min(len(seqs), max_sequences)))
    device = default_device()
    precision = resolve_precision("auto", device)
    ft_cfg = from_dict(FinetuneConfig, read_yaml(run / "config.yaml"))
    init_dir = Path(ft_cfg.init_from)
    init_dir = init_dir / "final" if (init_dir / "final").is_dir() else init_dir
    out = {"base_run": str(base_run), "base_model": str(init_dir), "finetuned_model": str(run / "final"),
           "n_sequences": len(val), "seq_len": pcfg.data.seq_len}
    for name, path in (("base", init_dir), ("finetuned", run / "final")):
        model = load_model_checked(path, device=device)
        out[f"{name}_val_loss"] = mean_loss(model, val, 8, precision)
        del model
    out["forgetting"] = out["finetuned_val_loss"] - out["base_val_loss"]
    write_json(out_path or run / "eval" / "stability.json", out)
    return out
