"""Console output, the one-line error handling every command shares, and command options generated from a config
dataclass (below every sub-command module, so none of them needs to import the ``plasticity.cli`` entry point)."""

from __future__ import annotations

import dataclasses
import errno
import functools
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union

import typer
from rich.console import Console

from plasticity.errors import DivergenceError, InterruptedRun, UserError

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def data_root_option():
    """``--data-root DIR``, one type and help in every command that has it (`plasticity.tasks.data_root`)."""
    return typer.Option(None, "--data-root", metavar="DIR", file_okay=False,
                        help="local dataset folder (default: $PLASTICITY_DATA_ROOT, else $PLASTICITY_CACHE/data "
                             "= ~/.cache/plasticity/data; layout in the README)")


def log(msg: str) -> None:
    err.print(msg, markup=False)


def _quiet_transformers() -> None:
    """No per-file tqdm bars from transformers (our own progress and log lines say what is happening)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


_FS_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR,
              errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}


def user_errors(fn):
    """Turn UserError into one line + exit 2, divergence into exit 3, a signal into 128+signum."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            _quiet_transformers()
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"error: {e}", markup=False)
            raise typer.Exit(e.exit_code) from None
        except DivergenceError as e:
            err.print(f"error: {e}", markup=False)
            raise typer.Exit(3) from None
        except InterruptedRun as e:
            err.print(f"stopped: {e}; resume with --resume", markup=False)
            raise typer.Exit(128 + e.signum) from None
        except OSError as e:  # the file system refused (disk full, read-only, not a directory): one line, exit 2
            if e.errno not in _FS_ERRNOS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"error: {where}{e.strerror or e}", markup=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130) from None

    return wrapper


# --------------------------------------------------------------------------------------------- config options


def field_help(cls: type) -> dict[str, str]:
    """Each field's comment in the source of dataclass `cls`: the ``# ...`` at the end of its line, else the
    comment lines right above it (empty where the source is not available)."""
    import io
    import tokenize

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    above: list[str] = []
    for n, line in enumerate(source.splitlines(), start=1):
        if line.strip().startswith("#"):
            above.append(comments.get(n, ""))
            continue
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and m.group(1) in names:
            out[m.group(1)] = comments.get(n) or " ".join(above)
        above = []
    return out


def _optional(tp: Any) -> tuple[Any, bool]:
    """(`tp` without ``None``, whether it allowed ``None``)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else tp), True
    return tp, False


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def config_parameters(cls: type, special: dict[str, tuple[Any, Any]] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of dataclass `cls`, as Typer options named ``--field-name`` (litgpt style):
    the field's type (a list is comma-separated; a bool is ``--x/--no-x``), its default shown in ``--help``, its
    comment as the help. `special`: ``{field: (annotation, typer.Option(...))}`` for a field whose option
    is shared with other commands (``--data-root``)."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    params = []
    for f in dataclasses.fields(cls):
        if special and f.name in special:
            annotation, info = special[f.name]
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                            annotation=annotation))
            continue
        tp, _ = _optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        name, text = option_name(f.name), helps.get(f.name, "")
        if typing.get_origin(tp) is list:
            annotation = str | None
            text = f"{text} (comma-separated)" if text else "comma-separated"
            default = None if default is None else ",".join(str(v) for v in default)
        elif tp is bool:
            annotation, name = bool | None, f"{name}/--no-{name[2:]}"
        else:
            annotation = tp | None
        info = typer.Option(default, name, help=text, show_default=default is not None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
    return params


def _parse_list(raw: str, tp: Any, optional: bool, field_name: str) -> list[Any] | None:
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if not items:
        return None if optional else []
    (inner,) = typing.get_args(tp) or (str,)
    if inner is int:
        try:
            return [int(x) for x in items]
        except ValueError:
            raise UserError(f"{option_name(field_name)} {raw!r}: expected comma-separated integers, e.g. 5,15"
                            ) from None
    return items


def config_from_options(cls: type, values: dict[str, Any], config_file: Path | None = None) -> Any:
    """The validated `cls` from an optional YAML file of its fields (`config_file`) and the options the command
    line gave (`values`, the options given on the command line; they override the file). The one place a command
    builds and validates its config."""
    from plasticity.config import from_dict, read_yaml, validate

    hints = typing.get_type_hints(cls)
    data = read_yaml(config_file) if config_file is not None else {}
    for name, raw in values.items():
        tp, optional = _optional(hints[name])
        if typing.get_origin(tp) is list and isinstance(raw, str):
            raw = _parse_list(raw, tp, optional, name)
        elif isinstance(raw, Path):
            raw = str(raw)
        data[name] = raw
    cfg = from_dict(cls, data)
    validate(cfg)
    return cfg


_CONTEXT = "_typer_context"  # the click context Typer passes to a parameter annotated typer.Context


def config_command(cls: type, **special: tuple[Any, Any]):
    """Decorator of a command function with a ``cfg`` parameter: the command gets the function's other
    parameters, one option per field of dataclass `cls` (`config_parameters`; `special` as there) and
    ``--config FILE`` (a YAML mapping of those fields); the function receives the validated `cfg`."""

    def decorate(fn):
        hints = typing.get_type_hints(fn)
        sig = inspect.signature(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
               if p.name != "cfg"]
        fields = config_parameters(cls, special)
        config_file = inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
            default=typer.Option(None, "--config", metavar="FILE", dir_okay=False, exists=True,
                                 help=f"YAML file of settings (the fields of {cls.__name__}: the options "
                                      "below, with underscores); options on the command line override it"))
        names = [p.name for p in fields]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            ctx = kwargs.pop(_CONTEXT)
            values = {n: kwargs.pop(n) for n in names}
            given = {n: v for n, v in values.items()  # options the command line set (not their defaults)
                     if getattr(ctx.get_parameter_source(n), "name", None) not in ("DEFAULT", "DEFAULT_MAP")}
            return fn(cfg=config_from_options(cls, given, kwargs.pop("config")), **kwargs)

        context = inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        params = [*own, config_file, *fields, context]
        del command.__wrapped__  # Typer reads the generated signature, not `fn`'s
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
