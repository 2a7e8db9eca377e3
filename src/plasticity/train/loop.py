"""The training-loop core shared by pretraining and fine-tuning.

The loop knows nothing about where batches come from: a batch source returns the micro-batches of step ``s``
as a pure function of ``s`` (so the data position is the step), the learning rate is a pure function of the
step, and the checkpoint carries model, optimizer and RNG state, so a resumed run is bit-identical on CPU.

Under torchrun (see ``distributed``) every rank runs this loop on its share of each step's rows; rank 0 alone
writes metrics and checkpoints, in the single-process format.
"""

from __future__ import annotations

import functools
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from plasticity.config import TrainConfig
from plasticity.errors import DivergenceError, InterruptedRun
from plasticity.files import append_jsonl, write_text
from plasticity.hardware import autocast, cpu_has_fast_bf16
from plasticity.train import checkpoint_writer as ckpt
from plasticity.train import distributed as pdist
from plasticity.train.distributed import SINGLE, Dist
from plasticity.train.fused_ce import linear_cross_entropy
from plasticity.train.master_weights import Bf16Weights


class BatchSource(Protocol):
    def step_batches(self, step: int) -> list[dict[str, torch.Tensor]]: ...


@dataclass
class LoopState:
    step: int = 0  # optimizer steps completed
    tokens: int = 0  # input tokens consumed (non-padding)
    elapsed: float = 0.0  # training seconds, summed over resumed segments
    skipped_batches: int = 0
    last_loss: float = float("nan")
    last_val_loss: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(step=self.step, tokens=self.tokens, elapsed=self.elapsed, skipped_batches=self.skipped_batches,
                    last_loss=self.last_loss, last_val_loss=self.last_val_loss)


@dataclass(frozen=True)
class FastPath:
    """Switches of the optimized step (each can be forced on or off for ablations and tests).
    `fused_ce`: output projection + loss in row chunks (`fused_ce`), never the whole batch's logits;
    single-process only (DDP/FSDP hooks need the wrapped module's own forward). None: on CPUs, off on CUDA,
    where the chunked loop was measured 1.5x slower than whole-batch logits (llama2-0.5b on an H200:
    161 vs 237 TFLOP/s eager, 173 vs 300 compiled; BENCHMARKS.md). `compile`: torch.compile the decoder body
    (static shapes); None follows `train.compile`."""

    fused_ce: bool | None = None
    compile: bool | None = None


PLAIN = FastPath(fused_ce=False, compile=False)

# `train.compile: auto` compiles a run whose remaining training FLOPs reach this: about 5 minutes of a
# 0.5B model at 300-400 TFLOP/s on an H100/H200 (compiling it took ~45-60 s and gave +25% tok/s,
# BENCHMARKS.md), about 8 minutes on a 2-core AMX CPU at ~1 TFLOP/s (1-2 min of compile for +24%).
COMPILE_AUTO_FLOPS = {"cuda": 1e17, "cpu": 5e14}


def resolve_compile(setting: bool | str, device: torch.device, precision: str, run_flops: float) -> tuple[bool, str]:
    """Whether to torch.compile, and why. `auto` is on for CUDA, and for CPUs with fast bf16 running bf16, when
    the run's remaining FLOPs (`run_flops`; 0 = unknown, e.g. fine-tuning's variable-length batches, whose
    every new shape would recompile) repay the compilation."""
    if isinstance(setting, bool):
        return setting, f"train.compile={str(setting).lower()}"
    fast_cpu = device.type == "cpu" and precision == "bf16" and cpu_has_fast_bf16()
    threshold = COMPILE_AUTO_FLOPS.get(device.type) if device.type == "cuda" or fast_cpu else None
    if threshold is None:
        return False, f"auto: off on {device.type} with {precision}"
    if run_flops < threshold:
        return False, f"auto: off, the run ({run_flops:.2g} FLOPs) is below {threshold:.0e}"
    return True, f"auto: on, the run ({run_flops:.2g} FLOPs) repays compiling"


def sdpa_backends(device: torch.device):
    """The attention-kernel preference for training steps: PLASTICITY_SDPA_BACKEND=cudnn|flash|efficient|math
    puts that backend first (the others stay as fallbacks); unset: torch's own order."""
    import contextlib
    import os

    name = os.environ.get("PLASTICITY_SDPA_BACKEND", "")
    if device.type != "cuda" or not name:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    if name not in order:
        raise ValueError(f"PLASTICITY_SDPA_BACKEND must be one of {', '.join(order)}, got {name!r}")
    first = order.pop(name)
    return sdpa_kernel([first, *order.values()], set_priority=True)


