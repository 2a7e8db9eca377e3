"""Evaluation of fine-tuned models: batched KV-cache sampling, CoT metrics (Greedy, Maj@k, RM@k, Pass@k,
correct ratio, ORM score; paper Section 3) and lm-eval-style cloze log-likelihood accuracy (Appendix C.3).

This package is also the API function ``plasticity.evaluate(model, task=None, out_dir=None, config=None,
**options)`` (`plasticity.api.evaluate`): the package and the function share the name, and once a submodule
is imported Python binds ``plasticity.evaluate`` to the package, so the package itself is callable."""

import importlib
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """`plasticity.api.evaluate`: evaluate a run dir, checkpoint dir or Hub id; returns {task: result}."""
        return importlib.import_module("plasticity.api").evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
