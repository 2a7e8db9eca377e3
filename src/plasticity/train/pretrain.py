"""``plasticity pretrain``: one pretraining run, top to bottom."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from plasticity import checkpoints
from plasticity.config import PretrainConfig, to_dict
from plasticity.data.packed import PretrainBatches, cache_root, prepare_data
from plasticity.errors import CheckpointError, DataError, UserError
from plasticity.files import check_output_dir, write_json
from plasticity.hardware import default_device, resolve_precision
from plasticity.losses import mean_token_loss
from plasticity.models import DEFAULT_WD_POLICY, build_model, count_params, flops_per_token, get_preset, resolve_shape
from plasticity.runinfo import run_info
from plasticity.train import distributed as pdist
from plasticity.train import memory as mem
from plasticity.train.loop import TrainJob
from plasticity.train.master_weights import check_master_weights
from plasticity.train.optim import build_optimizer, describe_groups
from plasticity.train.run_lifecycle import check_ours, execute, open_run_dir, unlock_run_dir, wrap_for_training
from plasticity.train.schedule import lr_at


def resolve_total_steps(cfg: PretrainConfig, params_total: int, params_non_embedding: int) -> tuple[int, int]:
    """Optimizer steps and the token budget they stand for (max_steps > max_tokens > tpp x params)."""
    t = cfg.train
    per_step = t.micro_batch_size * t.grad_accum * cfg.data.seq_len
    if t.max_steps:
        return t.max_steps, t.max_steps * per_step
    if t.max_tokens:
        budget = t.max_tokens
    else:
        n = params_total if t.tpp_params == "total" else params_non_embedding
        budget = int(t.tpp * n)
    return max(1, math.ceil(budget / per_step)), budget


def run_pretrain(cfg: PretrainConfig, resume: bool = False, log=print) -> dict[str, Any]:
    """Pretrain one model; returns the summary (also written to ``summary.json``). Launched by torchrun, every
    process trains its share of each step's batch (``train.parallel``) and rank 0 writes the run directory."""
    pdist.check_batch(cfg.train.micro_batch_size * cfg.train.grad_accum, pdist.world_size_from_env())
    dist = pdist.init_distributed()
    try:
        summary = _run_pretrain(cfg, resume, dist, log if dist.is_main else _quiet)
        pdist.finish(dist)
        return summary
    finally:
        if dist.is_main:
            unlock_run_dir(Path(cfg.out_dir))


def _quiet(msg: str) -> None:
    """Log sink of ranks other than 0 (rank 0 speaks for the job)."""


def early_memory_check(cfg: PretrainConfig, device, precision: str, log=print) -> None:
    """The memory check before any data is read, when the vocabulary is known from the config alone (model.vocab_size
    or a BPE of tokenizer.vocab_size): an absurd size is refused in seconds."""
    if cfg.model.init_from:
        try:
            src = checkpoints.resolve_model_source(cfg.model.init_from, cfg.model.revision)
        except CheckpointError:
            return  # load_model_checked gives the one-line error
        conf = Path(src.path) / "config.json"
        if src.kind != "hub" and conf.is_file():  # a local model: its size is known before its weights load
            try:
                hf = json.loads(conf.read_text())
                shape = mem.shape_of_hf_config(hf)
            except (ValueError, KeyError, TypeError, ZeroDivisionError):
                return  # load_model_checked gives the one-line error
            est = mem.estimate(shape, cfg.train.micro_batch_size, cfg.data.seq_len, precision,
                               **sharding(cfg.train, device, shape.params))
            mem.check_memory(est, device, cfg.train.allow_large_memory, "train.micro_batch_size (x data.seq_len)",
                             "model.init_from", log)
        return
    vocab = cfg.model.vocab_size or (cfg.tokenizer.vocab_size if cfg.tokenizer.name == "bpe" else None)
    if vocab is None and get_preset(cfg.model.preset).vocab_size is None:
        return
    _check_memory(cfg, resolve_shape(cfg.model, vocab), device, precision, lambda m: None)


