"""plasticity: how pretraining choices change how well a language model can later be fine-tuned.

The Python API (see `plasticity.api`; each name is imported on first use, so ``import plasticity`` is light):

* ``Study.from_yaml(path).run(workers=2)``, ``Study.from_dict(mapping)``, ``Study.default()``;
* ``load_results(study_dir)``: results.csv as a typed pandas DataFrame;
* ``pretrain(config)``, ``finetune(config)``: train, return the run's summary;
* ``evaluate(model, ...)``, ``analyze(model, ...)``: return their results;
* the configs ``PretrainConfig``, ``FinetuneConfig``, ``EvaluateConfig``, ``AnalyzeConfig`` and the errors
  ``UserError`` (any bad input: one-line message), ``ConfigError``, ``CheckpointError``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Study": "plasticity.api", "StudyRun": "plasticity.api", "load_results": "plasticity.api",
    "pretrain": "plasticity.api", "finetune": "plasticity.api", "analyze": "plasticity.api",
    "PretrainConfig": "plasticity.config", "FinetuneConfig": "plasticity.config",
    "EvaluateConfig": "plasticity.config", "AnalyzeConfig": "plasticity.config",
    "UserError": "plasticity.errors", "ConfigError": "plasticity.errors", "CheckpointError": "plasticity.errors",
}
__all__ = ["__version__", "evaluate", *_LAZY]


def __getattr__(name: str) -> object:  # no `typing` import: it alone took longer than the rest
    if name == "evaluate":  # the subpackage, callable as plasticity.api.evaluate (see its __init__)
        return importlib.import_module("plasticity.evaluate")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'plasticity' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
