"""Console output and the one-line error handling every command shares (below every sub-command module, so none
of them needs to import the ``plasticity.cli`` entry point)."""

from __future__ import annotations

import errno
import functools
import sys

import typer
from rich.console import Console

from .errors import DivergenceError, InterruptedRun, UserError

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
