"""What a pretraining config's data means for its budget: tokens trained, the paper's budgets, and the epochs a
config makes over its prepared corpus (for ``plasticity data`` and the study's dry run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasticity.data.packed import load_prepared, token_cache_dir, tokenizer_dir
from plasticity.models import count_params, get_preset, resolve_shape
from plasticity.tokenizer import load_tokenizer
from plasticity.train.pretrain import resolve_total_steps

PAPER_RUNS = (("llama2-0.5b", 20.0), ("llama2-1b", 20.0), ("llama2-4b", 20.0), ("olmo2-1b", 20.0),
              ("olmo2-1b", 140.0))


def token_budget(cfg) -> dict[str, Any] | None:
    """Steps and tokens a pretraining config trains on, from its model shape alone (None when the vocabulary,
    hence the parameter count, is only known from a tokenizer that is not available offline)."""
    vocab = cfg.model.vocab_size or get_preset(cfg.model.preset).vocab_size
    if vocab is None and cfg.tokenizer.name == "bpe":
        vocab = cfg.tokenizer.vocab_size
    if vocab is None and not cfg.train.max_steps:
        return None
    counts = count_params(resolve_shape(cfg.model, vocab or 1))
    steps, budget = resolve_total_steps(cfg, counts.total, counts.non_embedding)
    per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.data.seq_len
    return dict(total_steps=steps, token_budget=budget, tokens_trained=steps * per_step, tokens_per_step=per_step,
                params_total=counts.total, params_non_embedding=counts.non_embedding)


def paper_budgets() -> list[dict[str, Any]]:
    """The paper's pretraining budgets (Table 1 shapes at 20 TPP; OLMo-2-1B also at 140 TPP)."""
    out = []
    for preset, tpp in PAPER_RUNS:
        n = count_params(get_preset(preset)).total
        out.append(dict(run=f"{preset} @ {tpp:g} TPP", tokens=int(tpp * n)))
    return out


def cached_meta(cfg) -> dict | None:
    """meta.json of the config's token cache if it is prepared and its tokenizer is local (no download)."""
    tdir = tokenizer_dir(cfg.data, cfg.tokenizer)
    if tdir is None:
        p = Path(cfg.tokenizer.name).expanduser()
        tdir = p if p.is_dir() else None
    if tdir is None or not (tdir / "tokenizer.json").is_file():
        return None
    prepared = load_prepared(token_cache_dir(cfg.data, load_tokenizer(tdir)), tdir)
    return prepared.meta if prepared is not None else None


def epochs_for(cfg, meta: dict | None = None) -> float | None:
    """Epochs a pretraining config makes over its prepared training tokens (packed whole sequences, as the
    trainer counts them); None when the cache is not prepared or the budget is unknown offline."""
    meta = meta if meta is not None else cached_meta(cfg)
    budget = token_budget(cfg)
    if meta is None or budget is None:
        return None
    usable = meta["train_tokens"] // cfg.data.seq_len * cfg.data.seq_len
    return budget["tokens_trained"] / max(usable, 1)
