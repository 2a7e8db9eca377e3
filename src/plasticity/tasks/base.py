"""Task definition: data sources per split, SFT formatting, gold answers and cloze items."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plasticity.errors import DataError
from plasticity.files import iter_jsonl
from plasticity.hashing import hash_fraction
from plasticity.tasks import answers
from plasticity.tasks.data_root import resolve_data_root

Row = Mapping[str, Any]

FAMILIES = ("cot", "cloze", "safety")
TASK_ANSWER_TYPES = (*answers.ANSWER_TYPES, "cloze", "free")
SPLITS = ("train", "eval")
SPLIT_ALIASES = {"train": "train", "eval": "eval", "test": "eval", "validation": "eval"}
LETTERS = answers.CHOICE_LETTERS

DEFAULT_TEMPLATE = "Human: {question}\nAssistant: {response}"
"""The SFT prompt template of the paper (Appendix C.1); the trainer applies it, tasks never do."""


def render(template: str, question: str, response: str) -> str:
    """Fill a prompt template with ``{question}`` and ``{response}`` (other braces are left alone)."""
    return template.replace("{question}", question).replace("{response}", response)


@dataclass(frozen=True)
class ClozeItem:
    """One cloze (log-likelihood, lm-evaluation-harness style) multiple-choice question.

    Either one shared context and one continuation per choice (HellaSwag, PIQA, ARC), one context per choice and
    one shared continuation (Winogrande partial scoring), or one of each per choice. Continuations include their
    leading delimiter (a space), as in lm-eval. `choice_texts`, if given, are the strings whose character lengths
    normalize `acc_norm` (lm-eval: the choices without the target delimiter); by default the continuations.
    A malformed item (fewer than 2 choices, misaligned lists, gold out of range) raises ValueError when built.
    """

    contexts: Sequence[str]
    continuations: Sequence[str]
    gold: int
    choice_texts: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = self.n_choices
        if len(self.contexts) not in (1, n) or len(self.continuations) not in (1, n) or n < 2:
            raise ValueError(
                f"cloze item needs >= 2 choices: one shared or one per choice of contexts ({len(self.contexts)}) "
                f"and of continuations ({len(self.continuations)})"
            )
        if not 0 <= self.gold < n:
            raise ValueError(f"cloze gold index {self.gold} out of range for {n} choices")

    @property
    def n_choices(self) -> int:
        return max(len(self.contexts), len(self.continuations))

    def requests(self) -> list[tuple[str, str]]:
        """The (context, continuation) pair of every choice."""
        n = self.n_choices
        ctx = list(self.contexts) * n if len(self.contexts) == 1 else list(self.contexts)
        cont = list(self.continuations) * n if len(self.continuations) == 1 else list(self.continuations)
        return list(zip(ctx, cont, strict=True))

    def norm_lengths(self) -> list[int]:
        """Character lengths used by acc_norm."""
        texts = self.choice_texts if self.choice_texts is not None else [c for _, c in self.requests()]
        if len(texts) != self.n_choices:
            raise ValueError(f"{len(texts)} choice_texts for {self.n_choices} choices")
        return [len(t) for t in texts]


# ---------------------------------------------------------------------------------------------------------
# Data sources


class RowFilter(Protocol):
    """Keeps a subset of a file's rows (e.g. one side of a seeded train/eval partition)."""

    def bind(self, data_root: Path | None) -> Callable[[Row], bool]: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Partition:
    """Seeded split of one file into a train part and a held-out eval part, by a content key.

    A row goes to the eval part iff ``hashing.hash_fraction(key(row), seed) < eval_fraction``. Rows with equal keys
    (duplicates, twin questions, several questions about one article) always land on the same side, so the
    parts never overlap, whatever the file order or `limit`.
    """

    part: str
    key: Callable[[Row], str] = field(compare=False)
    eval_fraction: float = 0.5
    seed: int = 0
    key_name: str = "question"

    def __post_init__(self) -> None:
        if self.part not in SPLITS:
            raise ValueError(f"partition part must be one of {SPLITS}, got {self.part!r}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise DataError(f"eval_fraction must be strictly between 0 and 1, got {self.eval_fraction}")

    def in_eval(self, row: Row) -> bool:
        return hash_fraction(" ".join(str(self.key(row)).split()).lower(), self.seed) < self.eval_fraction

    def bind(self, data_root: Path | None) -> Callable[[Row], bool]:
        want_eval = self.part == "eval"
        return lambda row: self.in_eval(row) == want_eval

    def describe(self) -> str:
        share = self.eval_fraction if self.part == "eval" else 1 - self.eval_fraction
        return f"{self.part} part (~{share:.0%}) of a seeded split by {self.key_name} (seed {self.seed})"


def _id_key(value: Any) -> Any:
    return " ".join(value.split()) if isinstance(value, str) else value


@dataclass(frozen=True)
class Membership:
    """Keeps rows whose `id_field` value is (keep=True) or is not (keep=False) listed in a JSONL id file.

    String values are compared with whitespace collapsed (e.g. to drop train problems that are test problems).
    """

    ids_path: str
    id_field: str
    keep: bool

    def bind(self, data_root: Path | None) -> Callable[[Row], bool]:
        path = resolve_local_path(self.ids_path, data_root)
        if not path.is_file():
            raise DataError(f"{path}: id list file is missing")
        ids = set()
        for lineno, value in iter_jsonl(path):
            try:
                ids.add(_id_key(value[self.id_field]))
            except (KeyError, TypeError, IndexError) as e:  # a BadLine, a list, a row without the id field
                raise DataError(f"{path}: line {lineno}: expected a JSON object with '{self.id_field}'") from e
        if not ids:
            raise DataError(f"{path}: id list file is empty")
        return lambda row: (_id_key(row.get(self.id_field)) in ids) == self.keep

    def describe(self) -> str:
        return f"rows whose {self.id_field} is {'' if self.keep else 'NOT '}listed in {self.ids_path}"


@dataclass(frozen=True)
class LocalSource:
    """A local file (JSONL, JSON array or parquet) relative to the data root, or an absolute path."""

    path: str
    fields: tuple[str, ...] = ()
    row_filter: RowFilter | None = None
    sample: int | None = None
    sample_seed: int = 0


@dataclass(frozen=True)
class HubSource:
    """``datasets.load_dataset(path, config, split=split, revision=revision)``; rows keep the Hub's field names.
    `revision` (a commit sha, tag or branch) pins the dataset version; None: the Hub's default branch."""

    path: str
    config: str | None
    split: str
    fields: tuple[str, ...] = ()
    row_filter: RowFilter | None = None
    revision: str | None = None

    def describe(self) -> str:
        cfg = f" [{self.config}]" if self.config else ""
        rev = f"@{self.revision}" if self.revision else ""
        extra = f"; {self.row_filter.describe()}" if self.row_filter else ""
        return f"{self.path}{rev}{cfg} {self.split}{extra}"


@dataclass(frozen=True)
class SplitSpec:
    """Where one split's rows come from.

    `local` has one file, or several mixed together (each with an optional seeded `sample`; the mixture is
    shuffled with `shuffle_seed`). `generator` (demo tasks) makes rows without any file. `note` records
    substitutions and caveats; it is copied into every load result.
    """

    local: tuple[LocalSource, ...] = ()
    hub: HubSource | None = None
    generator: Callable[[], list[dict[str, Any]]] | None = field(default=None, compare=False)
    shuffle_seed: int = 0
    note: str = ""

    def describe_local(self) -> str:
        if self.generator is not None:
            return "generated (no files needed)"
        parts = []
        for src in self.local:
            s = src.path
            if src.sample is not None:
                s += f" (sample {src.sample})"
            if src.row_filter is not None:
                s += f" ({src.row_filter.describe()})"
            parts.append(s)
        return " + ".join(parts) if parts else "-"


def resolve_local_path(path: str, data_root: Path | None) -> Path:
    """`path` itself if absolute, else `path` under the data root (`resolve_data_root`)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return resolve_data_root(data_root) / p


# ---------------------------------------------------------------------------------------------------------
# Task


RowFn = Callable[[Row], Any]


@dataclass
class Task:
    """One fine-tuning task.

    Fields: `name`; `family` (cot | cloze | safety); `answer_type` (numeric | choice | yesno for CoT tasks,
    cloze, free for safety); `splits` ("train" = SFT data, "eval" = evaluation data) as `SplitSpec`s;
    the row functions `question_fn`, `response_fn`, `gold_fn`, `cloze_fn`; `answer_fallback` (allow the
    last number/letter when a generation has no answer marker); `eval_tasks` (names of the tasks whose eval
    split evaluates this one, e.g. metamathqa -> gsm8k + math; empty = its own eval split); `description`;
    `paper` (the paper's data sizes); `options` (the keyword options it was built with).
    """

    name: str
    family: str
    answer_type: str
    splits: dict[str, SplitSpec]
    question_fn: RowFn
    response_fn: RowFn | None = None
    gold_fn: RowFn | None = None
    cloze_fn: RowFn | None = None
    answer_fallback: bool = False
    eval_tasks: tuple[str, ...] = ()
    description: str = ""
    paper: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise DataError(
                f"task {self.name}: family must be one of {', '.join(FAMILIES)}, got {self.family!r}"
            )
        if self.answer_type not in TASK_ANSWER_TYPES:
            raise DataError(
                f"task {self.name}: answer_type must be one of {', '.join(TASK_ANSWER_TYPES)}, "
                f"got {self.answer_type!r}"
            )
        if self.family == "cloze" and self.cloze_fn is None:
            raise DataError(f"task {self.name}: a cloze task needs a cloze item function")

    # --- formatting -------------------------------------------------------------------------------------

    def question(self, row: Row) -> str:
        """The prompt question for `row` (no template applied)."""
        return str(self.question_fn(row))

    def response(self, row: Row) -> str:
        """The SFT target response for `row`."""
        if self.response_fn is None:
            raise DataError(f"task {self.name} has no SFT responses for this row type")
        return str(self.response_fn(row))

    def format_example(self, row: Row) -> tuple[str, str]:
        """``(question, response)`` for SFT; the trainer renders them with its template."""
        return self.question(row), self.response(row)

    def gold(self, row: Row) -> str | int | None:
        """The gold answer: a normalized answer string (CoT), the gold index (cloze), None (safety)."""
        if self.cloze_fn is not None and self.gold_fn is None:
            return self.cloze_item(row).gold
        return None if self.gold_fn is None else self.gold_fn(row)

    def cloze_item(self, row: Row) -> ClozeItem:
        """The lm-evaluation-harness style cloze item for `row` (cloze tasks only)."""
        if self.cloze_fn is None:
            raise DataError(f"task {self.name} is not a cloze task")
        return self.cloze_fn(row)

    # --- answers ----------------------------------------------------------------------------------------

    def extract(self, generation: str) -> str | None:
        """The final answer in a generated response (CoT tasks)."""
        if self.answer_type not in answers.ANSWER_TYPES:
            raise DataError(f"task {self.name} ({self.answer_type}) has no extractable answers")
        return answers.extract_answer(self.answer_type, generation, fallback=self.answer_fallback)

    def is_correct(self, predicted: str | None, gold: str | None) -> bool:
        """Compare an extracted answer with a gold answer under this task's answer type."""
        return answers.is_correct(self.answer_type, predicted, gold)

    def score(self, generation: str, row: Row) -> bool:
        """Whether a generated response answers `row` correctly."""
        gold = self.gold(row)
        return self.is_correct(self.extract(generation), None if gold is None else str(gold))

    # --- description ------------------------------------------------------------------------------------

    def evaluated_on(self) -> tuple[str, ...]:
        """Names of the tasks whose eval split evaluates this task."""
        return self.eval_tasks or (self.name,)

    def local_files(self, split: str) -> list[str]:
        spec = self.splits.get(split)
        if spec is None:
            return []
        files = [s.path for s in spec.local]
        for s in spec.local:
            if isinstance(s.row_filter, Membership):
                files.append(s.row_filter.ids_path)
        return files

    def local_available(self, data_root: str | Path | None = None) -> bool:
        """Whether every split can be loaded from local files (generated splits always can)."""
        root = resolve_data_root(data_root)
        for split, spec in self.splits.items():
            if spec.generator is not None:
                continue
            if not spec.local:
                return False
            for path in self.local_files(split):
                p = Path(path)
                if not p.is_absolute() and root is None:
                    return False
                full = p if p.is_absolute() else Path(root) / p
                parquet = full.suffix == ".jsonl" and full.with_suffix(".parquet").is_file()
                if not (full.is_file() or parquet):
                    return False
        return True

    def describe(self, data_root: str | Path | None = None) -> dict[str, Any]:
        """A table-ready summary: name, family, answer type, local and Hub sources, availability, notes."""
        row: dict[str, Any] = {"name": self.name, "family": self.family, "answer_type": self.answer_type}
        for split in SPLITS:
            spec = self.splits.get(split)
            row[f"{split}_local"] = spec.describe_local() if spec else "-"
            row[f"{split}_hub"] = spec.hub.describe() if spec and spec.hub else "-"
        row["evaluated_on"] = ", ".join(self.evaluated_on())
        row["local_available"] = self.local_available(data_root)
        row["paper"] = self.paper
        row["notes"] = " ".join(s.note for s in self.splits.values() if s.note)
        row["description"] = self.description
        return row


# ---------------------------------------------------------------------------------------------------------
# Shared formatting helpers


def field_value(row: Row, name: str) -> Any:
    """``row[name]`` or a DataError naming the field."""
    try:
        return row[name]
    except KeyError:
        raise DataError(f"row has no field '{name}'") from None


def multiple_choice(question: str, options: list[str]) -> str:
    """``question`` followed by lettered options ``A. ...`` one per line."""
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {len(options)}")
    lines = [question.strip()] + [f"{LETTERS[i]}. {str(opt).strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def letter(index: int, n_options: int) -> str:
    """The letter of option `index` (0-based), checked against the number of options."""
    if not 0 <= int(index) < n_options:
        raise ValueError(f"answer index {index} out of range for {n_options} options")
    return LETTERS[int(index)]


def check_fraction(name: str, value: Any) -> float:
    """A task option that must lie strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise DataError(f"option {name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """A task option that must be an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"option {name} must be an integer >= {minimum}, got {value!r}")
    return value


def answer_line(answer: str) -> str:
    """The closing line of every SFT response: ``The answer is X.``"""
    return f"The answer is {answer}."
