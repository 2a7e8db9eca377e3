"""Multi-process training of one run on one node under ``torchrun``: the process group, DDP or FSDP2 wrapping,
the few collectives the loop needs, and full (rank-0) state dicts so checkpoints keep the single-process
format (HF safetensors + an integer-keyed optimizer state dict) whatever the world size or strategy.

Without ``WORLD_SIZE`` > 1 in the environment every helper here is a no-op that runs no collective, so the
single-process path is exactly what it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from plasticity.errors import ConfigError, UserError

T = TypeVar("T")

FSDP_AUTO_PARAMS = 2_000_000_000  # `auto` shards (FSDP2) models above this size on GPUs; DDP below
TIMEOUT = timedelta(minutes=30)  # collectives wait this long: rank 0 writes multi-GB checkpoints meanwhile


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


SINGLE = Dist()


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> Dist:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPU); `SINGLE` without torchrun."""
    world = world_size_from_env()
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT,
                                device_id=torch.device("cuda", local) if backend == "nccl" else None)
    return Dist(rank, world, local, backend)


def finish(d: Dist) -> None:
    """After a run every rank finished (stops are agreed on by all ranks): a barrier, so that no rank tears the
    group down while a peer is still in a collective (gloo aborts that peer: "terminate called without an active
    exception"), then destroy the group. Not called when a rank raised: its peers may be inside a collective,
    and destroying the group then can deadlock (torchtitan does the same); torchrun ends the job."""
    import torch.distributed as dist

    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_batch(sequences_per_step: int, world_size: int) -> None:
    """Every rank takes an equal share of each step's global batch. Checked before the process group forms, so
    every rank reports the config error itself (a rank that failed after joining would leave the others with a
    broken connection instead)."""
    if sequences_per_step % world_size:
        raise ConfigError("train.micro_batch_size", f"micro_batch_size x grad_accum = {sequences_per_step} sequences "
                          f"per step must be divisible by the {world_size} processes")


# --------------------------------------------------------------------------------------------- wrapping


