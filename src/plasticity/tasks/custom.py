"""User-defined tasks from YAML, no Python needed.

Example (paths are relative to the YAML file)::

    name: my_math
    family: cot                      # cot | cloze | safety
    data: {train: train.jsonl, eval: test.jsonl}
    question_template: "{question}"  # str.format over the row: {field}, {field[sub]}, {field[0]}
    response_template: "{answer}"
    gold_field: answer               # or gold_template; '#### N', \\boxed{}, 'The answer is X' are extracted
    answer_type: numeric             # numeric | choice | yesno
    answer_fallback: false           # optional: last number when a generation has no answer marker

One file split into SFT and eval parts: ``data: {path: all.jsonl, eval_fraction: 0.2, split_seed: 0}``
(seeded, by the question text, disjoint). Cloze tasks use ``context_template``, ``choices_field`` (a list
field), ``gold_field`` (an index, ``"1"``-style digit string, letter or the text of a choice) and optional
``continuation_prefix`` (default ``" "``) instead of question/response templates. Optional ``hub``:
``{train: {path, config, split, revision}, eval: {...}}`` (``revision`` pins the dataset version). Unknown
keys and missing fields raise DataError naming them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plasticity.errors import DataError
from plasticity.files import load_yaml, yaml_error
from plasticity.names import name_problem
from plasticity.tasks import answers
from plasticity.tasks.base import (
    FAMILIES,
    LETTERS,
    ClozeItem,
    HubSource,
    LocalSource,
    Partition,
    Row,
    SplitSpec,
    Task,
    check_fraction,
    check_int,
    letter,
)

TOP_KEYS = (
    "name",
    "family",
    "description",
    "data",
    "hub",
    "question_template",
    "response_template",
    "gold_field",
    "gold_template",
    "answer_type",
    "answer_fallback",
    "context_template",
    "choices_field",
    "continuation_prefix",
)
DATA_KEYS = ("train", "eval", "path", "eval_fraction", "split_seed")
HUB_KEYS = ("path", "config", "split", "revision")


MAX_FORMAT_WIDTH = 1000  # a template's format spec may pad or cut to at most this many characters


def template_fields(template: str, key: str, origin: str) -> tuple[str, ...]:
    """Top-level row fields used by a ``str.format`` template (DataError naming `key` if malformed, or if a format
    spec asks for a width or precision above MAX_FORMAT_WIDTH: ``{q:>20000000000}`` would allocate 20 GB)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise DataError(f"{origin}: key '{key}': bad template {template!r}: {e}") from e
    names = []
    for _, field_name, spec, _ in parsed:
        if field_name is None:
            continue
        top = field_name.split(".")[0].split("[")[0]
        if not top or top.isdigit():
            raise DataError(f"{origin}: key '{key}': template fields must be named, e.g. {{question}}")
        if spec and ("{" in spec or any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec))):
            raise DataError(f"{origin}: key '{key}': format spec {spec!r} of {{{field_name}}}: widths and "
                            f"precisions above {MAX_FORMAT_WIDTH} and nested fields are not allowed")
        names.append(top)
    return tuple(dict.fromkeys(names))


class _TextFormatter(string.Formatter):
    """``str.format`` that fills only text: a null, number, list or dict value is not trained as ``"None"`` or
    ``"['x']"`` but makes the row unusable (skipped and counted as unformattable). `numbers`: ints and floats
    are text too (a gold answer)."""

    def __init__(self, numbers: bool = False):
        self.types: tuple[type, ...] = (str, int, float) if numbers else (str,)

    def format_field(self, value: Any, format_spec: str) -> str:
        if not isinstance(value, self.types) or isinstance(value, bool):
            raise TypeError(f"a template field holds {type(value).__name__}, not text")
        return super().format_field(value, format_spec)


_FORMATTERS = {False: _TextFormatter(), True: _TextFormatter(numbers=True)}


def fill(template: str, row: Row, key: str, numbers: bool = False) -> str:
    """``template.format_map(row)``; a missing field is a DataError naming it and the template key, a field that
    is not text (`numbers`: nor a number) a DataError too (the row is skipped and counted)."""
    try:
        return _FORMATTERS[numbers].vformat(template, (), dict(row))
    except KeyError as e:
        raise DataError(f"row has no field {e} used by '{key}'") from None
    except (IndexError, AttributeError, TypeError, ValueError) as e:
        raise DataError(f"cannot fill '{key}' from the row: {e}") from None


