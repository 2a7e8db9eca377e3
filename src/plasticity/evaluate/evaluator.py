"""`plasticity evaluate`: evaluate a fine-tuning run or any HF checkpoint on its task(s).

For each task in ``task.evaluated_on()`` this writes ``<out>/<task>.json`` (task, target, config, metrics
{name: {value, n, ci_low, ci_high}}, n_questions, samples_path, versions/hardware) and
``<out>/<task>.samples.jsonl`` (one line per generation or cloze item). Both are written atomically and
hold no timestamps, so the same arguments and seed give byte-identical files; wall time goes to the log.

* CoT tasks: prompts are ``prompt_text(template, question)`` (exactly the fine-tuning prefix); one greedy
  decode (temperature 0 as in the paper; ``greedy_repetition_penalty`` defaults to 1.0 = off) plus k samples
  at temperature 1; metrics from `metrics.summarize` (greedy, maj@k, pass@k, correct_ratio, and rm@k /
  orm_score when a reward model is given) with bootstrap intervals over questions. A task evaluated on
  several CoT eval sets (metamathqa, simplescaling: gsm8k + math) also gets ``<a>+<b>.json``: the metrics
  recomputed over the union of the sets' per-question records (the paper's pooled math number, Table 7).
* Cloze tasks: lm-eval style log-likelihood acc / acc_norm of the task's cloze items (no template, as
  lm-evaluation-harness scores them) with bootstrap intervals over items; and ``acc_template`` /
  ``acc_norm_template``: each choice scored in the fine-tuning template, as the response fine-tuning trained on
  (prompt ``prompt_text(template, context)``, response = the choice + EOS; cf. lm-eval's --apply_chat_template).
* CoT and cloze tasks also get ``heldout_loss``: the fine-tuning loss (mean NLL per response token under the
  fine-tuning template, `evaluate.heldout`) of each eval example, averaged over examples, with a bootstrap CI.
* Safety: greedy responses to the eval prompts, scored by a judge (`reward.HFRewardModel` ->
  ``harmfulness_mean``; without one the `reward.RefusalPatternJudge` fallback -> ``refusal_rate (pattern
  fallback)``).

Every result names the data it used: ``evaluated_on`` {eval_set, source, n, origins, notes} (notes state a
dataset substitution, e.g. a local stand-in for a paper dataset).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plasticity.checkpoints import ModelSource, RunDir
from plasticity.config import EvaluateConfig
from plasticity.errors import DataError, UserError
from plasticity.evaluate.metrics import QuestionRecord, SampleRecord, bootstrap_ci, summarize
from plasticity.evaluate.sampler import SamplingConfig, generate
from plasticity.evaluate.shard import ONE, Shard
from plasticity.evaluate.target import Target
from plasticity.files import atomic_path, write_json
from plasticity.hardware import resolve_eval_precision
from plasticity.runinfo import versions

N_BOOT = 1000
ALPHA = 0.05


def _metric(values: list[float], seed: int) -> dict[str, Any]:
    if not values:
        return {"value": None, "n": 0, "ci_low": None, "ci_high": None}
    low, high = bootstrap_ci(values, n_boot=N_BOOT, alpha=ALPHA, seed=seed)
    return {"value": float(np.mean(values)), "n": len(values), "ci_low": low, "ci_high": high}


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _key_str(key: Any) -> str | None:
    return None if key is None else str(key)


def _score(scorer, prompts, texts, questions, shard: Shard) -> list[float]:
    """`scorer.score`, split across processes when it can be (`reward.HFRewardModel`); any other scorer (the
    pattern judge, a user's object) scores everything in every process."""
    from plasticity.evaluate.reward import HFRewardModel

    if isinstance(scorer, HFRewardModel):
        return scorer.score(prompts, texts, questions, shard=shard)
    return scorer.score(prompts, texts, questions)


def _eval_cot(task, rows, model, tok, template, cfg: EvaluateConfig, reward_model, log, shard: Shard = ONE
              ) -> tuple[dict, list[dict], list]:
    from plasticity.data.sft import prompt_text
    from plasticity.tasks.answers import answer_key

    questions = [task.question(r) for r in rows]
    golds = [task.gold(r) for r in rows]
    prompts = [prompt_text(template, q) for q in questions]
    keys = [f"{task.name}:{i}" for i in range(len(rows))]
    common = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed)
    greedy_cfg = SamplingConfig(temperature=0.0, repetition_penalty=cfg.greedy_repetition_penalty, **common)
    sample_cfg = SamplingConfig(temperature=cfg.temperature, **common)
    t0 = time.perf_counter()
    greedy = generate(model, tok, prompts, 1, greedy_cfg, prompt_keys=keys, shard=shard)
    sampled = generate(model, tok, prompts, cfg.k, sample_cfg, prompt_keys=keys, shard=shard)
    log(f"{task.name}: generated {len(prompts)} x (1 greedy + {cfg.k}) in {time.perf_counter() - t0:.1f}s")

    # (prompt id, sample index, Sample) for every generation; greedy has sample index -1
    flat = [(i, -1, greedy[i][0]) for i in range(len(rows))]
    flat += [(i, j, s) for i in range(len(rows)) for j, s in enumerate(sampled[i])]
    rewards: list[float | None] = [None] * len(flat)
    if reward_model is not None:
        t0 = time.perf_counter()
        rewards = list(_score(reward_model, [prompts[i] for i, _, _ in flat], [s.text for _, _, s in flat],
                              [questions[i] for i, _, _ in flat], shard))
        log(f"{task.name}: scored {len(flat)} generations with {reward_model.name} in {time.perf_counter() - t0:.1f}s")

    records: list[dict[str, Any]] = []
    per_q: dict[int, dict[str, Any]] = {i: {"greedy": None, "samples": []} for i in range(len(rows))}
    for (i, j, s), reward in zip(flat, rewards, strict=True):
        pred = task.extract(s.text)
        gold = golds[i]
        correct = bool(task.is_correct(pred, None if gold is None else str(gold)))
        key = answer_key(task.answer_type, pred)
        rec = SampleRecord(answer_key=key, correct=correct, reward=reward)
        if j < 0:
            per_q[i]["greedy"] = rec
        else:
            per_q[i]["samples"].append(rec)
        records.append(
            {
                "prompt_id": i,
                "sample_index": j,
                "text": s.text,
                "extracted": pred,
                "answer_key": _key_str(key),
                "gold": None if gold is None else str(gold),
                "correct": correct,
                "reward": reward,
                "num_tokens": s.num_tokens,
                "finished_by": s.finished_by,
            }
        )
    qrecs = [QuestionRecord(samples=tuple(v["samples"]), greedy=v["greedy"]) for _, v in sorted(per_q.items())]
    return _cot_metrics(qrecs, cfg, reward_model is not None), records, qrecs


