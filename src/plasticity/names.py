"""User-given identifiers that become path components (task names, study names, checkpoint entry names) and
node ids read back from disk: one validator each, so no name can point outside the folder it is written in."""

from __future__ import annotations

import re

from plasticity.errors import UserError

MAX_NAME = 200  # bytes; file systems allow 255 per component and we add suffixes (".samples.jsonl")
# `<kind>-<hex hash>` (12 hex digits; a tokenizer node is named by its cache directory: 16); the kind is any
# stage's (lower-case letters and '_'), so a new stage needs no entry here; safe as a path component
NODE_ID = re.compile(r"^[a-z][a-z_]*-[0-9a-f]{1,64}$")


def name_problem(value: object) -> str | None:
    """Why `value` cannot be a single path component (None when it can): not a non-empty string, ``.`` or
    ``..``, a ``/`` or ``\\``, NUL or another control character, a leading ``-`` or ``~``, or too long."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if value in (".", ".."):
        return f"{value!r} names a directory, not an item in it"
    if "/" in value or "\\" in value:
        return f"{value!r} contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{value!r} contains a control character"
    if value[0] in "-~" or value != value.strip():
        return f"{value!r} starts with '{value[0]}' or has surrounding spaces"
    if len(value.encode()) > MAX_NAME:
        return f"is longer than {MAX_NAME} bytes"
    return None


def check_name(value: object, what: str) -> str:
    """`value` if it is a safe single path component, else a one-line UserError naming `what`."""
    problem = name_problem(value)
    if problem:
        raise UserError(f"{what}: {problem} (it becomes a file or folder name: use letters, digits, '_', '-', '.')")
    return str(value)


def check_node_id(value: object, where: str) -> str:
    """A node id read back from a file (`where`): ``<kind>-<hash>``, else a one-line UserError."""
    if not isinstance(value, str) or not NODE_ID.fullmatch(value):
        raise UserError(f"{where}: {value!r} is not a study node id (<kind>-<hash>); the file was edited or is "
                        "corrupt")
    return value
