"""The Python API: what ``import plasticity`` offers (each name is imported on first use, so the import is light).

    import plasticity

    study = plasticity.Study.from_yaml("configs/study-released-models.yaml")
    study.plan()                       # the nodes, their state, estimated tokens (like --dry-run)
    run = study.run(workers=2)         # like `plasticity study`: cached, resumable; run.ok, run.states
    df = plasticity.load_results(run.study_dir)   # results.csv as a typed pandas DataFrame

    summary = plasticity.pretrain("configs/pretrain-tiny.yaml", {"optim.weight_decay": 0.3, "out_dir": "runs/a"})
    summary = plasticity.finetune({"init_from": "runs/a", "task": "demo_arith", "out_dir": "runs/a-ft"})
    results = plasticity.evaluate("runs/a-ft", k=4, max_questions=16)     # {task: {metrics: ...}}
    analysis = plasticity.analyze("runs/a", what=["rank", "norms"])

Configs are what the CLI reads: a YAML path, a mapping, or the config dataclass (`plasticity.PretrainConfig`,
...), with `overrides` as dotted keys (``{"optim.lr": 1e-3}`` or ``["optim.lr=1e-3"]``). Bad input raises
`plasticity.UserError` (its message is the CLI's one-line error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from plasticity.config import (
    AnalyzeConfig,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    deep_merge,
    from_dict,
    parse_overrides,
    read_yaml,
    scope_task_options,
    set_dotted,
    to_dict,
    validate,
)
from plasticity.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from plasticity.study.spec import StudySpec

T = TypeVar("T")
Log = Callable[[str], Any]

__all__ = ["Study", "StudyRun", "analyze", "evaluate", "finetune", "load_results", "pretrain"]


def _quiet(_msg: str) -> None:
    pass


def _load_config(cls: type[T], config: T | Mapping[str, Any] | str | Path | None,
                overrides: Mapping[str, Any] | Sequence[str] = ()) -> T:
    """A validated `cls` from a YAML path, a mapping or an instance of `cls`, plus dotted `overrides`."""
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, str | Path):
        base = read_yaml(config)
    elif isinstance(config, cls):
        base = to_dict(config)
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise TypeError(f"config must be a YAML path, a mapping or a {cls.__name__}, not {type(config).__name__}")
    if isinstance(overrides, Mapping):
        over: dict[str, Any] = {}
        for k, v in overrides.items():
            set_dotted(over, str(k), v)
    else:
        over = parse_overrides(list(overrides))
    data = deep_merge(base, over)
    if cls is FinetuneConfig:
        data = scope_task_options(base, data)
    cfg = from_dict(cls, data)
    validate(cfg)
    return cfg


def pretrain(config: PretrainConfig | Mapping[str, Any] | str | Path | None = None,
             overrides: Mapping[str, Any] | Sequence[str] = (), *, resume: bool = False,
             log: Log = _quiet) -> dict[str, Any]:
    """Pretrain one model (`plasticity pretrain`); returns its ``summary.json`` (``status``, ``final_val_loss``,
    ``tokens_seen``, ...). The run directory is the config's ``out_dir``."""
    from plasticity.train.pretrain import run_pretrain

    return run_pretrain(_load_config(PretrainConfig, config, overrides), resume=resume, log=log)


def finetune(config: FinetuneConfig | Mapping[str, Any] | str | Path,
             overrides: Mapping[str, Any] | Sequence[str] = (), *, resume: bool = False,
             log: Log = _quiet) -> dict[str, Any]:
    """Fine-tune a checkpoint on a task (`plasticity finetune`); returns its ``summary.json``."""
    from plasticity.train.finetune import run_finetune

    return run_finetune(_load_config(FinetuneConfig, config, overrides), resume=resume, log=log)


