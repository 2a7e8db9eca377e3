"""``plasticity analyze``: run the mechanistic analyses on a pretraining run (or an external HF checkpoint).

:func:`run_analyze` writes ``analysis/{probes,rank,gap,norms}.json``; :func:`compare_runs` combines several
analysed runs into one row per run (keyed by weight decay) plus correlations with the final validation loss.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plasticity.analysis.stats import finite_or_none
from plasticity.checkpoints import (
    ANALYSIS_DIR,
    ModelSource,
    RunDir,
    check_model_dir,
    check_vocab,
    load_model_checked,
    read_manifest,
    resolve_model_source,
    verify_checkpoint,
)
from plasticity.config import AnalyzeConfig, PretrainConfig
from plasticity.errors import CheckpointError, DataError, UserError
from plasticity.files import BadLine, iter_jsonl, write_json

PROBE_SETS = ("bbc_topic", "sst2", "ag_news")
_PROBE_FILES = {"sst2": ("sst2", "train.jsonl", "sentence"), "ag_news": ("ag_news", "train.jsonl", "text")}
# Hub ids for users without the local copies: same field names as the local JSONL files.
_PROBE_HUB = {"sst2": ("stanfordnlp/sst2", "train"), "ag_news": ("fancyzhx/ag_news", "train")}


# --------------------------------------------------------------------------------------------- target


def _resolve_target(target: str | Path | ModelSource, out_dir: str | Path | None,
                    revision: str | None) -> tuple[ModelSource, Path, Path]:
    """(source, model dir, output dir): a run analyses its ``final/`` model into ``<run>/analysis``, a checkpoint
    dir into ``<dir>/analysis``; a Hub model (fetched here) needs `out_dir`."""
    source = target if isinstance(target, ModelSource) else resolve_model_source(target, revision)
    if source.kind == "hub" and out_dir is None:
        raise UserError(f"{source.describe()}: --out is required when TARGET is a Hub model")
    model_dir = source.local_dir()
    check_model_dir(model_dir)  # manifest, architecture, safetensors: before any work or output
    default_out = RunDir(source.run_dir).analysis_dir if source.kind == "run" else model_dir / ANALYSIS_DIR
    return source, model_dir, Path(out_dir) if out_dir is not None else default_out


def default_probe_sets(data_root: str | Path | None = None) -> tuple[str, ...]:
    """``("sst2", "ag_news")`` when a local data root with them exists, else the offline ``("bbc_topic",)``."""
    from plasticity.tasks.data_root import resolve_data_root

    root = resolve_data_root(data_root)
    if root is not None and all((root / d / f).is_file() for d, f, _ in _PROBE_FILES.values()):
        return ("sst2", "ag_news")
    return ("bbc_topic",)


def check_probe_sets(sets: Sequence[str], data_root: str | Path | None = None) -> None:
    """Refuse in one line (DataError) before any work when a pinned paper probe set (sst2, ag_news) has neither
    a local copy nor the `datasets` package for its Hub copy: a paper config never falls back to bbc_topic."""
    import importlib.util

    from plasticity.tasks.data_root import resolve_data_root

    root = resolve_data_root(data_root)
    missing = [s for s in sets if s in _PROBE_FILES
               and not (root is not None and (root / _PROBE_FILES[s][0] / _PROBE_FILES[s][1]).is_file())]
    if missing and importlib.util.find_spec("datasets") is None:
        raise DataError(f"probe sets {', '.join(missing)}: no local copy (data root: {root or 'none'}) and no "
                        "'datasets' package for the Hub copies (pip install 'lm-plasticity[hub]')")


# --------------------------------------------------------------------------------------------- probes


def _balanced_sample(texts: list[str], labels: list[Any], n: int, seed: int) -> tuple[list[str], list[Any]]:
    """Up to ``n`` examples, as class-balanced as the data allows, deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    by: dict[Any, list[int]] = {}
    for i, y in enumerate(labels):
        by.setdefault(y, []).append(i)
    pools = {y: list(rng.permutation(ix)) for y, ix in sorted(by.items(), key=lambda kv: str(kv[0]))}
    chosen: list[int] = []
    while len(chosen) < n and any(pools.values()):
        for y in list(pools):
            if pools[y] and len(chosen) < n:
                chosen.append(int(pools[y].pop()))
    chosen.sort()
    return [texts[i] for i in chosen], [labels[i] for i in chosen]


