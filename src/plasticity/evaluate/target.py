"""What an evaluation evaluates: a model (a run's ``final/``, a checkpoint dir or a Hub id) and, for a fine-tuning
run, the run and its config. The run's ``config.yaml`` is read once, when the target is resolved, and the model
and tokenizer are loaded once, on first use: the evaluation and the stability measurement of one fine-tuning run
share them (`plasticity.evaluate.pipeline`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from plasticity.checkpoints import (
    ModelSource,
    RunDir,
    check_vocab,
    load_model_checked,
    load_tokenizer_of,
    resolve_model_source,
)
from plasticity.config import FinetuneConfig
from plasticity.hardware import default_device


@dataclass(eq=False)
class Target:
    """A resolved evaluation target. `spec`: what the user named (recorded as ``target`` in every result);
    `run`: the plasticity run whose ``final/`` model this is (None for a checkpoint dir or a Hub id);
    `finetune`: that run's config when it is a fine-tuning run (None for a pretraining run)."""

    spec: str
    source: ModelSource
    run: RunDir | None = None
    finetune: FinetuneConfig | None = None
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, spec: str | Path | ModelSource | RunDir | Target, revision: str | None = None) -> Target:
        """Resolve a run dir, a checkpoint dir or a Hub id (at `revision`); a `Target` is returned as it is.
        One-line errors for a missing path, an incomplete run, a malformed run config."""
        if isinstance(spec, Target):
            return spec
        if isinstance(spec, ModelSource):
            source, name = spec, str(spec.run_dir) if spec.kind == "run" else spec.path
        else:
            source, name = resolve_model_source(spec, revision), str(spec)
        if source.kind != "run":
            return cls(name, source)
        run = RunDir(source.run_dir)
        finetune = None
        if run.config_path.is_file() and run.summary_path.is_file() and run.kind() != "pretrain":
            finetune = run.config(FinetuneConfig)
        return cls(name, source, run, finetune)

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.finetune is not None and self.finetune.trust_remote_code)

    def load(self, device: str | torch.device | None = None, precision: str = "fp32") -> tuple[Any, Any]:
        """(model, tokenizer), loaded on the first call (on `device`, default: the GPU if there is one; weights in
        `precision`, fp32 or bf16) after the checkpoint checks and the vocabulary check; later calls return the
        same objects."""
        if self._loaded is None:
            dev = torch.device(device) if device is not None else default_device()
            local = self.source.local_dir()
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            model = load_model_checked(local, trust_remote_code=self.trust_remote_code, device=dev, dtype=dtype)
            tok = load_tokenizer_of(self.source, self.trust_remote_code, local)
            check_vocab(tok, model, self.source.path)
            self._loaded = (model, tok)
        return self._loaded

    def release(self) -> None:
        """Drop the loaded model (the next `load` loads it again)."""
        self._loaded = None
