"""The task registry: built-in tasks by name (with keyword options), runtime-registered and YAML tasks."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plasticity.errors import DataError
from plasticity.names import check_name
from plasticity.tasks.base import Task

TaskFactory = Callable[..., Task]

BUILTIN_MODULES = ("cot", "cloze", "safety", "demo", "arithmetic")
COMMON_OPTIONS = ("answer_fallback", "revision")
"""Options every task accepts: ``answer_fallback`` (bool) overrides the task's last-number fallback;
``revision`` (a commit sha, tag or branch) pins the Hub dataset version of every split (source='hub')."""


@dataclass(frozen=True)
class _Entry:
    name: str
    factory: TaskFactory
    defaults: dict[str, Any]


_REGISTRY: dict[str, _Entry] = {}
_loaded = False


def _defaults(factory: TaskFactory) -> dict[str, Any]:
    sig = inspect.signature(factory)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    }


def register(name: str, *, replace: bool = False) -> Callable[[TaskFactory], TaskFactory]:
    """Decorator: register `factory(**options) -> Task` under `name`; its keyword defaults are the options."""

    def deco(factory: TaskFactory) -> TaskFactory:
        if name in _REGISTRY and not replace:
            raise ValueError(f"task {name!r} is already registered")
        _REGISTRY[name] = _Entry(name, factory, _defaults(factory))
        return factory

    return deco


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Register an already-built task (e.g. one read from YAML) so `get_task(task.name)` finds it."""
    _ensure_builtins()
    check_name(task.name, "task name")
    if task.name in _REGISTRY and not replace:
        raise DataError(f"a task named '{task.name}' is already registered; pick another name")
    _REGISTRY[task.name] = _Entry(task.name, lambda: task, {})
    return task


def _ensure_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(f"plasticity.tasks.{module}")


def task_names() -> list[str]:
    """Names of all registered tasks, in registration order."""
    _ensure_builtins()
    return list(_REGISTRY)


def task_options(name: str) -> dict[str, Any]:
    """The options `name` accepts, with their defaults."""
    return dict(_entry(name).defaults)


def _entry(name: str) -> _Entry:
    _ensure_builtins()
    entry = _REGISTRY.get(name)
    if entry is None:
        raise DataError(
            f"unknown task '{name}'; known tasks: {', '.join(_REGISTRY)} (or a path to a task YAML)"
        )
    return entry


def _is_yaml_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or ("/" in name and Path(name).is_file())


def get_task(name: str | Path, **options: Any) -> Task:
    """The task called `name` built with `options` (unknown name or option -> DataError).

    `name` may also be a path to a task YAML file (see `plasticity.tasks.custom`).
    """
    name = str(name)
    if name not in _REGISTRY and _is_yaml_path(name):
        from plasticity.tasks.custom import load_task_file

        task = load_task_file(name)
        _apply_common(task, options)
        if options:
            raise DataError(f"YAML task {task.name} takes no options; got {', '.join(sorted(options))}")
        return task
    entry = _entry(name)
    common = {k: options.pop(k) for k in COMMON_OPTIONS if k in options}
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        known = ", ".join([*entry.defaults, *COMMON_OPTIONS])
        raise DataError(f"task {name} has no option {', '.join(repr(u) for u in unknown)}; options: {known}")
    task = entry.factory(**options)
    task.options = {**entry.defaults, **options, **task.options}
    _apply_common(task, common)
    return task


def _apply_common(task: Task, options: dict[str, Any]) -> None:
    if "revision" in options:
        rev = options.pop("revision")
        if rev is not None and not isinstance(rev, str | int):
            raise DataError(f"task {task.name}: option revision must be a commit sha, tag or branch, got {rev!r}")
        rev = None if rev is None else str(rev)
        task.splits = {name: replace(spec, hub=replace(spec.hub, revision=rev)) if spec.hub else spec
                       for name, spec in task.splits.items()}
        task.options["revision"] = rev
    if "answer_fallback" in options:
        value = options.pop("answer_fallback")
        if not isinstance(value, bool):
            raise DataError(f"task {task.name}: option answer_fallback must be true or false, got {value!r}")
        task.answer_fallback = value
        task.options["answer_fallback"] = value


def list_tasks() -> list[Task]:
    """Every registered task, built with its default options."""
    return [get_task(name) for name in task_names()]


def describe_tasks(data_root: str | Path | None = None) -> list[dict[str, Any]]:
    """One table row per registered task (see `Task.describe`)."""
    return [task.describe(data_root) for task in list_tasks()]
