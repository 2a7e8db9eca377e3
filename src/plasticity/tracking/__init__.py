"""Experiment tracking: mirror a run's metrics into TensorBoard, Weights & Biases, or any backend with a
small `Tracker` class (one module per backend, registered in `BACKENDS` by import path, so nothing is
imported unless chosen).

``metrics.jsonl`` stays the source of truth: a tracker only mirrors the records the training loop writes
there (prefixed ``train/`` or ``eval/``), a run's final numbers (``summary/...``) and its config. A study
(``tracker:`` in the study YAML) logs every node as its own tracker run, grouped by the study name, named and
tagged by its axis values; the study passes that context to the node's process through
``$PLASTICITY_TRACKING`` (JSON), so torchrun workers see it too. Tracker settings never enter node ids.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plasticity.errors import UserError

# backend name -> ("module:Class", the package it needs)
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorboard": ("plasticity.tracking.tensorboard_tracker:TensorBoardTracker", "tensorboard"),
    "wandb": ("plasticity.tracking.wandb_tracker:WandbTracker", "wandb"),
}
CONTEXT_ENV = "PLASTICITY_TRACKING"


@dataclass
class TrackedRun:
    """What a tracker run is: where its files go (`run_dir`), its `name`, `group` (the study name), `job_type`
    (pretrain / finetune / analyze / evaluate), a stable `run_id` (a study node id: a resumed run continues
    the same tracker run), `tags` (axis values) and `config` (the run's resolved config)."""

    run_dir: str
    name: str
    job_type: str
    run_id: str | None = None
    group: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    start_step: int = 0  # the step a resumed run continues after (TensorBoard drops older events past it)


class Tracker(Protocol):
    """One backend. `log` gets flat ``{name: number}`` at a step; `summary` the run's final numbers."""

    def __init__(self, run: TrackedRun) -> None: ...

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def summary(self, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def backend_names(value: str | list[str] | None) -> list[str]:
    """``"tensorboard"``, ``"tensorboard,wandb"``, a list, or None/"none" -> the list of backend names."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip() for v in items if str(v).strip()]
    return [] if names == ["none"] else list(dict.fromkeys(names))


def check_backends(value: str | list[str] | None, key: str) -> list[str]:
    """Backend names, checked against `BACKENDS` (no import): a one-line ConfigError naming `key`."""
    from plasticity.errors import ConfigError

    names = backend_names(value)
    for n in names:
        if n not in BACKENDS:
            raise ConfigError(key, f"unknown tracker {n!r} (choose from {', '.join(BACKENDS)}, or null)")
    return names


def numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric entries of `record` (bools and `step` left out), keys prefixed."""
    out = {}
    for k, v in record.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        out[f"{prefix}{k}"] = float(v)
    return out


class Trackers:
    """Every chosen backend of one run behind the `Tracker` interface. A backend that fails while logging is
    reported once through `warn` and dropped: tracking never stops a run (metrics.jsonl has everything)."""

    def __init__(self, names: list[str], run: TrackedRun, warn: Callable[[str], None] = print):
        self.warn = warn
        self.backends: dict[str, Tracker] = {}
        for name in names:
            cls = _load(name)
            try:
                self.backends[name] = cls(run)
            except Exception as e:  # noqa: BLE001 - one line for the user, e.g. W&B not logged in
                self.close()
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise UserError(f"tracker {name!r} could not start a run in {run.run_dir}: {msg}") from None

    def _each(self, what: str, *args: Any) -> None:
        for name, b in list(self.backends.items()):
            try:
                getattr(b, what)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker failure must not fail the run
                self.warn(f"warning: tracker {name} failed ({type(e).__name__}: {e}); it is off for this run")
                self.backends.pop(name)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if metrics:
            self._each("log", metrics, step)

    def log_record(self, record: dict[str, Any]) -> None:
        """A metrics.jsonl record: a training step (``train/...``) or an evaluation (``eval/...``)."""
        step = int(record.get("step", 0))
        self.log(numbers(record, "train/" if "loss" in record else "eval/"), step)

    def summary(self, metrics: dict[str, Any]) -> None:
        nums = numbers(metrics)
        if nums:
            self._each("summary", nums)

    def close(self) -> None:
        self._each("close")


def require(names: list[str]) -> None:
    """Fail fast (one line) when a chosen backend's package is not installed (nothing imported)."""
    for n in names:
        _load(n, import_it=False)


def _load(name: str, import_it: bool = True) -> type:
    target, package = BACKENDS[name]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"tracker {name!r} needs the {package} package: pip install 'lm-plasticity[track]' "
                        f"(or pip install {package})")
    module, cls = target.split(":")
    if not import_it:
        return object
    return getattr(importlib.import_module(module), cls)


def study_context() -> dict[str, Any] | None:
    """The study's tracking context of the node this process runs (``$PLASTICITY_TRACKING``), or None."""
    raw = os.environ.get(CONTEXT_ENV)
    if not raw:
        return None
    try:
        ctx = json.loads(raw)
    except ValueError:
        return None
    return ctx if isinstance(ctx, dict) else None


@contextmanager
def node_context(ctx: dict[str, Any] | None) -> Iterator[None]:
    """Set ``$PLASTICITY_TRACKING`` to `ctx` (a node's study context) while a node runs; restore it after."""
    old = os.environ.get(CONTEXT_ENV)
    if ctx:
        os.environ[CONTEXT_ENV] = json.dumps(ctx, default=str)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CONTEXT_ENV, None)
        else:
            os.environ[CONTEXT_ENV] = old


def open_run(names: list[str], run_dir: Path, job_type: str, config: dict[str, Any], start_step: int = 0,
             warn: Callable[[str], None] = print) -> Trackers | None:
    """Trackers for a run in `run_dir`: the run's own backends (`names`, e.g. ``train.tracker``) plus the
    study's (``$PLASTICITY_TRACKING``); None when neither chose one. Outside a study the run is named after
    its directory and has no group."""
    ctx = study_context() or {}
    names = list(dict.fromkeys([*names, *backend_names(ctx.get("backends"))]))
    if not names:
        return None
    tags = dict(ctx.get("axes") or {})
    run = TrackedRun(run_dir=str(run_dir), name=ctx.get("name") or Path(run_dir).name, job_type=job_type,
                     run_id=ctx.get("node"), group=ctx.get("group"), tags=tags,
                     config=dict(config, **({"study": {"name": ctx.get("group"), "node": ctx.get("node"),
                                                       "axes": tags}} if ctx else {})),
                     start_step=start_step)
    return Trackers(names, run, warn)


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` without NaN/inf values (for backends that reject them in summaries)."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def as_dict(run: TrackedRun) -> dict[str, Any]:
    return asdict(run)