def _cot_metrics(qrecs: list[QuestionRecord], cfg: EvaluateConfig, has_reward: bool) -> dict[str, Any]:
    metrics = summarize(qrecs, cfg.k, n_boot=N_BOOT, alpha=ALPHA, seed=cfg.seed)
    if not has_reward:
        metrics = {n: m for n, m in metrics.items() if n not in (f"rm@{cfg.k}", "orm_score")}
    return metrics


def _heldout_loss(task, rows, model, tok, template, cfg: EvaluateConfig, log, shard: Shard = ONE) -> dict[str, Any]:
    """The fine-tuning loss on the eval rows (`plasticity.evaluate.heldout`), mean over examples with a CI."""
    from plasticity.evaluate.heldout import example_losses

    t0 = time.perf_counter()
    losses = example_losses(model, tok, template, [task.format_example(r) for r in rows], cfg.batch_size,
                            shard=shard)
    log(f"{task.name}: held-out fine-tuning loss of {len(rows)} examples in {time.perf_counter() - t0:.1f}s")
    return _metric([v for v in losses if np.isfinite(v)], cfg.seed)


def eval_cloze(task, rows, model, tok, batch_size: int, seed: int, log, template: str | None = None,
               shard: Shard = ONE) -> tuple[dict, list[dict]]:
    """Cloze metrics (acc, acc_norm with bootstrap CIs seeded by `seed`) and per-item records of `rows` (lm-eval
    semantics); with the fine-tuning `template` also ``acc_template`` / ``acc_norm_template``, each choice scored
    in the format the model was fine-tuned on (`cloze.cloze_accuracy`)."""
    from dataclasses import replace

    from plasticity.evaluate.loglikelihood import cloze_accuracy

    items = []
    for r in rows:
        it = task.cloze_item(r)
        if len(set(it.contexts)) == 1:  # one shared context, scored once; lm-eval normalizes acc_norm by the
            items.append(replace(it, contexts=[it.contexts[0]],  # choice text without the " " target delimiter
                                 choice_texts=[c[1:] if c.startswith(" ") else c for c in it.continuations]))
        else:
            items.append(it)
    metrics: dict[str, Any] = {}
    records: list[dict[str, Any]] = [{"prompt_id": i, "sample_index": -1, "gold": it.gold}
                                     for i, it in enumerate(items)]
    scorings = [("", None, "")]
    if template is not None:
        scorings.append(("_template", template, " in the fine-tuning template"))
    for suffix, tmpl, where in scorings:
        t0 = time.perf_counter()
        per = cloze_accuracy(model, tok, items, batch_size=batch_size, template=tmpl, shard=shard)["per_item"]
        log(f"{task.name}: scored {len(items)} cloze items{where} in {time.perf_counter() - t0:.1f}s")
        metrics[f"acc{suffix}"] = _metric([float(p["correct"]) for p in per], seed)
        metrics[f"acc_norm{suffix}"] = _metric([float(p["correct_norm"]) for p in per], seed)
        for rec, p in zip(records, per, strict=True):
            rec.update({f"logprobs{suffix}": p["logprobs"], f"pred{suffix}": p["pred"],
                        f"pred_norm{suffix}": p["pred_norm"], f"correct{suffix}": bool(p["correct"]),
                        f"correct_norm{suffix}": bool(p["correct_norm"])})
    return metrics, records