@dataclass
class TrainJob:
    """Everything the loop needs. `evaluate(model, full)` returns e.g. {"val_loss": ...}. `model` is the
    unwrapped (or FSDP2-sharded) model that is saved and evaluated; `wrapped` its DDP wrapper, if any."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: BatchSource
    total_steps: int
    lr_fn: Callable[[int], float]
    run_dir: Path
    cfg: TrainConfig
    device: torch.device
    precision: str
    grad_clip: float
    tokenizer_dir: Path | None = None
    evaluate: Callable[[torch.nn.Module, bool], dict[str, float]] | None = None
    checkpoint_steps: set[int] = field(default_factory=set)
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    label: str = "train"
    log: Callable[[str], None] = print
    dist: Dist = SINGLE
    parallel: str = "none"  # resolved strategy: none / ddp / fsdp
    wrapped: torch.nn.Module | None = None
    fast: FastPath = FastPath()
    flops_per_step: float = 0.0  # training FLOPs of one optimizer step (0 = unknown): sizes `compile: auto`
    master_weights: bool = False  # resolved `train.master_weights` (`wrap_for_training`): bf16 copies, fp32 masters
    write_final: bool = True  # False: no final/ at the end (benchmarks drive the loop in segments)
    on_record: Callable[[dict[str, Any]], None] | None = None  # each metrics.jsonl record, after it is written


def _hidden_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder body, output projection) of an HF causal LM, or None if it does not have that layout."""
    body, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if isinstance(body, torch.nn.Module) and isinstance(head, torch.nn.Linear) and head.bias is None:
        return body, head
    return None


