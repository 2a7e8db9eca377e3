"""How many passes over its training data each pretraining run of a plan makes (`plasticity study --dry-run`).

Exact once the data stage has tokenized the source (its marker records ``train_tokens``); before that, for the
Hub datasets of the paper configs, an estimate from the dataset card's token count (counted with another
tokenizer, so approximate); otherwise unknown. The paper pretrains for one epoch (Tables 4-5)."""

from __future__ import annotations

from plasticity.study.plan import Plan
from plasticity.study.stages import STAGES
from plasticity.study.state import read_marker

TOKENS = "tokens"  # what the data stage provides and pretraining consumes (`Stage.provides`)

# (source, hf_config) -> (tokens, how they were counted): sizes published on the dataset cards
KNOWN_HUB_TOKENS: dict[tuple[str, str | None], tuple[float, str]] = {
    ("hf:HuggingFaceFW/fineweb-edu", "sample-10BT"): (10e9, "GPT-2 tokens, dataset card"),
    ("hf:HuggingFaceFW/fineweb-edu", "sample-100BT"): (100e9, "GPT-2 tokens, dataset card"),
    ("hf:HuggingFaceFW/fineweb-edu", "sample-350BT"): (350e9, "GPT-2 tokens, dataset card"),
    ("hf:HuggingFaceFW/fineweb-edu", None): (1.3e12, "GPT-2 tokens, dataset card"),
    ("hf:HuggingFaceFW/fineweb-edu", "default"): (1.3e12, "GPT-2 tokens, dataset card"),
    ("hf:allenai/olmo-mix-1124", None): (3.9e12, "OLMo-2 tokens, dataset card"),
}


def data_tokens(plan: Plan, data_id: str) -> tuple[float | None, str]:
    """(training tokens of a data node, where the number comes from): the data stage's count when it has run,
    else a dataset card's size for a known Hub source, else (None, why it is unknown)."""
    m = read_marker(plan.root, data_id) or {}
    n = (m.get("metrics") or {}).get("train_tokens") if m.get("status") == "done" else None
    if isinstance(n, int | float) and n > 0:
        return float(n), "tokenized"
    data = plan.nodes[data_id].config["data"]
    src, cfg = data["source"], data.get("hf_config")
    if (src, cfg) in KNOWN_HUB_TOKENS:
        tokens, how = KNOWN_HUB_TOKENS[(src, cfg)]
        return tokens * (1 - float(data.get("val_fraction") or 0.0)), f"~, {how}"
    if src.startswith("hf:"):
        return None, f"unknown without the Hub ({src}{f' {cfg}' if cfg else ''}: size not known offline)"
    return None, f"unknown until the data stage has tokenized {src}"


def epoch_lines(plan: Plan) -> list[str]:
    """One line per (data node, token budget) of the plan's pretraining runs: their epochs over the data."""
    groups: dict[tuple[str, int], list[str]] = {}
    for n in plan.nodes.values():
        if STAGES[n.kind].consumes == TOKENS and n.est_tokens:  # a pretraining run and its token cache
            data_id = next((d for d in n.deps if STAGES[plan.nodes[d].kind].provides == TOKENS), None)
            if data_id is not None:
                groups.setdefault((data_id, int(n.est_tokens)), []).append(n.id)
    out = []
    for (data_id, budget), runs in groups.items():
        tokens, how = data_tokens(plan, data_id)
        who = f"{len(runs)} pretraining run{'s' if len(runs) > 1 else ''} ({budget:,} tokens each)"
        if tokens is None:
            out.append(f"{who}: epochs over {data_id} {how}")
            continue
        approx, ep = ("~" if how.startswith("~") else ""), budget / tokens
        verdict = ("a single pass, no token repeated (the paper: 1 epoch)" if ep <= 1 else
                   f"the data repeats {ep:.2f} times (the paper: 1 epoch)")
        out.append(f"{who}: {approx}{ep:.2f} epochs of {data_id} ({approx}{_short(tokens)} training tokens, "
                   f"{how.lstrip('~, ')}): {verdict}")
    return out


def _short(n: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:,.0f}"