def evaluate(model: str | Path, task: str | None = None, out_dir: str | Path | None = None,
             config: EvaluateConfig | Mapping[str, Any] | str | Path | None = None, *, revision: str | None = None,
             log: Log = _quiet, **options: Any) -> dict[str, Any]:
    """Evaluate a fine-tuning run dir, an HF checkpoint dir or a Hub id (`plasticity evaluate`); returns
    ``{task: {"metrics": {name: {"value", "ci_low", "ci_high", "n"}}, ...}}``. `options`: any `EvaluateConfig`
    field (``k``, ``max_questions``, ``max_new_tokens``, ...). For a run dir, `task` and `out_dir` default to its
    task and ``<run>/eval``."""
    from plasticity.evaluate.evaluator import run_evaluate

    cfg = _load_config(EvaluateConfig, config, options)
    return run_evaluate(model, cfg, task=task, out_dir=out_dir, log=log, revision=revision)


def analyze(model: str | Path, what: Iterable[str] | str | None = None, out_dir: str | Path | None = None,
            config: AnalyzeConfig | Mapping[str, Any] | str | Path | None = None, *, revision: str | None = None,
            log: Log = _quiet, **options: Any) -> dict[str, Any]:
    """Analyse a pretraining run dir, an HF checkpoint dir or a Hub id (`plasticity analyze`): probes, attention
    pseudo-rank, loss gaps, norms; returns ``{"files": ..., "rank": ..., "norms": ..., ...}``. `what`: the
    analyses (a list or ``"rank,norms"``; default all); `options`: any other `AnalyzeConfig` field."""
    from plasticity.analysis.analyzer import run_analyze

    if what is not None:
        names = what.split(",") if isinstance(what, str) else list(what)
        options = dict(options, what=[w.strip() for w in names if w.strip()])
    cfg = _load_config(AnalyzeConfig, config, options)
    return run_analyze(model, cfg, out_dir=out_dir, log=log, revision=revision)


# --------------------------------------------------------------------------------------------- studies


@dataclass
class StudyRun:
    """What `Study.run` did: the study directory, every node's final state, and whether all are done."""

    study_dir: Path
    states: dict[str, str]
    report: Path | None = None
    failed: dict[str, str] = field(default_factory=dict)  # node id -> state, for nodes that did not finish

    @property
    def ok(self) -> bool:
        return not self.failed

    def results(self) -> pd.DataFrame:
        """``results.csv`` as a typed DataFrame (`load_results`)."""
        return load_results(self.study_dir)


class Study:
    """A study (grid of pretraining / checkpoints x fine-tuning x evaluation, see the README): plan it, run it,
    read its results. Built from a YAML file, a mapping, or a `plasticity.study.spec.StudySpec`."""

    def __init__(self, spec: StudySpec):
        from plasticity.study.spec import validate_spec

        validate_spec(spec)
        self.spec = spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> Study:
        from plasticity.study.spec import load_spec

        return cls(load_spec(path))

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], base_dir: str | Path = ".") -> Study:
        """A study from a mapping shaped like the YAML; `base_config` is read relative to `base_dir`."""
        from plasticity.study.spec import StudySpec

        raw = dict(mapping)
        if isinstance(raw.get("base_config"), str):
            base_file = Path(base_dir) / raw["base_config"]
            raw = dict(raw, base=deep_merge(read_yaml(base_file), raw.get("base") or {}), base_config=str(base_file))
        return cls(from_dict(StudySpec, raw))

    @classmethod
    def default(cls) -> Study:
        """The default study (`plasticity study` without a file)."""
        from plasticity.study.spec import load_spec

        return cls(load_spec(None))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def study_dir(self) -> Path:
        """``<out_dir>/<name>``: study.json, results.csv, report/."""
        from plasticity.study.run_study import study_dir_of

        return study_dir_of(self.spec)

    def plan(self) -> list[dict[str, Any]]:
        """Every node, in dependency order: ``node``, ``kind``, ``state`` (done / failed / running / skipped /
        pending), ``label`` (its axis values), ``metric``, ``est_tokens``, ``est_flops``, ``out``."""
        from plasticity.study.plan import build_plan
        from plasticity.study.run_study import plan_table
        from plasticity.study.state import node_states

        plan = build_plan(self.spec)
        return plan_table(plan, node_states(plan))

    def run(self, workers: int | None = None, executor: str | None = None, retry_failed: bool = False,
            report: bool = True, log: Log = _quiet) -> StudyRun:
        """Run every node that is not done (like `plasticity study`), write results.csv and, with `report`, the
        HTML report. Nodes that fail are recorded (`StudyRun.failed`), the others go on."""
        from plasticity.files import check_output_dir
        from plasticity.study.run_study import run_study
        from plasticity.study.spec import check_memory_fits

        if executor is not None and executor not in ("local", "ray"):
            raise UserError(f"executor: {executor!r}: must be local or ray")
        if (executor or self.spec.executor) == "local":
            check_memory_fits(self.spec)
        check_output_dir(self.study_dir, "out_dir")
        res = run_study(self.spec, workers=workers, executor=executor, retry_failed=retry_failed, log=log)
        page = None
        if report and any(r.get("status") == "completed" for r in res.rows):
            from plasticity.report.build import build_report

            try:
                page = build_report(res.study_dir)
            except UserError as e:
                log(f"report skipped: {e}")
        return StudyRun(study_dir=res.study_dir, states=res.states, report=page,
                        failed={k: v for k, v in res.states.items() if v != "done"})

    def results(self) -> pd.DataFrame:
        return load_results(self.study_dir)

    def __repr__(self) -> str:
        return f"Study(name={self.spec.name!r}, out_dir={self.spec.out_dir!r})"


