"""``plasticity finetune``: supervised fine-tuning of a pretrained checkpoint on one task, top to bottom.

Same loop, checkpoints, resume and run-directory shape as pretraining; the loss covers response tokens only.
Under torchrun every process trains its share of each step's examples (DDP or FSDP2, ``train.parallel``) and
rank 0 alone writes the run directory, in the single-process format.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from plasticity import checkpoints
from plasticity.config import FinetuneConfig, to_dict
from plasticity.data.sft import SFTBatches, chat_template, encode_all
from plasticity.errors import CheckpointError, UserError
from plasticity.files import check_output_dir, write_json
from plasticity.hardware import default_device, resolve_precision
from plasticity.models import count_params
from plasticity.runinfo import run_info
from plasticity.train import distributed as pdist
from plasticity.train import memory as mem
from plasticity.train.loop import TrainJob
from plasticity.train.master_weights import check_master_weights
from plasticity.train.optim import build_optimizer, describe_groups
from plasticity.train.run_lifecycle import check_ours, execute, open_run_dir, unlock_run_dir, wrap_for_training
from plasticity.train.schedule import lr_at


def load_pairs(cfg: FinetuneConfig) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(question, response) pairs of the task's training split, plus load/format counts."""
    from plasticity.tasks.loading import load_rows
    from plasticity.tasks.registry import get_task

    task = get_task(cfg.task, **cfg.options_for_task())
    loaded = load_rows(task, "train", cfg.data_root, cfg.max_examples, source=cfg.data_source)
    pairs, failed = [], 0
    for row in loaded.rows:
        try:
            q, r = task.format_example(row)
        except (KeyError, ValueError, TypeError, IndexError):
            failed += 1
            continue
        pairs.append((q, r))
    info = dict(task=task.name, family=task.family, source=loaded.source, origins=loaded.origins,
                notes=loaded.notes, load_counts=loaded.counts, format_failed=failed)
    if not pairs:
        raise UserError(f"task {task.name}: no training examples could be formatted")
    return pairs, info


def run_finetune(cfg: FinetuneConfig, resume: bool = False, log=print) -> dict[str, Any]:
    """Fine-tune one checkpoint on one task; returns the summary (also written to ``summary.json``). Launched
    by torchrun, every process trains its share of each step's examples (``train.parallel``: DDP or FSDP2) and
    rank 0 writes the run directory."""
    pdist.check_batch(cfg.train.micro_batch_size * cfg.train.grad_accum, pdist.world_size_from_env())
    run_dir = Path(cfg.out_dir)
    check_output_dir(run_dir, "out_dir")
    check_ours(run_dir)
    dist = pdist.init_distributed()
    try:
        summary = _run_finetune(cfg, resume, run_dir, dist, log if dist.is_main else _quiet)
        pdist.finish(dist)
        return summary
    finally:
        if dist.is_main:
            unlock_run_dir(run_dir)


def _quiet(msg: str) -> None:
    """Log sink of ranks other than 0 (rank 0 speaks for the job)."""


def _check_memory(cfg: FinetuneConfig, hf_config: dict[str, Any], device, precision: str, log) -> None:
    """Refuse (one line) a fine-tuning run whose memory estimate exceeds the available memory."""
    try:
        shape = mem.shape_of_hf_config(hf_config)
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        return
    seq = min(cfg.cutoff_len, int(hf_config.get("max_position_embeddings") or cfg.cutoff_len))
    from plasticity.train.pretrain import sharding

    est = mem.estimate(shape, cfg.train.micro_batch_size, seq, precision, **sharding(cfg.train, device, shape.params))
    mem.check_memory(est, device, cfg.train.allow_large_memory, "train.micro_batch_size (x cutoff_len)",
                     "init_from", log)


