"""How the analyses' JSON files become ``results.csv`` columns (the study's analyze stage, ``plasticity analyze
--compare`` and the report read them through here, so a value has one column name everywhere)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from plasticity.analysis.rank import mean_over_layers, selected_layers
from plasticity.analysis.stats import finite_or_none
from plasticity.files import read_json_or_none


def analysis_columns(analysis_dir: Path) -> dict[str, Any]:
    """The columns of one ``analysis/`` folder: ``weight_norm`` (norms.json), the rank fractions (rank.json, see
    `rank_columns`), ``train_val_gap`` / ``final_model_train_loss`` (Eq. 3's training loss) / ``unseen_seen_gap``
    (gap.json; None for a bare checkpoint), ``probe_<set>`` and ``probe_mean_best`` (probes.json)."""
    a, out = Path(analysis_dir), {}
    if (norms := read_json_or_none(a / "norms.json")) is not None:
        out["weight_norm"] = norms["total_norm"]
    if (rank := read_json_or_none(a / "rank.json")) is not None and rank.get("checkpoints"):
        out.update(rank_columns(rank))
    if (gap := read_json_or_none(a / "gap.json")) is not None:
        out["train_val_gap"] = (gap.get("train_val") or {}).get("gap")
        out["final_model_train_loss"] = (gap.get("train_val") or {}).get("train_loss")
        out["unseen_seen_gap"] = (gap.get("unseen_seen") or {}).get("gap")
    if (probes := read_json_or_none(a / "probes.json")) is not None:
        for name, ps in probes["sets"].items():
            out[f"probe_{name}"] = ps["best_test_accuracy"]
        out["probe_mean_best"] = probe_mean_best(probes)
    return out


def rank_columns(rank: dict[str, Any]) -> dict[str, Any]:
    """Final checkpoint: ``qk_rank_frac`` / ``vp_rank_frac`` (mean over all layers and heads, ours) and
    ``qk_rank_frac_layers`` / ``vp_rank_frac_layers`` over ``rank_layers`` (the paper's Figs 5, 26: layers 5 and
    15, or the configured ones; rank.json written before these existed: the paper's default for its depth)."""
    last = rank["checkpoints"][-1]
    out = {"qk_rank_frac": last["mean"]["qk"]["fraction"], "vp_rank_frac": last["mean"]["vp"]["fraction"]}
    sel = rank.get("selected_layers") or (selected_layers(int(last["num_layers"])) if "num_layers" in last else None)
    sm = last.get("selected_mean") or (mean_over_layers(last, sel["layers"]) if sel else None)
    if sel and sm:
        out.update(qk_rank_frac_layers=sm["qk"], vp_rank_frac_layers=sm["vp"],
                   rank_layers=";".join(str(i) for i in sel["layers"]))
    return out


def final_ranks(rank: dict[str, Any]) -> dict[str, Any]:
    """Final checkpoint: ``qk_rank`` / ``vp_rank``, the absolute pseudo-ranks (mean over all layers and heads) behind
    the ``*_rank_frac`` fractions (``plasticity analyze --compare``; results.csv keeps the fractions)."""
    last = rank["checkpoints"][-1]
    return {"qk_rank": last["mean"]["qk"]["rank"], "vp_rank": last["mean"]["vp"]["rank"]}


def probe_mean_best(probes: dict[str, Any] | None) -> float | None:
    """Paper Fig. 25: test accuracy averaged over the probe sets per layer, then the best layer."""
    sets = list(((probes or {}).get("sets") or {}).values())
    per_layer: dict[int, list[float]] = defaultdict(list)
    for s in sets:
        for d in s.get("layers") or []:
            if finite_or_none(d.get("test_accuracy")) is not None:
                per_layer[d["layer"]].append(float(d["test_accuracy"]))
    means = [sum(v) / len(v) for v in per_layer.values() if len(v) == len(sets)]
    return max(means) if means else None


def probe_layer_means(probes: dict[str, Any] | None) -> tuple[list[int], list[float], list[float]]:
    """Paper Fig 24 (right columns): the layers with a train and a test accuracy in every probe set, and per
    layer the mean over the sets of each (train, test)."""
    sets = list(((probes or {}).get("sets") or {}).values())
    per: dict[int, dict[str, list[float]]] = defaultdict(lambda: {"train": [], "test": []})
    for s in sets:
        for d in s.get("layers") or []:
            for k in ("train", "test"):
                if finite_or_none(d.get(f"{k}_accuracy")) is not None:
                    per[d["layer"]][k].append(float(d[f"{k}_accuracy"]))
    layers = sorted(ly for ly, v in per.items() if len(v["train"]) == len(v["test"]) == len(sets) > 0)
    return (layers, [sum(per[ly]["train"]) / len(sets) for ly in layers],
            [sum(per[ly]["test"]) / len(sets) for ly in layers])