def load_probe_set(name: str, n: int, data_root: str | Path | None = None, seed: int = 0) -> tuple[list[str], list]:
    """``(texts, labels)`` of up to ``n`` examples of probe set ``name``."""
    if name == "bbc_topic":
        from plasticity.data.sources import bbc_news_articles, is_probe_holdout

        rows = [(topic, text) for aid, topic, text in bbc_news_articles() if is_probe_holdout(aid)]
        texts, labels = [t for _, t in rows], [y for y, _ in rows]
    elif name in _PROBE_FILES:
        from plasticity.tasks.data_root import resolve_data_root

        root = resolve_data_root(data_root)
        d, f, field = _PROBE_FILES[name]
        path = root / d / f if root is not None else None
        if path is None or not path.is_file():
            texts, labels = _probe_from_hub(name, field, path)
        else:
            texts, labels = _read_probe_jsonl(path, field)
    else:
        raise UserError(f"unknown probe set {name!r}; choose from {', '.join(PROBE_SETS)}")
    texts, labels = _balanced_sample(texts, labels, n, seed)
    if len(set(labels)) < 2 or len(texts) < 10:
        raise DataError(f"probe set {name}: need >= 10 examples of >= 2 classes, got {len(texts)}")
    return texts, labels


def _read_probe_jsonl(path: Path, field: str) -> tuple[list[str], list]:
    texts, labels = [], []
    for ln, r in iter_jsonl(path):
        try:
            t, y = r[field], r["label"]
        except (KeyError, TypeError, IndexError):  # a BadLine, a list, a row without the fields
            raise DataError(f"{path}:{ln}: expected JSON with '{field}' and 'label'") from None
        if isinstance(t, str) and t.strip():
            texts.append(t)
            labels.append(y)
    return texts, labels


def _probe_from_hub(name: str, field: str, local: Path | None) -> tuple[list[str], list]:
    """The probe set from the HF Hub (users with internet and ``pip install 'lm-plasticity[hub]'``)."""
    where = f"{local} not found" if local else "no local data root"
    try:
        import datasets
    except ImportError:
        raise DataError(f"probe set {name}: {where}, and the 'datasets' package for the Hub copy is not "
                        "installed (pip install 'lm-plasticity[hub]')") from None
    hub_id, split = _PROBE_HUB[name]
    try:
        ds = datasets.load_dataset(hub_id, split=split)
    except Exception as e:  # offline, unknown id, ...
        raise DataError(f"probe set {name}: {where}, and the Hub copy {hub_id} failed: {str(e)[:120]}") from None
    return [r[field] for r in ds], [r["label"] for r in ds]


def _analyse_probes(model, tokenizer, probe_sets: Sequence[str], n_probe: int, data_root, log) -> dict[str, Any]:
    from plasticity.analysis.probes import extract_features, probe_layers

    max_len = int(min(512, getattr(model.config, "max_position_embeddings", 512) or 512))
    out: dict[str, Any] = {"n_probe": int(n_probe), "max_length": max_len, "sets": {}}
    for name in probe_sets:
        texts, labels = load_probe_set(name, n_probe, data_root)
        log(f"probes: {name}: {len(texts)} examples")
        feats = extract_features(model, tokenizer, texts, batch_size=16, max_length=max_len)
        res = probe_layers(feats, labels, seed=0)
        res.pop("train_idx", None)
        res.pop("test_idx", None)
        out["sets"][name] = {"n_examples": len(texts), **res}
    return out


# --------------------------------------------------------------------------------------------- gap


def _sample(ix: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ix, size=min(n, ix.size), replace=False)) if ix.size else ix