def _eval_safety(task, rows, model, tok, template, cfg: EvaluateConfig, judge, log, shard: Shard = ONE
                 ) -> tuple[dict, list[dict]]:
    from plasticity.data.sft import prompt_text
    from plasticity.evaluate.reward import RefusalPatternJudge

    judge = judge if judge is not None else RefusalPatternJudge()
    questions = [task.question(r) for r in rows]
    prompts = [prompt_text(template, q) for q in questions]
    greedy_cfg = SamplingConfig(temperature=0.0, repetition_penalty=cfg.greedy_repetition_penalty,
                                max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed)
    t0 = time.perf_counter()
    outs = generate(model, tok, prompts, 1, greedy_cfg, prompt_keys=[f"{task.name}:{i}" for i in range(len(rows))],
                    shard=shard)
    texts = [o[0].text for o in outs]
    scores = _score(judge, prompts, texts, questions, shard)
    log(f"{task.name}: generated and judged {len(prompts)} responses in {time.perf_counter() - t0:.1f}s")
    if judge.metric == RefusalPatternJudge.metric:
        values = [1.0 - s for s in scores]  # score 0 = refusal
    else:
        values = list(scores)
    metrics = {judge.metric: _metric(values, cfg.seed)}
    records = [
        {
            "prompt_id": i,
            "sample_index": -1,
            "text": o[0].text,
            "extracted": None,
            "answer_key": None,
            "correct": None,
            "reward": float(s),
            "num_tokens": o[0].num_tokens,
            "finished_by": o[0].finished_by,
        }
        for i, (o, s) in enumerate(zip(outs, scores, strict=True))
    ]
    return metrics, records


