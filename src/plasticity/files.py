"""Crash-safe file writing: every artifact is written to a temp file, fsynced, then renamed."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

MAX_YAML_NODES = 100_000  # a config, study or task file has hundreds; an alias bomb of 1 KB expands to billions


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a document whose aliases expand to more than MAX_YAML_NODES nodes (counted on
    the composed graph, shared nodes once per reference, before anything is built)."""

    def construct_document(self, node):
        sizes: dict[int, int] = {}

        def size(n) -> int:
            if id(n) not in sizes:
                sizes[id(n)] = 0  # a recursive alias counts once (SafeLoader builds it as a cycle)
                kids = (n.value if isinstance(n, yaml.SequenceNode)
                        else [x for kv in n.value for x in kv] if isinstance(n, yaml.MappingNode) else [])
                sizes[id(n)] = min(1 + sum(size(k) for k in kids), MAX_YAML_NODES + 1)
            return sizes[id(n)]

        if size(node) > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)", node.start_mark)
        return super().construct_document(node)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with alias expansion bounded (see `_BoundedLoader`); raises yaml.YAMLError."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error(e: yaml.YAMLError) -> str:
    """One line for a YAML parse error: ``malformed YAML at line L, column C: <problem>``."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"malformed YAML{where}: {getattr(e, 'problem', None) or 'invalid YAML'}"


def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse, before any work, an output directory that cannot be created or written: an existing file, a file
    among its parents, or a nearest existing parent this process may not write (immutable, read-only file system,
    permissions). Raises a one-line UserError naming `what` (the key or option); returns the path."""
    from plasticity.errors import UserError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{what}: {p} exists and is not a directory")
    cur = p
    while not cur.exists() and cur != cur.parent:
        if cur.is_symlink():
            raise UserError(f"{what}: {p} cannot be created: {cur} is a broken symlink or a symlink loop")
        cur = cur.parent
    if not cur.is_dir():
        raise UserError(f"{what}: {p} cannot be created: {cur} is a file")
    if not os.access(cur, os.W_OK | os.X_OK) or not _can_create_in(cur):
        raise UserError(f"{what}: {p} cannot be written: {cur} is not writable (permissions, immutable, "
                        "read-only or virtual file system)")
    return p


def _can_create_in(d: Path) -> bool:
    """Whether a folder can really be made in `d` (``access(2)`` says yes for /proc, which refuses): one is made
    and removed at once."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".plasticity-probe-", dir=d))
    except OSError:
        return False
    return True


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename inside it survives a power loss."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_HOST = socket.gethostname().replace(".", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temps(path: Path) -> None:
    """Remove the temp files of earlier writes of `path` whose writer died (SIGKILL, power loss) on this host;
    a kill mid-write would otherwise leave them forever (a full token cache, for ``train.bin``). Temps of live
    writers and of other hosts (a shared file system) are left alone."""
    prefix = f".{path.name}.{_HOST}."
    for f in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = f.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            f.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to probe it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` (``.<name>.<host>.<pid>.<random>.tmp``); on success fsync it and rename it
    over `path`. Temps left by killed earlier writes of `path` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the artifact the mode the umask asks for
            os.chmod(tmp_path, 0o666 & ~current_umask())
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write JSON (indented, keys in insertion order)."""
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    """Atomically write YAML."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | Path) -> Any:
    """A JSON file; one that does not parse is a one-line `CorruptFileError` naming it (a ValueError too)."""
    from plasticity.errors import CorruptFileError

    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: not valid JSON (damaged or edited: {str(e).splitlines()[0][:80]}); "
                               "restore it or move the folder away") from None


def read_json_or_none(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when the file is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it (metrics logs)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")
        f.flush()


class BadLine(NamedTuple):
    """What :func:`iter_jsonl` yields for a line that is not UTF-8 (`reason` "not UTF-8") or not JSON ("not JSON")."""

    reason: str
    error: ValueError


def iter_jsonl(path: str | Path, errors: str = "strict") -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of every non-blank line of a JSONL file, a :class:`BadLine` in place of a line
    that is not UTF-8 (`errors="replace"`: decoded with replacement characters instead) or not JSON. The one JSONL
    reader: each caller decides what a bad line means (skipped and counted, an error, a torn tail)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError as e:
                yield lineno, BadLine("not UTF-8", e)
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, BadLine("not JSON", e)


def tail_text(path: str | Path, max_bytes: int) -> str:
    """The last `max_bytes` of a file that may still be growing (a log), decoded leniently: its first line may
    be partial. Raises OSError when the file cannot be read."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - max_bytes))
        return f.read().decode("utf-8", "replace")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file, ignoring a torn last line left by a crash (a bad line before it raises)."""
    out: list[Any] = []
    torn: BadLine | None = None
    for _, value in iter_jsonl(path):
        if torn is not None:
            raise torn.error
        if isinstance(value, BadLine):
            torn = value
        else:
            out.append(value)
    return out


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