def load_task_file(path: str | Path) -> Task:
    """Read a task YAML file (relative data paths are resolved against its directory)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: task file not found")
    try:
        cfg = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: {yaml_error(e)}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(cfg, Mapping):
        raise DataError(f"{path}: a task file must be a YAML mapping")
    return task_from_config(cfg, base_dir=path.resolve().parent, origin=str(path))


def _require(cfg: Mapping[str, Any], key: str, origin: str) -> Any:
    value = cfg.get(key)
    if value is None or value == "":
        raise DataError(f"{origin}: missing key '{key}'")
    return value


def _string(cfg: Mapping[str, Any], key: str, origin: str, required: bool = True) -> str | None:
    value = _require(cfg, key, origin) if required else cfg.get(key)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{origin}: key '{key}' must be a string, got {type(value).__name__}")
    return value


def _check_keys(mapping: Mapping[str, Any], allowed: tuple[str, ...], prefix: str, origin: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise DataError(f"{origin}: unknown key '{prefix}{key}'; allowed: {', '.join(allowed)}")


def _path(value: Any, key: str, base_dir: Path | None, origin: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"{origin}: key '{key}' must be a file path")
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    return str(p)


def _cloze_gold(value: Any, choices: list[Any]) -> int:
    if isinstance(value, bool):
        raise ValueError("gold must be an index, letter or choice text")
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s.isdigit():
        return int(s)
    if len(s) == 1 and s.upper() in LETTERS:
        return LETTERS.index(s.upper())
    return [str(c) for c in choices].index(s)


def _cot_gold(answer_type: str, raw: Any, n_choices: int | None = None) -> str:
    if answer_type == "choice" and isinstance(raw, int) and not isinstance(raw, bool):
        return letter(raw, n_choices or len(LETTERS))
    text = str(raw)
    found = answers.extract_answer(answer_type, text, fallback=False)
    if found is None:
        key = answers.answer_key(answer_type, text)
        found = answers.normalize_answer(text) if answer_type == "numeric" else (str(key) if key else None)
    if not found:
        raise ValueError(f"no {answer_type} gold answer in {text[:40]!r}")
    return found


def task_from_config(
    cfg: Mapping[str, Any], base_dir: Path | None = None, origin: str = "task config"
) -> Task:
    """Build a `Task` from a parsed YAML mapping (see the module docstring)."""
    _check_keys(cfg, TOP_KEYS, "", origin)
    name = _string(cfg, "name", origin)
    family = _string(cfg, "family", origin)
    if family not in FAMILIES:
        raise DataError(f"{origin}: key 'family' must be one of {', '.join(FAMILIES)}, got {family!r}")
    assert name is not None
    problem = name_problem(name)  # the name becomes <out>/<name>.json: never a path
    if problem:
        raise DataError(f"{origin}: key 'name': {problem} (it becomes a file name)")
    defaults = {"cloze": "cloze", "safety": "free"}
    answer_type = cfg.get("answer_type", defaults.get(family))
    allowed_types = answers.ANSWER_TYPES if family == "cot" else (defaults[family],)
    if answer_type not in allowed_types:
        raise DataError(
            f"{origin}: key 'answer_type' must be one of {', '.join(allowed_types)} for family {family}"
        )
    fallback = cfg.get("answer_fallback", False)
    if not isinstance(fallback, bool):
        raise DataError(f"{origin}: key 'answer_fallback' must be true or false")

    fns = _cloze_fns(cfg, origin) if family == "cloze" else _text_fns(cfg, origin, family, str(answer_type))
    splits = _splits(
        cfg, base_dir, origin, tuple(dict.fromkeys(fns.train_fields)), tuple(dict.fromkeys(fns.eval_fields)),
        fns.key_fn,
    )
    description = cfg.get("description") or f"custom task from {origin}"
    return Task(
        name=name,
        family=family,
        answer_type=str(answer_type),
        splits=splits,
        question_fn=fns.question,
        response_fn=fns.response,
        gold_fn=fns.gold,
        cloze_fn=fns.cloze,
        answer_fallback=fallback,
        description=str(description),
        paper="user-defined",
        options={"source_file": origin},
    )


@dataclass
class _RowFns:
    """What a task YAML's templates make of a row, and the fields each split needs."""

    question: Callable[[Row], Any]
    response: Callable[[Row], Any] | None
    key_fn: Callable[[Row], str]
    train_fields: tuple[str, ...]
    eval_fields: tuple[str, ...]
    gold: Callable[[Row], Any] | None = None
    cloze: Callable[[Row], ClozeItem] | None = None


def _cloze_fns(cfg: Mapping[str, Any], origin: str) -> _RowFns:
    """A cloze task: ``context_template`` + each of ``choices_field`` (after ``continuation_prefix``), the
    gold choice at ``gold_field``."""
    context_t = _string(cfg, "context_template", origin)
    choices_field = _string(cfg, "choices_field", origin)
    gold_field = _string(cfg, "gold_field", origin)
    prefix = _string(cfg, "continuation_prefix", origin, required=False)
    prefix = " " if prefix is None else prefix
    assert context_t is not None and choices_field is not None and gold_field is not None
    fields = (*template_fields(context_t, "context_template", origin), choices_field, gold_field)

    def cloze(row: Row) -> ClozeItem:
        raw = row[choices_field]
        raw = raw.tolist() if hasattr(raw, "tolist") else raw  # a numpy array from parquet
        if not isinstance(raw, list | tuple):
            # a string would be split into characters ("even odd" -> 8 choices): a row the task cannot use
            raise TypeError(f"field '{choices_field}' must hold a list of choices, got {type(raw).__name__}")
        choices = list(raw)
        context = fill(context_t, row, "context_template")
        gold = _cloze_gold(row[gold_field], choices)
        return ClozeItem([context] * len(choices), [prefix + str(c) for c in choices], gold)

    def question(row: Row) -> str:
        it = cloze(row)
        return it.contexts[it.gold]

    def response(row: Row) -> str:
        it = cloze(row)
        return it.continuations[it.gold][len(prefix) :] if prefix else it.continuations[it.gold]

    return _RowFns(question, response, lambda row: fill(context_t, row, "context_template"), fields, fields,
                   cloze=cloze)