def _run_finetune(cfg: FinetuneConfig, resume: bool, run_dir: Path, dist: pdist.Dist, log) -> dict[str, Any]:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = dist.device() if dist.enabled else default_device()
    precision = resolve_precision(cfg.train.precision, device)
    check_master_weights(cfg.train, device, precision)
    cfg_dict = to_dict(cfg)
    fresh = not pdist.on_main(lambda: (run_dir / "config.yaml").exists(), dist)
    if not fresh:  # an existing run: refused, already completed, or resumed (nothing is written here)
        done = pdist.on_main(lambda: open_run_dir(run_dir, cfg_dict, resume, log), dist)
        if done is not None:
            return done

    source = checkpoints.resolve_model_source(cfg.init_from, cfg.revision)
    model_dir, local = source.path, source.local_dir()  # a Hub model is fetched here, once
    conf = local / "config.json"
    if conf.is_file():  # refuse an impossible size before the weights load
        try:
            hf = json.loads(conf.read_text())
        except (ValueError, UnicodeDecodeError):
            hf = None
        if isinstance(hf, dict):
            _check_memory(cfg, hf, device, precision, log)
    model = checkpoints.load_model_checked(local, cfg.trust_remote_code, device)
    tok = checkpoints.load_tokenizer_of(source, cfg.trust_remote_code, local)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if len(tok) > model.config.vocab_size:
        raise CheckpointError(f"{model_dir}: tokenizer has {len(tok)} tokens but the model vocabulary is "
                              f"{model.config.vocab_size} (vocab mismatch)")

    pairs, data_info = load_pairs(cfg)
    cutoff = min(cfg.cutoff_len, model.config.max_position_embeddings)
    examples, enc_counts = encode_all(tok, cfg.template, pairs, cutoff)
    if not examples:
        raise UserError(f"task {cfg.task}: every example is longer than the cutoff ({cutoff} tokens)")
    check_master_weights(cfg.train, device, precision, model)  # parallel: auto under torchrun needs the model
    if fresh:  # created once every input has loaded: a bad input leaves no half-made run directory behind
        pdist.on_main(lambda: open_run_dir(run_dir, cfg_dict, resume, log), dist)
    tok_dir = run_dir / ".tokenizer"
    tok.chat_template = chat_template(cfg.template, tok)  # apply_chat_template reproduces the training prompt
    if dist.is_main:
        tok.save_pretrained(str(tok_dir))
    data_info.update(encode_counts=enc_counts, examples=len(examples), cutoff_len=cutoff)
    log(f"task {data_info['task']}: {len(examples)} training examples ({data_info['source']}); dropped "
        f"{enc_counts['over_cutoff']} over the {cutoff}-token cutoff, {data_info['format_failed']} unformattable, "
        f"{sum(v for k, v in data_info['load_counts'].items() if k.startswith(('bad', 'missing', 'unformattable')))} "
        "bad rows")

    batches = SFTBatches(examples, cfg.train.micro_batch_size, cfg.train.grad_accum, cfg.train.seed, tok.pad_token_id)
    total_steps = cfg.train.max_steps or batches.steps_for_epochs(cfg.train.epochs or 1.0)
    ckpt_steps = {max(1, round(f * total_steps)) for f in cfg.train.checkpoint_fractions} - {total_steps}
    policy = cfg.optim.wd_policy if cfg.optim.wd_policy != "auto" else "all"
    counts = count_params(model)
    # before the optimizer: FSDP2 swaps the parameters
    net, parallel, master = wrap_for_training(model, dist, cfg.train, precision, log)
    optimizer = build_optimizer(model, cfg.optim, policy)
    groups = describe_groups(model, cfg.optim, policy)
    if dist.is_main:
        write_json(run_dir / "param_groups.json", groups)
    if dist.is_main and not (run_dir / "run_info.json").exists():
        write_json(run_dir / "run_info.json", run_info(device, cfg.train.seed, precision, dict(
            init_from=cfg.init_from, model_dir=model_dir, total_steps=total_steps,
            examples_per_step=batches.examples_per_step, data=data_info, params=asdict(counts),
            world_size=dist.world_size, parallel=parallel, master_weights=master)))
    log(f"{run_dir}: fine-tuning {model_dir} ({counts.total:,} params) for {total_steps} steps x "
        f"{batches.examples_per_step} examples, lr {cfg.optim.lr}, wd {cfg.optim.weight_decay} ({policy}), {precision}"
        + (f", {dist.world_size} processes ({parallel}, {dist.backend})" if dist.enabled else ""))

    job = TrainJob(model=model, optimizer=optimizer, batches=batches, total_steps=total_steps,
                   lr_fn=lambda s: lr_at(s, total_steps, cfg.optim.lr, cfg.optim.min_lr, cfg.schedule),
                   run_dir=run_dir, cfg=cfg.train, device=device, precision=precision,
                   grad_clip=cfg.optim.grad_clip, tokenizer_dir=tok_dir, checkpoint_steps=ckpt_steps,
                   checkpoint_meta={"kind": "finetune", "task": data_info["task"]}, label=run_dir.name, log=log,
                   dist=dist, parallel=parallel, wrapped=net if net is not model else None, master_weights=master)
    base = dict(kind="finetune", task=data_info["task"], init_from=cfg.init_from, model_dir=model_dir,
                examples=len(examples), dropped_over_cutoff=enc_counts["over_cutoff"],
                dropped_empty=enc_counts["empty_response"], format_failed=data_info["format_failed"],
                load_counts=data_info["load_counts"], total_steps=total_steps, weight_decay=cfg.optim.weight_decay,
                lr=cfg.optim.lr, precision=precision, params_total=counts.total, template=cfg.template,
                trained_on={"task": data_info["task"], "source": data_info["source"], "n": len(examples),
                            "origins": data_info["origins"], "notes": data_info["notes"]},  # notes: substitutions
                world_size=dist.world_size, parallel=parallel)
    summary = execute(job, resume, base, log)
    log(f"{run_dir}: done, final train loss {summary['final_train_loss']:.4f}")
    return summary