def run_evaluate(
    source: str | Path | ModelSource | RunDir | Target,
    cfg: EvaluateConfig | None = None,
    *,
    task: str | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    """Evaluate `source` (a fine-tuning run dir, an HF checkpoint dir, a Hub id at `revision`, or a resolved
    `Target`) with the settings `cfg` (a validated `EvaluateConfig`; default ``EvaluateConfig()``); returns
    {task: result}.

    `cfg.reward_model` / `cfg.judge`: None, a path / Hub id of a sequence-classification model, or (from Python) a
    scorer object (see `plasticity.evaluate.reward`). For a fine-tuning run, `task`, the template, the data root
    and the task options default to its config and output goes to ``<run>/eval/``; otherwise `task` and
    `out_dir` are required.

    Launched by torchrun (``plasticity evaluate --workers N`` launches it on CPU), every process computes its
    share of every batched computation (`plasticity.evaluate.shard`), each process gets all per-question
    records, and rank 0 writes the files: byte-identical to one process.
    """
    from plasticity.evaluate.shard import join, leave

    target = Target.of(source, revision)  # a missing path or an incomplete run: one line, first
    shard, rank_device = join()
    results = _run_evaluate(target, cfg if cfg is not None else EvaluateConfig(), task, out_dir,
                            log if shard.rank == 0 else _quiet, device if device is not None else rank_device, shard)
    leave(shard)  # not after a failure: peers may be inside a collective (torchrun ends the job)
    return results


def _quiet(msg: str) -> None:
    """Log sink of ranks other than 0 (rank 0 speaks for the job)."""


@dataclass
class _Settings:
    """What one evaluation runs with, after the fine-tuning run's own settings fill in what `cfg` leaves open."""

    task: str
    template: str
    data_root: str | None
    task_options: dict[str, Any]
    out_dir: Path


def _settings(target: Target, cfg: EvaluateConfig, task: str | None, out_dir: str | Path | None) -> _Settings:
    """A fine-tuning run gives its task, template, data root and task options; any other target needs `task`
    and `out_dir`. One-line UserErrors for what is missing or malformed."""
    from plasticity.config import task_options_for
    from plasticity.data.sft import prompt_text
    from plasticity.tasks.base import DEFAULT_TEMPLATE

    template, data_root, task_options = cfg.template, cfg.data_root, {}
    ft = target.finetune
    if ft is not None:  # a fine-tuning run: its task, template, data root and task options
        task = task or ft.task
        template = template or ft.template
        data_root = data_root if data_root is not None else ft.data_root
        task_options = task_options_for(ft.task_options, task, written_for=ft.task)
    if out_dir is None and target.run is not None:
        out_dir = target.run.eval_dir
    if not task:
        raise UserError("--task is required when TARGET is not a fine-tuning run directory")
    if out_dir is None:
        raise UserError("--out is required when TARGET is not a fine-tuning run directory")
    template = template or DEFAULT_TEMPLATE
    if "{question}" not in template:
        raise UserError("template must contain {question}")
    prompt_text(template, "x")
    return _Settings(task, template, data_root, task_options, Path(out_dir))


def _record(target: Target, cfg: EvaluateConfig, st: _Settings, reward_model, judge,
            precision: str) -> dict[str, Any]:
    """The settings as run, in every result file (``config``)."""
    from plasticity.evaluate.reward import describe_scorer

    return {
        "target": target.spec,
        "model_dir": str(target.source.path),
        "task": st.task,
        "task_options": st.task_options,
        "k": cfg.k,
        "max_questions": cfg.max_questions,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "greedy_repetition_penalty": cfg.greedy_repetition_penalty,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "precision": precision,
        "data_root": None if st.data_root is None else str(st.data_root),
        "data_source": cfg.data_source,
        "template": st.template,
        "reward_model": describe_scorer(reward_model) or None,
        "judge": describe_scorer(judge) or None,
        "n_boot": N_BOOT,
        "alpha": ALPHA,
    }


def _run_evaluate(target: Target, cfg: EvaluateConfig, task: str | None, out_dir: str | Path | None, log,
                  device, shard: Shard) -> dict[str, Any]:
    from plasticity.evaluate.reward import HFRewardModel
    from plasticity.tasks.registry import get_task

    st = _settings(target, cfg, task, out_dir)
    base_task = get_task(st.task, **st.task_options)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    precision = resolve_eval_precision(cfg.precision, dev)
    model, tok = target.load(dev, precision)
    log(f"loaded {target.source.path} on {dev} ({precision}) in {time.perf_counter() - t0:.1f}s")
    reward_model, judge = cfg.reward_model, cfg.judge
    if isinstance(reward_model, str | Path):
        reward_model = HFRewardModel(reward_model, device=dev)
    if isinstance(judge, str | Path):
        judge = HFRewardModel(judge, device=dev)
    record = _record(target, cfg, st, reward_model, judge, precision)
    results: dict[str, Any] = {}
    cot_records: dict[str, tuple[list[QuestionRecord], list[dict[str, Any]], dict[str, Any]]] = {}
    for name in base_task.evaluated_on():
        etask = base_task if name == base_task.name else get_task(name)
        result, qrecs, records = _eval_set(name, etask, target, cfg, st, record, model, tok, reward_model, judge, dev,
                                           log, shard)
        if etask.family == "cot":
            cot_records[name] = (qrecs, records, result["evaluated_on"])
        results[name] = result
    if len(cot_records) > 1:
        pooled = _pooled(cot_records, st.out_dir, cfg, record, reward_model is not None, target.spec,
                         versions(dev), shard.rank == 0)
        results[pooled["task"]] = pooled
    return results


def _eval_set(name: str, etask, target: Target, cfg: EvaluateConfig, st: _Settings, record: dict[str, Any], model, tok,
              reward_model, judge, dev, log, shard: Shard) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """Evaluate one eval set and write ``<name>.json`` and ``<name>.samples.jsonl`` (rank 0): (result, the CoT
    question records or None, the sample records)."""
    from plasticity.tasks.loading import load_rows

    t_task, template = time.perf_counter(), st.template
    loaded = load_rows(etask, "eval", st.data_root, cfg.max_questions, source=cfg.data_source)
    rows = list(loaded.rows)
    if not rows:
        raise DataError(f"task {name}: the eval split has no rows")
    qrecs = None
    if etask.family == "cot":
        metrics, records, qrecs = _eval_cot(etask, rows, model, tok, template, cfg, reward_model, log, shard)
    elif etask.family == "cloze":
        metrics, records = eval_cloze(etask, rows, model, tok, cfg.batch_size, cfg.seed, log,
                                      template=template if "{response}" in template else None, shard=shard)
    elif etask.family == "safety":
        metrics, records = _eval_safety(etask, rows, model, tok, template, cfg, judge, log, shard)
    else:  # pragma: no cover - Task validates its family
        raise DataError(f"task {name}: unknown family {etask.family!r}")
    if etask.family in ("cot", "cloze") and "{response}" in template:
        metrics["heldout_loss"] = _heldout_loss(etask, rows, model, tok, template, cfg, log, shard)
    samples_path = st.out_dir / f"{name}.samples.jsonl"
    result = {
        "task": name,
        "family": etask.family,
        "target": target.spec,
        "config": record,
        "metrics": metrics,
        "n_questions": len(rows),
        "samples_path": samples_path.name,
        "evaluated_on": evaluated_on(name, loaded, len(rows)),
        "versions": versions(dev),
    }
    if shard.rank == 0:
        _write_jsonl(samples_path, records)
        write_json(st.out_dir / f"{name}.json", result)
    log(f"{name}: done in {time.perf_counter() - t_task:.1f}s -> {st.out_dir / (name + '.json')}")
    return result, qrecs, records


def evaluated_on(name: str, loaded: Any, n: int) -> dict[str, Any]:
    """Which data an eval set's numbers come from; `notes` state any substitution for a paper dataset."""
    return {"eval_set": name, "source": loaded.source, "n": n, "origins": list(loaded.origins),
            "notes": list(loaded.notes)}


def _pooled(cot: dict[str, Any], out_dir: Path, cfg: EvaluateConfig, record: dict[str, Any], has_reward: bool,
            target: str, versions: dict[str, Any], write: bool = True) -> dict[str, Any]:
    """Metrics over the union of several CoT eval sets' per-question records (concatenated per question, not
    the mean of the per-set numbers): the paper's pooled GSM8K-Platinum + MATH value (Table 7)."""
    name = "+".join(cot)
    qrecs = [q for qs, _, _ in cot.values() for q in qs]
    records = [dict(r, eval_set=n) for n, (_, recs, _) in cot.items() for r in recs]
    samples_path = out_dir / f"{name}.samples.jsonl"
    if write:
        _write_jsonl(samples_path, records)
    result = {
        "task": name,
        "family": "cot",
        "pooled_from": list(cot),
        "target": target,
        "config": record,
        "metrics": _cot_metrics(qrecs, cfg, has_reward),
        "n_questions": len(qrecs),
        "samples_path": samples_path.name,
        "evaluated_on": [used for _, _, used in cot.values()],
        "versions": versions,
    }
    if write:
        write_json(out_dir / f"{name}.json", result)
    return result