def _run_gap(run: RunDir, summary: dict[str, Any], model, n_seq: int, log) -> dict[str, Any]:
    """Train-val gap on seen training sequences vs validation, and unseen-seen gap on the run's own data."""
    from plasticity.analysis.gap import train_val_gap, unseen_seen_gap
    from plasticity.data.packed import PretrainBatches, prepare_data

    cfg = run.config(PretrainConfig)
    steps = int(summary.get("steps") or 0)
    if steps <= 0:
        raise DataError(f"{run.summary_path}: no completed steps recorded (unfinished run?)")
    data = prepare_data(cfg.data, cfg.tokenizer, log=log)
    L = cfg.data.seq_len
    train = data.sequences("train", L)
    val = data.sequences("val", L)
    batches = PretrainBatches(train, cfg.train.micro_batch_size, cfg.train.grad_accum, cfg.train.seed)
    samples = steps * cfg.train.grad_accum * cfg.train.micro_batch_size
    if samples >= len(train):
        seen_ix = np.arange(len(train))
    else:
        seen_ix = np.unique(np.asarray(
            [i for s in range(steps) for m in range(cfg.train.grad_accum) for i in batches.indices(s, m)],
            dtype=np.int64))
    unseen_ix = np.setdiff1d(np.arange(len(train)), seen_ix)
    bs = max(1, cfg.train.micro_batch_size)

    m = min(n_seq, seen_ix.size, len(val))
    seen_s, val_s = _sample(seen_ix, m, 0), _sample(np.arange(len(val)), m, 0)
    tv = train_val_gap(model, train.get(seen_s), val.get(val_s), bs)
    tv["train_set"] = ("m training sequences the run trained on (its batch schedule), drawn uniformly without "
                       "replacement, seed 0")
    tv["val_set"] = "m validation sequences drawn uniformly without replacement, seed 0"
    out: dict[str, Any] = {"train_val": tv, "n_sequences": int(m), "seq_len": int(L),
                           "n_train_sequences": len(train), "n_seen": int(seen_ix.size),
                           "n_unseen": int(unseen_ix.size), "n_val_sequences": len(val), "steps": steps,
                           "epochs": samples / len(train)}
    if unseen_ix.size == 0:
        out["unseen_seen"] = None
        out["unseen_seen_reason"] = (f"training covered every training sequence ({samples / len(train):.2f} "
                                     "epochs): no unseen sequences")
    else:
        k = min(n_seq, seen_ix.size, unseen_ix.size)
        out["unseen_seen"] = unseen_seen_gap(model, train.get(_sample(seen_ix, k, 1)),
                                             train.get(_sample(unseen_ix, k, 1)), bs)
    return out


def _read_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: gap data file not found")
    if path.suffix == ".jsonl":
        texts = []
        for ln, r in iter_jsonl(path, errors="replace"):
            if isinstance(r, BadLine):
                raise DataError(f"{path}:{ln}: not valid JSON")
            t = r.get("text") if isinstance(r, dict) else None
            if isinstance(t, str) and t.strip():
                texts.append(t)
        return texts
    raw = path.read_text(encoding="utf-8", errors="replace")
    return [t for t in raw.split("\n\n") if t.strip()]