def causal_lm_loss(model: Callable[..., Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy (fp32) over the targets (labels != -100) of a causal LM's batch. The
    labels are shifted, not the logits, so the [tokens, vocab] logits are never sliced into a copy; compiled
    together with the model (`train.compile`), the cast and the loss fuse into the logits' consumers."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    targets = F.pad(labels[:, 1:], (0, 1), value=-100)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")


def step_loss(model: torch.nn.Module, micro: list[dict[str, torch.Tensor]], device: torch.device,
              precision: str, dist: Dist = SINGLE, ddp: torch.nn.Module | None = None,
              body: Callable[..., Any] | None = None, loss_fn: Callable[..., torch.Tensor] | None = None,
              head: torch.Tensor | None = None,
              after_backward: Callable[[], None] | None = None) -> tuple[torch.Tensor, int, int]:
    """Forward+backward over a step's micro-batches. The loss is the mean next-token cross-entropy over all
    target tokens (labels != -100) of the whole step, so grad accumulation equals one big batch.
    With several processes this rank runs only its share of the rows, still divided by the whole step's
    target count and scaled by the world size, so the gradient average of DDP/FSDP is exactly the
    single-process gradient (also for unequal target counts per rank); the returned loss is then this rank's
    share, to be summed over ranks. With `body` (the decoder body of `model`, possibly compiled) the loss is
    computed by `fused_ce.linear_cross_entropy` on its hidden states and `head` (default: `model`'s output
    projection weight) instead of from full logits; else by `loss_fn(ids, mask, labels)` (default:
    `causal_lm_loss` of `model`; the loop passes it compiled). `after_backward` runs after each micro-batch's
    backward (master weights: move the bf16 gradients into the fp32 ones).
    Returns (loss as a 0-d tensor on `device`, target tokens, input tokens), the counts of the whole step;
    the counts come from the (host) label tensors, so nothing here waits for the device."""
    n_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
    n_inputs = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
                   for b in micro)
    mine = pdist.shard_rows(micro, dist)
    total = torch.zeros((), dtype=torch.float32, device=device)
    for i, b in enumerate(mine):
        with pdist.grad_sync(ddp, i == len(mine) - 1):
            ids = b["input_ids"].to(device, non_blocking=True)
            labels = b["labels"].to(device, non_blocking=True)
            mask = b.get("attention_mask")
            mask = mask.to(device, non_blocking=True) if mask is not None else None
            with autocast(device, precision):
                if body is not None:
                    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                    # next-token targets: shift the labels, not the hidden states (no copy of them)
                    targets = F.pad(labels[:, 1:], (0, 1), value=-100)
                    w = head if head is not None else _hidden_and_head(model)[1].weight  # type: ignore[index]
                    loss = linear_cross_entropy(hidden.reshape(-1, hidden.size(-1)), w,
                                                targets.reshape(-1), scale=1.0 / max(n_targets, 1))
                elif loss_fn is not None:
                    loss = loss_fn(ids, mask, labels) / max(n_targets, 1)
                else:
                    loss = causal_lm_loss(model, ids, mask, labels) / max(n_targets, 1)
            (loss * dist.world_size if dist.enabled else loss).backward()
            if after_backward is not None:
                after_backward()
        total += loss.detach()
    return total, n_targets, n_inputs


def _clip_grad_norm(params: Any, max_norm: float) -> torch.Tensor:
    """Total gradient norm before clipping as a 0-d tensor on the gradients' device (no host sync; the full
    norm also for FSDP2's sharded DTensor gradients)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def _compile_once(module: Callable[..., Any], log: Callable[[str], None]) -> Callable[..., Any]:
    """torch.compile `module` (a module or function); if compiling or the first compiled call fails, warn once
    and run eagerly."""
    try:
        compiled = torch.compile(module, dynamic=False)
    except Exception as e:  # noqa: BLE001 - any backend failure: fall back to eager
        log(f"warning: torch.compile unavailable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "training eagerly")
        return module
    state = {"fn": compiled, "ok": False}

    def call(*args: Any, **kwargs: Any) -> Any:
        if state["ok"]:
            return state["fn"](*args, **kwargs)
        try:
            out = state["fn"](*args, **kwargs)
            state["ok"] = True
            return out
        except Exception as e:  # noqa: BLE001
            if state["fn"] is module:
                raise
            log(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                "training eagerly")
            state["fn"] = module
            return module(*args, **kwargs)

    return call


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop checkpoints after the current step and exits cleanly."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _progress(label: str, total: int, start: int, show: bool = True):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not (show and sys.stderr.isatty()),
                    transient=False)
    task = prog.add_task(label, total=total, completed=start, loss="-", tps="-")
    return prog, task


@dataclass
class _Step:
    """How `train` runs one step's forward and backward (the arguments of `step_loss` it passes)."""

    fwd: Any  # the model (or its DDP/FSDP2 wrapper, or the bf16 copies), possibly compiled
    amp: str  # the step's autocast precision ("fp32": none)
    body: Any = None  # fused CE: the decoder body, possibly compiled
    head: torch.Tensor | None = None  # fused CE: the output projection weight it multiplies
    loss_fn: Any = None  # the compiled model + loss, when compiled without fused CE in one process
    weights: Bf16Weights | None = None  # master weights in one process


def _build_step(job: TrainJob, state: LoopState) -> _Step:
    """Resolve `train.compile`, the fused CE and the master weights for this segment of the run, and log the
    compile decision of `auto`."""
    model, cfg = job.model, job.cfg
    net = job.wrapped if job.wrapped is not None else model
    run_flops = (job.total_steps - state.step) * job.flops_per_step / job.dist.world_size  # this rank's share
    use_compile, why = resolve_compile(cfg.compile if job.fast.compile is None else job.fast.compile, job.device,
                                       job.precision, run_flops)
    if cfg.compile == "auto" and job.fast.compile is None and (use_compile or job.device.type == "cuda"):
        job.log(f"torch.compile {'on' if use_compile else 'off'} ({why})")
    single = job.parallel == "none" and job.wrapped is None  # DDP/FSDP2 hooks run in the root module's forward
    fused_ce = job.device.type == "cpu" if job.fast.fused_ce is None else job.fast.fused_ce
    parts = _hidden_and_head(model) if fused_ce and single else None
    # master weights in one process: the step runs on bf16 copies (no autocast); under FSDP2 its policy does it
    weights = Bf16Weights(model) if job.master_weights and single else None
    step = _Step(fwd=weights if weights is not None else net, weights=weights,
                 amp="fp32" if job.master_weights else job.precision)
    if parts is not None:
        body = weights.submodule(parts[0]) if weights is not None else parts[0]
        step.head = weights.copy_of(parts[1].weight) if weights is not None else None
        step.body = _compile_once(body, job.log) if use_compile else body
    elif use_compile and single:  # the model and its loss in one graph (shares parameters with `model`)
        step.loss_fn = _compile_once(functools.partial(causal_lm_loss, step.fwd), job.log)
    elif use_compile:  # DDP / FSDP2: the wrapper itself is compiled (its hooks stay in its own forward)
        step.fwd = _compile_once(net, job.log)
    return step


def train(job: TrainJob, state: LoopState) -> LoopState:
    """Run optimizer steps ``state.step .. total_steps-1``; write metrics, checkpoints and ``final/``."""
    model, opt, cfg, dist = job.model, job.optimizer, job.cfg, job.dist
    metrics_path = job.run_dir / "metrics.jsonl"
    model.train()
    ddp = job.wrapped if job.parallel == "ddp" else None
    step = _build_step(job, state)
    prog, task = _progress(job.label, job.total_steps, state.step, show=dist.is_main)
    t_seg = time.perf_counter()
    elapsed0 = state.elapsed
    window_tokens, window_t = 0, time.perf_counter()
    with _StopFlag() as stop, prog, sdpa_backends(job.device):
        while state.step < job.total_steps:
            s = state.step
            lr = job.lr_fn(s)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            if step.weights is not None:
                step.weights.refresh()
            loss_t, _, n_in = step_loss(step.fwd, job.batches.step_batches(s), job.device, step.amp, dist, ddp,
                                        step.body, step.loss_fn, step.head,
                                        step.weights.collect_grads if step.weights is not None else None)
            gnorm_t = _clip_grad_norm(model.parameters(),
                                      job.grad_clip if job.grad_clip > 0 else float("inf"))
            # one host sync per step: loss and grad norm come back together
            loss, gnorm = (float(x) for x in torch.stack([loss_t.float(), gnorm_t.float()]).tolist())
            # the step's loss (sum of the ranks' shares); every rank then takes the same non-finite decision
            loss, bad_norms = pdist.all_reduce_sum([loss, float(not math.isfinite(gnorm))], dist)
            bad = None if math.isfinite(loss) else ("loss", loss)
            if bad is None and (bad_norms or not math.isfinite(gnorm)):
                bad = ("grad_norm", gnorm)
            if bad is not None:
                if cfg.nan_policy == "skip_batch" and state.skipped_batches < cfg.max_skipped_batches:
                    state.skipped_batches += 1
                    opt.zero_grad(set_to_none=True)
                    job.log(f"step {s + 1}: non-finite {bad[0]} ({bad[1]}), batch skipped "
                            f"({state.skipped_batches}/{cfg.max_skipped_batches})")
                else:
                    raise DivergenceError(s + 1, bad[0], bad[1])
            else:
                opt.step()
            state.step = s + 1
            state.tokens += n_in
            state.last_loss = loss
            state.elapsed = elapsed0 + (time.perf_counter() - t_seg)
            window_tokens += n_in
            if state.step % cfg.log_every == 0 or state.step == job.total_steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_tokens, window_t = 0, now
                rec = dict(step=state.step, tokens=state.tokens, loss=loss, lr=lr, grad_norm=gnorm,
                           tok_per_s=round(tps, 1), elapsed=round(state.elapsed, 3))
                if dist.is_main:
                    append_jsonl(metrics_path, rec)
                    if job.on_record is not None:
                        job.on_record(rec)
                prog.update(task, completed=state.step, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")
                if not sys.stderr.isatty():
                    job.log(f"[{job.label}] step {state.step}/{job.total_steps} loss {loss:.4f} lr {lr:.2e} "
                            f"gnorm {gnorm:.3f} {tps:,.0f} tok/s")
            else:
                prog.update(task, completed=state.step)
            is_ckpt = state.step in job.checkpoint_steps
            is_final = state.step == job.total_steps
            if job.evaluate is not None and (is_ckpt or is_final or (cfg.eval_every and
                                                                     state.step % cfg.eval_every == 0)):
                ev = job.evaluate(model, is_final)  # on every rank: an FSDP2 forward needs all of them
                model.train()
                state.last_val_loss = ev.get("val_loss", state.last_val_loss)
                if dist.is_main:
                    append_jsonl(metrics_path, rec := dict(step=state.step, tokens=state.tokens, **ev))
                    if job.on_record is not None:
                        job.on_record(rec)
            resume_due = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
            stopping = pdist.any_rank(stop.signum is not None, dist)  # all ranks stop after the same step
            if (is_ckpt or resume_due or stopping) and not is_final:
                save_resume_checkpoint(job, state, snapshot=is_ckpt)
            if stopping and not is_final:
                signum = stop.signum or signal.SIGTERM
                job.log(f"received signal {signum}: checkpoint saved at step {state.step}, exiting")
                raise InterruptedRun(state.step, signum)
    if job.write_final:
        save_final(job, state)
    return state


def save_resume_checkpoint(job: TrainJob, state: LoopState, snapshot: bool) -> Path:
    """Checkpoint with trainer state. Snapshots (checkpoint_fractions) are kept for the analyses; the trainer
    state of older checkpoints and older non-snapshot checkpoints are pruned. Called on every rank; rank 0
    writes."""
    root = job.run_dir / "checkpoints"
    path = root / ckpt.step_dir_name(state.step)
    weights = pdist.full_model_state(job.model, job.parallel)
    optim_state = pdist.full_optimizer_state(job.model, job.optimizer, job.parallel)
    if job.dist.is_main:
        trainer_state = {"optimizer": optim_state, "loop": state.as_dict(),
                         "rng": ckpt.rng_state(all_cuda=not job.dist.enabled)}
        ckpt.save_checkpoint(path, job.model, job.tokenizer_dir, trainer_state,
                             dict(step=state.step, snapshot=snapshot, tokens=state.tokens, **job.checkpoint_meta),
                             state_dict=weights)
        _prune_checkpoints(job, root, state.step)
    pdist.barrier(job.dist)
    return path


def _prune_checkpoints(job: TrainJob, root: Path, current: int) -> None:
    for step, d in ckpt.list_checkpoints(root):
        if step >= current:
            continue
        m = ckpt.read_manifest(d) or {}
        if m.get("snapshot"):
            if job.cfg.keep_last_resume:
                ckpt.strip_trainer_state(d)
        else:
            ckpt.remove_checkpoint(d)


def save_final(job: TrainJob, state: LoopState) -> Path:
    """``final/``: the HF model + tokenizer of the last step (no optimizer state). Called on every rank."""
    path = job.run_dir / "final"
    weights = pdist.full_model_state(job.model, job.parallel)
    if job.dist.is_main:
        ckpt.save_checkpoint(path, job.model, job.tokenizer_dir, None,
                             dict(step=state.step, snapshot=True, tokens=state.tokens, **job.checkpoint_meta),
                             state_dict=weights)
        # the resume-only checkpoints are pruned once summary.json says completed (run.execute): a kill before
        # that resumes from the newest one instead of training the whole run again
    pdist.barrier(job.dist)
    return path


def restore(job: TrainJob, ckpt_dir: Path) -> LoopState:
    """Load model weights, optimizer and RNG state from a resumable checkpoint (on every rank; under FSDP2
    rank 0 reads the weights and optimizer state and broadcasts them)."""
    from safetensors.torch import load_file

    peer = job.parallel == "fsdp" and not job.dist.is_main
    sd = {} if peer else load_file(str(ckpt_dir / "model.safetensors"))
    missing, unexpected = pdist.load_model_state(job.model, sd, job.parallel)
    tied = {"lm_head.weight"} if getattr(job.model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        from plasticity.errors import CheckpointError

        raise CheckpointError(f"{ckpt_dir}: weights do not match the model (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]})")
    ts = ckpt.load_trainer_state(ckpt_dir, mmap=job.parallel == "fsdp")  # peers touch only loop + rng
    pdist.load_optimizer_state(job.model, job.optimizer, {} if peer else ts["optimizer"], job.parallel)
    ckpt.set_rng_state(ts["rng"])
    loop = ts["loop"]
    state = LoopState(**{k: loop[k] for k in LoopState.__dataclass_fields__ if k in loop})
    if job.dist.is_main:
        truncate_metrics(job.run_dir / "metrics.jsonl", state.step, job.log)
    return state


def truncate_metrics(path: Path, step: int, log=print) -> None:
    """Drop metric records past `step` (written after the checkpoint we resume from); lines that do not parse
    (a torn tail, or damage in the middle) are dropped too, with one warning line for the latter."""
    if not path.exists():
        return
    import json

    from plasticity.files import BadLine, iter_jsonl

    records = [(n, r) for n, r in iter_jsonl(path)]
    bad = [n for n, r in records[:-1] if isinstance(r, BadLine) or not isinstance(r, dict)]
    if bad:
        log(f"warning: {path}: dropped {len(bad)} unreadable lines (first: line {bad[0]})")
    keep = [r for _, r in records if isinstance(r, dict) and r.get("step", 0) <= step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