def resolve_strategy(requested: str, d: Dist, n_params: int, device: torch.device) -> str:
    """``none`` for one process; ``auto`` -> ``fsdp`` for models above FSDP_AUTO_PARAMS on GPUs, else ``ddp``."""
    if not d.enabled:
        return "none"
    if requested == "auto":
        return "fsdp" if device.type == "cuda" and n_params > FSDP_AUTO_PARAMS else "ddp"
    return requested


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward instead of keeping them (HF gradient
    checkpointing, non-reentrant: it composes with DDP, FSDP2 and torch.compile). Exact: the recomputed forward
    is the same arithmetic, so losses and gradients do not change."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(f"train.activation_checkpointing: {type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x (the other name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def wrap_model(model: torch.nn.Module, d: Dist, strategy: str, activation_checkpointing: bool = False,
               bf16_params: bool = False) -> tuple[torch.nn.Module, str]:
    """(module to run forward/backward through, resolved strategy). DDP returns a wrapper around `model`;
    FSDP2 shards `model` in place (each decoder layer, then the root), so build the optimizer afterwards; with
    `bf16_params` its all-gathered weights are bf16 (the fp32 shards stay the master copy, gradients are reduced
    in fp32: `train.master_weights`). `activation_checkpointing` is applied first (also with one process)."""
    if activation_checkpointing:
        enable_activation_checkpointing(model)
    strategy = resolve_strategy(strategy, d, sum(p.numel() for p in model.parameters()),
                                next(model.parameters()).device)
    if strategy == "none":
        return model, strategy
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[d.local_rank] if d.backend == "nccl" else None), strategy
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh("cuda" if d.backend == "nccl" else "cpu", (d.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16_params else None
    kw = {"mp_policy": mp} if mp is not None else {}
    for layer in getattr(getattr(model, "model", None), "layers", []):
        fully_shard(layer, mesh=mesh, **kw)
    fully_shard(model, mesh=mesh, **kw)
    return model, strategy


@contextlib.contextmanager
def grad_sync(ddp: torch.nn.Module | None, enabled: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step (`ddp`: the DDP wrapper, or
    None; FSDP2 reduce-scatters every micro-batch, which keeps its gradients sharded)."""
    if enabled or ddp is None:
        yield
        return
    with ddp.no_sync():
        yield


def shard_rows(micro: list[dict[str, torch.Tensor]], d: Dist) -> list[dict[str, torch.Tensor]]:
    """This rank's contiguous 1/world share of a step's rows (all micro-batches concatenated, in order), in
    micro-batches no larger than the originals. Packed rows (one width, no ``attention_mask``) are cut as they
    are; padded rows (fine-tuning: right padding, ``attention_mask`` 0 and ``labels`` -100 there) may come from
    micro-batches of different widths: each new micro-batch is right-padded to the longest real row in it (the
    padding carries no attention and no label, so it changes no real position's loss)."""
    if not d.enabled:
        return micro
    bs = micro[0]["input_ids"].shape[0]
    if "attention_mask" not in micro[0] and len({b["input_ids"].shape[1] for b in micro}) == 1:
        rows = {k: torch.cat([b[k] for b in micro]) for k in micro[0]}
        per = rows["input_ids"].shape[0] // d.world_size
        mine = {k: v[d.rank * per: (d.rank + 1) * per] for k, v in rows.items()}
        return [{k: v[i: i + bs] for k, v in mine.items()} for i in range(0, per, bs)]
    flat = [(b, i) for b in micro for i in range(b["input_ids"].shape[0])]
    per = len(flat) // d.world_size
    mine_rows = flat[d.rank * per: (d.rank + 1) * per]
    out = []
    for start in range(0, per, bs):
        group = mine_rows[start: start + bs]
        if len({id(b) for b, _ in group}) == 1 and len(group) == group[0][0]["input_ids"].shape[0]:
            out.append(group[0][0])  # a whole original micro-batch: exactly the single-process tensors
            continue
        width = max(int(b["attention_mask"][i].sum()) if "attention_mask" in b else b["input_ids"].shape[1]
                    for b, i in group)
        batch = {}
        for k in micro[0]:
            fill = -100 if k == "labels" else 0
            t = torch.full((len(group), width), fill, dtype=micro[0][k].dtype)
            for r, (b, i) in enumerate(group):
                n = min(width, b[k].shape[1])
                t[r, :n] = b[k][i, :n]
            batch[k] = t
        out.append(batch)
    return out


def clip_grad_norm(params: Iterator[torch.nn.Parameter], max_norm: float) -> float:
    """Total gradient norm before clipping (the full norm also for FSDP2's sharded DTensor gradients)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


# --------------------------------------------------------------------------------------------- collectives


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum over ranks (float64); the values themselves with one process."""
    if not d.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device())
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_mean(value: float, d: Dist) -> float:
    return all_reduce_sum([value], d)[0] / d.world_size


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if `flag` is true on any (so all ranks take the same branch)."""
    return flag if not d.enabled else all_reduce_sum([float(flag)], d)[0] > 0


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def on_main(fn: Callable[[], T], d: Dist) -> T:
    """Run `fn` on rank 0 only and hand its result to every rank; its error is raised on every rank."""
    if not d.enabled:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    error: Exception | None = None
    if d.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as e:
            error = e
            box[0] = ("error", str(e), isinstance(e, UserError))
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0][0] == "error":
        _, msg, user = box[0]
        raise UserError(msg) if user else RuntimeError(f"rank 0 failed: {msg}")
    return box[0][1]


# --------------------------------------------------------------------------------------------- state dicts


def full_model_state(model: torch.nn.Module, strategy: str) -> dict[str, torch.Tensor] | None:
    """FSDP2: the full CPU state dict on rank 0 ({} elsewhere; every rank must call). Otherwise None: the
    (unwrapped) model saves itself. Tied copies are dropped, as ``save_pretrained`` does."""
    if strategy != "fsdp":
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    return sd


def full_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, strategy: str) -> dict[str, Any]:
    """The optimizer state dict in the single-process format (parameters keyed by index). FSDP2: gathered
    onto rank 0 ({} elsewhere; every rank must call)."""
    if strategy != "fsdp":
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    osd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not osd:
        return {}
    index = {n: i for i, n in enumerate(_param_names(model, opt))}
    return {"state": {index[k]: v for k, v in osd["state"].items()},
            "param_groups": [dict(g, params=[index[n] for n in g["params"]]) for g in osd["param_groups"]]}


def load_model_state(model: torch.nn.Module, sd: dict[str, torch.Tensor], strategy: str
                     ) -> tuple[list[str], list[str]]:
    """Load a full state dict; (missing, unexpected) keys. FSDP2: `sd` is read on rank 0 and broadcast
    (pass {} elsewhere)."""
    if strategy != "fsdp":
        missing, unexpected = model.load_state_dict(sd, strict=False)
        return list(missing), list(unexpected)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    res = set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, strict=False,
                                                                   broadcast_from_rank0=True))
    return list(res.missing_keys), list(res.unexpected_keys)


def load_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, osd: dict[str, Any],
                         strategy: str) -> None:
    """Load an optimizer state dict in the single-process format. FSDP2: read on rank 0 and broadcast."""
    if strategy != "fsdp":
        opt.load_state_dict(osd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if osd:
        names = _param_names(model, opt)
        osd = {"state": {names[i]: v for i, v in osd["state"].items()},
               "param_groups": [dict(g, params=[names[i] for i in g["params"]]) for g in osd["param_groups"]]}
    set_optimizer_state_dict(model, opt, osd, options=StateDictOptions(full_state_dict=True,
                                                                       broadcast_from_rank0=True))


def _param_names(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's index order (the order ``Optimizer.state_dict`` numbers them)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in opt.param_groups for p in g["params"]]