# --------------------------------------------------------------------------------------------- results

TEXT_COLUMNS = ("run", "reason", "failed_node", "source", "finetune_runs", "checkpoint")
TEXT_SUFFIXES = ("/trained_on", "/evaluated_on", "/tasks")
STATUSES = ("completed", "failed", "skipped", "running", "pending")


def load_results(study: str | Path) -> pd.DataFrame:
    """A study's ``results.csv`` as a pandas DataFrame with typed columns: every metric ``float64`` (NaN where a
    row has none), counts (``tokens``, ``params``) nullable ``Int64``, ``status`` a categorical, text columns
    (``run``, ``reason``, ``source``, provenance notes) ``string``, axis columns as their values' type.
    `study`: the study directory (``<out_dir>/<name>``, also an exported one), its ``results.csv``, or the study
    YAML. ``df.attrs``: ``study`` (name), ``axes`` (the axis columns), ``path``."""
    import json

    import pandas as pd

    p = Path(study)
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        p = Study.from_yaml(p).study_dir
    csv = p if p.is_file() else p / "results.csv"
    if not csv.is_file():
        raise UserError(f"{csv}: no results.csv (run the study first, or give its directory)")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
    meta = {}
    if (csv.parent / "study.json").is_file():
        meta = json.loads((csv.parent / "study.json").read_text())
    axes = _axis_columns(meta.get("spec") or {}, list(df.columns))
    for col in df.columns:
        if col == "status":
            df[col] = pd.Categorical(df[col], categories=STATUSES)
        elif col in TEXT_COLUMNS or col.endswith(TEXT_SUFFIXES):
            df[col] = df[col].astype("string")
        else:
            df[col] = _typed(df[col], pd)
    df.attrs.update(study=meta.get("name", csv.parent.name), axes=axes, path=str(csv))
    return df


def _axis_columns(spec: dict[str, Any], columns: list[str]) -> list[str]:
    from plasticity.study.spec import StudySpec, all_axes

    if not spec:
        return []
    names = {f.name for f in dataclasses.fields(StudySpec)}
    try:
        axes = list(all_axes(StudySpec(**{k: v for k, v in spec.items() if k in names and k in
                                           ("axes", "seeds", "tasks", "finetune_from")})))
    except (TypeError, UserError):
        return []
    return [c for c in (["checkpoint"] if spec.get("checkpoints") else []) + axes if c in columns]


def _typed(col: pd.Series, pd: Any) -> pd.Series:
    """Numbers as Int64 (all integral) or float64, booleans as boolean, anything else as string."""
    vals = col.dropna()
    if vals.empty:
        return col.astype("float64")
    if vals.isin(["True", "False"]).all():
        return col.map({"True": True, "False": False}).astype("boolean")
    num = pd.to_numeric(vals, errors="coerce")
    if num.isna().any():
        return col.astype("string")
    if vals.str.fullmatch(r"[-+]?\d+").all():
        return pd.to_numeric(col).astype("Int64")
    return pd.to_numeric(col).astype("float64")