def _text_fns(cfg: Mapping[str, Any], origin: str, family: str, answer_type: str) -> _RowFns:
    """A CoT or safety task: ``question_template`` / ``response_template``; a CoT task's gold answer from
    ``gold_field`` or ``gold_template`` (exactly one)."""
    question_t = _string(cfg, "question_template", origin)
    response_t = _string(cfg, "response_template", origin)
    assert question_t is not None and response_t is not None
    q_fields = template_fields(question_t, "question_template", origin)
    train_fields = (*q_fields, *template_fields(response_t, "response_template", origin))

    def question(row: Row) -> str:
        return fill(question_t, row, "question_template")

    def response(row: Row) -> str:
        return fill(response_t, row, "response_template")

    fns = _RowFns(question, response, question, train_fields, q_fields)
    if family == "cot":
        gold_field = _string(cfg, "gold_field", origin, required=False)
        gold_t = _string(cfg, "gold_template", origin, required=False)
        if (gold_field is None) == (gold_t is None):
            raise DataError(f"{origin}: a cot task needs exactly one of the keys 'gold_field', 'gold_template'")
        gold_fields = (gold_field,) if gold_field else template_fields(gold_t or "", "gold_template", origin)
        fns.eval_fields = (*q_fields, *gold_fields)

        def gold(row: Row) -> str:
            if gold_field is not None:
                return _cot_gold(answer_type, row[gold_field])
            return _cot_gold(answer_type, fill(gold_t or "", row, "gold_template", numbers=True))

        fns.gold = gold
    return fns


def _splits(
    cfg: Mapping[str, Any],
    base_dir: Path | None,
    origin: str,
    train_fields: tuple[str, ...],
    eval_fields: tuple[str, ...],
    key_fn: Callable[[Row], str],
) -> dict[str, SplitSpec]:
    data = _require(cfg, "data", origin)
    if not isinstance(data, Mapping):
        raise DataError(f"{origin}: key 'data' must be a mapping with train/eval (or path) entries")
    _check_keys(data, DATA_KEYS, "data.", origin)
    hubs = _hub_sources(cfg.get("hub"), origin, {"train": train_fields, "eval": eval_fields})
    splits: dict[str, SplitSpec] = {}
    if "path" in data:
        if "train" in data or "eval" in data:
            raise DataError(
                f"{origin}: use either 'data.path' (one file, split by eval_fraction) or 'data.train'"
            )
        path = _path(data["path"], "data.path", base_dir, origin)
        frac = check_fraction("data.eval_fraction", data.get("eval_fraction", 0.2))
        seed = check_int("data.split_seed", data.get("split_seed", 0))
        for part, fields in (("train", train_fields), ("eval", eval_fields)):
            partition = Partition(part, key_fn, frac, seed, "question")
            splits[part] = SplitSpec(local=(LocalSource(path, fields, partition),), hub=hubs.get(part))
        return splits
    for key in ("eval_fraction", "split_seed"):
        if key in data:
            raise DataError(f"{origin}: key 'data.{key}' only applies together with 'data.path'")
    if "train" not in data:
        raise DataError(f"{origin}: missing key 'data.train'")
    for part, fields in (("train", train_fields), ("eval", eval_fields)):
        if part in data:
            path = _path(data[part], f"data.{part}", base_dir, origin)
            splits[part] = SplitSpec(local=(LocalSource(path, fields),), hub=hubs.get(part))
    return splits


def _hub_sources(hub: Any, origin: str, fields: dict[str, tuple[str, ...]]) -> dict[str, HubSource]:
    if hub is None:
        return {}
    if not isinstance(hub, Mapping):
        raise DataError(f"{origin}: key 'hub' must map train/eval to {{path, config, split}}")
    _check_keys(hub, ("train", "eval"), "hub.", origin)
    out = {}
    for part, spec in hub.items():
        if not isinstance(spec, Mapping):
            raise DataError(f"{origin}: key 'hub.{part}' must be a mapping with path, config, split")
        _check_keys(spec, HUB_KEYS, f"hub.{part}.", origin)
        path = _require(spec, "path", f"{origin} (hub.{part})")
        revision = spec.get("revision")
        out[part] = HubSource(str(path), spec.get("config"), str(spec.get("split", part)), fields[part],
                              revision=None if revision is None else str(revision))
    return out