def sharding(train, device, params: int) -> dict[str, Any]:
    """How one device of this job holds the model (`memory.estimate` keywords): torchrun's world size, the
    resolved `train.parallel` and `train.activation_checkpointing`."""
    world = pdist.world_size_from_env()
    strategy = pdist.resolve_strategy(train.parallel, pdist.Dist(world_size=world), params, torch.device(device))
    return dict(world=world, strategy=strategy, activation_checkpointing=train.activation_checkpointing)


def _check_memory(cfg: PretrainConfig, shape, device, precision: str, log) -> None:
    s = mem.shape_of(shape)
    est = mem.estimate(s, cfg.train.micro_batch_size, cfg.data.seq_len, precision,
                       **sharding(cfg.train, device, s.params))
    mem.check_memory(est, device, cfg.train.allow_large_memory, "train.micro_batch_size (x data.seq_len)",
                     "model.preset/hidden_size/intermediate_size/num_layers/vocab_size", log)


def _run_pretrain(cfg: PretrainConfig, resume: bool, dist: pdist.Dist, log) -> dict[str, Any]:
    """Everything is validated (config, data, model size and memory, init_from model) before the run directory is
    touched; the run lock is taken before anything is written there."""
    run_dir = Path(cfg.out_dir)
    check_output_dir(run_dir, "out_dir")
    check_ours(run_dir)
    check_output_dir(cache_root(cfg.data.cache_dir), "data.cache_dir (or PLASTICITY_CACHE)")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = dist.device() if dist.enabled else default_device()
    precision = resolve_precision(cfg.train.precision, device)
    early_memory_check(cfg, device, precision, log)
    check_master_weights(cfg.train, device, precision)

    data = prepare_data(cfg.data, cfg.tokenizer, log=log)
    tok = data.tokenizer()
    shape = resolve_shape(cfg.model, len(tok))
    if shape.max_seq_len < cfg.data.seq_len:
        raise UserError(f"config error: data.seq_len: {cfg.data.seq_len} exceeds the model context "
                        f"{shape.max_seq_len}")
    policy = cfg.optim.wd_policy if cfg.optim.wd_policy != "auto" else DEFAULT_WD_POLICY[shape.family]
    resolved = replace(cfg, model=replace(cfg.model, **{k: getattr(shape, k) for k in (
        "vocab_size", "max_seq_len", "hidden_size", "intermediate_size", "num_layers", "num_heads",
        "num_kv_heads", "rope_theta")}), optim=replace(cfg.optim, wd_policy=policy))
    cfg_dict = to_dict(resolved)
    train_seqs = data.sequences("train", cfg.data.seq_len)
    try:
        val_seqs = data.sequences("val", cfg.data.seq_len)
    except DataError as e:
        raise DataError(f"{cfg.data.val_source or cfg.data.source}: validation split too small for "
                        f"data.seq_len={cfg.data.seq_len} (raise data.val_fraction or set data.val_source): "
                        f"{str(e).rsplit(': ', 1)[-1]}") from None

    if cfg.model.init_from:
        model = checkpoints.load_model_checked(cfg.model.init_from, cfg.model.trust_remote_code, device,
                                               revision=cfg.model.revision)
        if len(tok) > model.config.vocab_size:  # token ids past the embedding table: IndexError mid-step
            raise UserError(f"config error: model.init_from: {cfg.model.init_from} has a vocabulary of "
                            f"{model.config.vocab_size} but the tokenizer has {len(tok)} tokens (vocab mismatch)")
    else:
        _check_memory(cfg, shape, device, precision, log)
        model = build_model(shape, cfg.model.init_std, seed=cfg.train.seed, device=device,
                            bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)

    check_master_weights(cfg.train, device, precision, model)  # parallel: auto under torchrun needs the model
    done = pdist.on_main(lambda: open_run_dir(run_dir, cfg_dict, resume, log), dist)
    if done is not None:
        return done

    counts = count_params(model)
    # before the optimizer: FSDP2 swaps params
    net, parallel, master = wrap_for_training(model, dist, cfg.train, precision, log)
    optimizer = build_optimizer(model, cfg.optim, policy)
    groups = describe_groups(model, cfg.optim, policy)
    for g in groups:
        log(f"param group {g['name']}: weight_decay={g['weight_decay']} tensors={g['tensors']} "
            f"params={g['numel']:,} e.g. {', '.join(g['examples'][:2])}")

    total_steps, budget = resolve_total_steps(cfg, counts.total, counts.non_embedding)
    batches = PretrainBatches(train_seqs, cfg.train.micro_batch_size, cfg.train.grad_accum, cfg.train.seed)
    epochs = total_steps * batches.tokens_per_step() / max(len(train_seqs) * cfg.data.seq_len, 1)
    ckpt_steps = {max(1, round(f * total_steps)) for f in cfg.train.checkpoint_fractions} - {total_steps}

    n_val_all = min(len(val_seqs), cfg.train.eval_max_sequences)
    val_all = val_seqs.get(range(n_val_all))
    val_periodic = val_all[: cfg.train.eval_sequences]

    def evaluate(m: torch.nn.Module, full: bool) -> dict[str, float]:
        seqs = val_all if full else val_periodic
        return {"val_loss": mean_token_loss(m, seqs, cfg.train.micro_batch_size, precision)}

    if dist.is_main:
        write_json(run_dir / "param_groups.json", groups)
    if dist.is_main and not (run_dir / "run_info.json").exists():
        write_json(run_dir / "run_info.json", run_info(device, cfg.train.seed, precision, dict(
            total_steps=total_steps, token_budget=budget, tokens_per_step=batches.tokens_per_step(),
            data=data.meta, params=asdict(counts), shape=asdict(shape), epochs=epochs,
            world_size=dist.world_size, parallel=parallel, master_weights=master)))
    log(f"{run_dir}: {shape.family} {counts.total:,} params ({counts.non_embedding:,} non-embedding), "
        f"{total_steps} steps x {batches.tokens_per_step():,} tokens = {total_steps * batches.tokens_per_step():,} "
        f"tokens ({epochs:.2f} epochs of {len(train_seqs) * cfg.data.seq_len:,}), precision {precision}, "
        f"wd {cfg.optim.weight_decay} ({policy})"
        + (f", {dist.world_size} processes ({parallel}, {dist.backend})" if dist.enabled else ""))
    if epochs > 1.0:
        log(f"warning: the token budget repeats the training data {epochs:.2f} times")

    job = TrainJob(model=model, optimizer=optimizer, batches=batches, total_steps=total_steps,
                   lr_fn=lambda s: lr_at(s, total_steps, cfg.optim.lr, cfg.optim.min_lr, cfg.schedule),
                   run_dir=run_dir, cfg=cfg.train, device=device, precision=precision,
                   grad_clip=cfg.optim.grad_clip, tokenizer_dir=data.tokenizer_dir, evaluate=evaluate,
                   checkpoint_steps=ckpt_steps, checkpoint_meta={"kind": "pretrain"}, label=run_dir.name, log=log,
                   dist=dist, parallel=parallel, wrapped=net if net is not model else None, master_weights=master,
                   flops_per_step=flops_per_token(counts, shape, cfg.data.seq_len) * batches.tokens_per_step())
    base = dict(kind="pretrain", params_total=counts.total, params_non_embedding=counts.non_embedding,
                flops_per_token=flops_per_token(counts, shape, cfg.data.seq_len), total_steps=total_steps,
                token_budget=budget, weight_decay=cfg.optim.weight_decay, wd_policy=policy, precision=precision,
                family=shape.family, preset=cfg.model.preset, world_size=dist.world_size, parallel=parallel)
    summary = execute(job, resume, base, log)
    log(f"{run_dir}: done, val loss {summary['final_val_loss']:.4f}, {summary['train_time']:.1f}s")
    return summary