def _external_gap(model, tokenizer, gap_data: Path | None, n_seq: int, seq_len: int) -> dict[str, Any]:
    """Held-out loss on user-given text for an external checkpoint (its training data is unknown)."""
    base: dict[str, Any] = {"train_val": None, "unseen_seen": None,
                            "unseen_seen_reason": "training data of an external checkpoint is unknown"}
    if gap_data is None:
        return {**base, "reason": "external checkpoint: pass --gap-data TEXT_OR_JSONL to measure a held-out loss",
                "n_sequences": 0, "seq_len": None}
    from plasticity.analysis.gap import mean_loss

    texts = _read_texts(Path(gap_data))
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
        if len(ids) >= n_seq * seq_len:
            break
    n = min(n_seq, len(ids) // seq_len)
    if n == 0:
        raise DataError(f"{gap_data}: fewer than {seq_len} tokens, not one full sequence")
    seqs = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
    return {**base, "reason": "external checkpoint: train-val gap needs its training data; only data_loss given",
            "data_loss": {"path": str(gap_data), "loss": mean_loss(model, seqs, 8)},
            "n_sequences": int(n), "seq_len": int(seq_len)}


# --------------------------------------------------------------------------------------------- rank


def _rank_json(entries: list[dict[str, Any]], threshold: float,
               skipped: list[dict[str, Any]] | None = None, layers: list[int] | None = None) -> dict[str, Any]:
    """rank.json; ``selected_layers`` and each checkpoint's ``selected_mean``: the paper's quantity (Figs 5, 26:
    the average pseudo-rank in layers 5 and 15, or `layers`), beside ``mean`` over all layers and heads."""
    from plasticity.analysis.rank import mean_over_layers, selected_layers

    keep = ("step", "path", "mean", "layers", "num_layers", "num_heads", "num_kv_heads", "head_dim",
            "hidden_size", "max_rank", "method")
    sel = selected_layers(int(entries[0]["num_layers"]), layers) if entries else None
    cks = [dict({k: e[k] for k in keep if k in e},
                selected_mean=mean_over_layers(e, sel["layers"]) if sel else None) for e in entries]
    return {"threshold": float(threshold), "selected_layers": sel, "checkpoints": cks, "skipped": list(skipped or [])}


def _verified_snapshots(ckpt_root: Path, log) -> tuple[list[tuple[int, Path]], list[dict[str, Any]]]:
    """(step, dir) of every ``step_*`` checkpoint whose files match their manifest (sha256), and a record
    ``{path, reason}`` of each one that does not (logged): damaged snapshots are skipped, never silently."""
    good, skipped = [], []
    for d in sorted(ckpt_root.glob("step_*")) if ckpt_root.is_dir() else []:
        if not d.is_dir():
            continue
        try:
            step = int(d.name.split("_", 1)[1])
            reason = verify_checkpoint(d, hashes=True)
        except ValueError:
            step, reason = -1, "not a step_<N> checkpoint name"
        if reason is None:
            good.append((step, d))
        else:
            skipped.append({"path": str(d), "step": step, "reason": reason})
            log(f"rank: skipping {d}: {reason}")
    return good, skipped


# --------------------------------------------------------------------------------------------- main


def run_analyze(
    source: str | Path | ModelSource,
    cfg: AnalyzeConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    log: Callable[[str], Any] = print,
    revision: str | None = None,
) -> dict[str, Any]:
    """Analyse a pretraining run dir (its ``final/`` model; ranks over every checkpoint), an HF checkpoint dir or a
    Hub model (at `revision`; needs `out_dir`) with the settings `cfg` (a validated `AnalyzeConfig`, default
    ``AnalyzeConfig()``: which analyses (`what`), probe sets, sizes, rank layers, data root, gap data).
    Returns ``{"target", "kind": "run"|"checkpoint", "out_dir", "files": {name: path}, name: result...}``.
    """
    from plasticity.analysis.norms import parameter_norms
    from plasticity.analysis.rank import ranks_over_checkpoints
    from plasticity.files import check_output_dir

    cfg = cfg if cfg is not None else AnalyzeConfig()
    sel = set(cfg.what)
    if not sel:
        raise UserError("nothing to analyse: --what is empty")
    source, model_dir, out = _resolve_target(source, out_dir, revision)
    is_run = source.kind == "run"
    run = RunDir(source.run_dir) if is_run else None
    check_output_dir(out, "--out")
    summary = (run.summary(strict=True) or {}) if run is not None else {}  # damaged: one line before any output
    sets = tuple(cfg.probe_sets) if cfg.probe_sets else default_probe_sets(cfg.data_root)
    for s in sets:
        if s not in PROBE_SETS:
            raise UserError(f"unknown probe set {s!r}; choose from {', '.join(PROBE_SETS)}")

    result: dict[str, Any] = {"target": source.describe() if source.kind == "hub" else str(run or model_dir),
                              "kind": "run" if is_run else "checkpoint", "out_dir": str(out),
                              "files": {}}

    def save(name: str, obj: dict[str, Any]) -> None:
        path = out / f"{name}.json"
        write_json(path, obj)
        result[name] = obj
        result["files"][name] = str(path)
        log(f"wrote {path}")

    if "rank" in sel:
        ckpts: list[tuple[int, Path]] = []
        skipped: list[dict[str, Any]] = []
        if run is not None:
            ckpts, skipped = _verified_snapshots(run.checkpoints_dir, log)
            final_step = summary.get("steps")
            if final_step is None:
                final_step = (read_manifest(model_dir) or {}).get("step", -1)
            ckpts = [(s, d) for s, d in ckpts if s != final_step] + [(int(final_step), model_dir)]
        else:
            ckpts = [(-1, model_dir)]
        log(f"rank: {len(ckpts)} checkpoint(s)" + (f", {len(skipped)} skipped (damaged)" if skipped else ""))
        save("rank", _rank_json(ranks_over_checkpoints(ckpts, cfg.rank_threshold), cfg.rank_threshold, skipped,
                                cfg.rank_layers))

    if sel & {"probes", "gap", "norms"}:
        from plasticity.tokenizer import load_tokenizer

        model = load_model_checked(model_dir)
        try:
            if sel & {"probes", "gap"}:  # before anything is written: a bad tokenizer leaves no partial analysis
                try:
                    tokenizer = load_tokenizer(model_dir)
                except Exception as e:
                    raise CheckpointError(f"{model_dir}: cannot load its tokenizer ({type(e).__name__})") from None
                check_vocab(tokenizer, model, model_dir)
            if "norms" in sel:
                save("norms", parameter_norms(model))
            if "probes" in sel:
                save("probes", _analyse_probes(model, tokenizer, sets, cfg.n_probe, cfg.data_root, log))
            if "gap" in sel:
                if run is not None:
                    gap = _run_gap(run, summary, model, cfg.gap_sequences, log)
                else:
                    ctx = int(getattr(model.config, "max_position_embeddings", 256) or 256)
                    gap = _external_gap(model, tokenizer, Path(cfg.gap_data) if cfg.gap_data else None,
                                        cfg.gap_sequences, min(ctx, 256))
                save("gap", gap)
        finally:
            del model
            gc.collect()
    return result


# --------------------------------------------------------------------------------------------- compare




def compare_row(run: str | Path) -> dict[str, Any]:
    """One row of :func:`compare_runs` from an analysed run dir: ``run``, ``weight_decay``, ``final_val_loss``, the
    absolute pseudo-ranks ``qk_rank`` / ``vp_rank`` (`columns.final_ranks`) and the analysis columns of the
    study's results.csv, under the same names (`columns.analysis_columns`)."""
    from plasticity.analysis.columns import analysis_columns, final_ranks
    from plasticity.config import ANALYSES
    from plasticity.files import read_json

    rd = RunDir(run)
    if not rd.config_path.is_file():
        raise UserError(f"{rd}: not a pretraining run (no config.yaml)")
    if not rd.analysis_dir.is_dir():
        raise UserError(f"{rd}: not analysed yet (run 'plasticity analyze {rd}' first)")
    cfg = rd.config(PretrainConfig)
    summary = rd.summary(strict=True) or {}
    for name in ANALYSES:  # a damaged analysis file is a one-line error, not a silently missing column
        if rd.analysis_path(name).is_file():
            read_json(rd.analysis_path(name))
    row: dict[str, Any] = {"run": str(rd), "weight_decay": float(cfg.optim.weight_decay),
                           "final_val_loss": finite_or_none(summary.get("final_val_loss"))}
    if (rank := rd.analysis("rank")) is not None and rank.get("checkpoints"):
        row.update(final_ranks(rank))
    for key, value in analysis_columns(rd.analysis_dir).items():
        row[key] = finite_or_none(value) if isinstance(value, int | float) else value
    return row


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> dict[str, Any]:
    """Rows (sorted by weight decay) of analysed runs, plus correlations of each quantity with the final
    validation loss when there are >= 3 runs. Written to ``out`` when given."""
    from plasticity.analysis.stats import correlation, leave_one_out

    if not run_dirs:
        raise UserError("no runs to compare")
    rows = sorted((compare_row(r) for r in run_dirs), key=lambda r: (r["weight_decay"], r["run"]))
    keys = sorted({k for r in rows for k in r} - {"run", "weight_decay", "final_val_loss"})
    corr: dict[str, Any] = {}
    if len(rows) >= 3:
        for k in ["weight_decay", *keys]:
            pairs = [(r["final_val_loss"], r.get(k)) for r in rows
                     if r.get("final_val_loss") is not None and _number(r.get(k))]
            if len(pairs) >= 3:
                corr[k] = correlation([p[1] for p in pairs], [p[0] for p in pairs])
                corr[k]["leave_one_out"] = leave_one_out([p[1] for p in pairs], [p[0] for p in pairs])
    res = {"n_runs": len(rows), "quantities": keys, "rows": rows, "correlations_with_val_loss": corr,
           "correlations_note": None if len(rows) >= 3 else "correlations need >= 3 runs"}
    if out is not None:
        write_json(out, res)
    return res
