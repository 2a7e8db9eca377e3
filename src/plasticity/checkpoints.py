"""One run-directory type: what "a run dir, a checkpoint dir or a Hub id" means, everywhere.

* :func:`resolve_model_source` turns a user's spec into a :class:`ModelSource` (a run dir means its ``final/``
  model, a checkpoint dir is itself, ``owner/name`` is a Hub id) with one-line errors, downloading nothing.
* :func:`hub_snapshot` is the only function that downloads a model or tokenizer from the Hub
  (env ``PLASTICITY_HUB_MOCK``: a directory of local stand-ins, for offline tests).
* Our checkpoints carry ``manifest.json`` (sha256 and size of every file, written last);
  :func:`verify_checkpoint` checks it, :func:`check_model_dir` adds the architecture and safetensors checks,
  :func:`load_model_checked` runs them all before any weights load.
Writing checkpoints and resuming from them is training's business (``plasticity.train.checkpoint_writer``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plasticity.architectures import FAMILIES, family_names
from plasticity.errors import CheckpointError
from plasticity.hashing import sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.pt"
ARCHITECTURES = tuple(FAMILIES)  # llama, olmo2, mistral, qwen2, qwen3, gpt_neox (plasticity.architectures)
HUB_MOCK_ENV = "PLASTICITY_HUB_MOCK"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# never fetched: pickled weight formats (only safetensors are loaded) and other frameworks' weights
_HUB_IGNORE = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.gguf", "*.ot"]
TOKENIZER_FILES = ["*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "*.py"]  # a tokenizer-only fetch


# --------------------------------------------------------------------------------------------- manifests


def weights_digest(model_dir: str | Path) -> str:
    """One sha256 for a model's weights: of its ``*.safetensors`` files' sha256s (sorted by name). A Hub snapshot's
    files link to blobs named by their sha256, so that costs nothing; other files are hashed. Two checkpoints
    with the same digest hold the same weights (e.g. two Hub revisions that serve one file)."""
    parts = []
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        blob = f.resolve()
        name = blob.name if f.is_symlink() and re.fullmatch(r"[0-9a-f]{64}", blob.name) else sha256_file(blob)
        parts.append(f"{f.name}:{name}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def read_manifest(path: Path) -> dict[str, Any] | None:
    m = Path(path) / MANIFEST
    if not m.is_file():
        return None
    try:
        return json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def verify_checkpoint(path: Path, hashes: bool = True) -> str | None:
    """None if `path` is a complete checkpoint matching its manifest, else the reason it is not."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        return "no valid manifest.json (incomplete or not written by plasticity)"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"checkpoint format {manifest.get('format_version')} is not supported (expected {FORMAT_VERSION})"
    for name, info in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != info["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, manifest says {info['bytes']} (truncated?)"
        if hashes and sha256_file(f) != info["sha256"]:
            return f"{name} does not match its sha256 in the manifest (modified or corrupt)"
    return None


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint under `ckpt_root`, oldest first (size check only)."""
    out = []
    if not Path(ckpt_root).is_dir():
        return out
    for d in sorted(Path(ckpt_root).glob("step_*")):
        if d.is_dir() and verify_checkpoint(d, hashes=False) is None:
            out.append((int(d.name.split("_")[1]), d))
    return out


# --------------------------------------------------------------------------------------------- model dirs


def check_architecture(model_dir: str | Path) -> str:
    """The model type of an HF model directory; a one-line CheckpointError naming ``config.json`` unless it is
    one of `ARCHITECTURES` (or the file is missing or not JSON)."""
    conf = Path(model_dir) / "config.json"
    if not conf.is_file():
        raise CheckpointError(f"{model_dir}: no config.json (not an HF model directory)")
    try:
        model_type = json.loads(conf.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise CheckpointError(f"{conf}: not valid JSON") from None
    if model_type not in ARCHITECTURES:
        raise CheckpointError(f"{conf}: model type '{model_type}' is not {family_names()}")
    return model_type


def check_model_dir(p: str | Path) -> None:
    """The checks made before any weights load: manifest (sha256 + size of every file) when present, and always for
    a checkpoint of a plasticity run (``<run>/final``, ``<run>/checkpoints/step_N``), config.json,
    a supported model type (`ARCHITECTURES`), safetensors weights. Raises a one-line CheckpointError."""
    p = Path(p)
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a checkpoint directory")
    if (p / MANIFEST).exists() or RunDir.owning(p) is not None:  # a run's own checkpoints need their manifest
        reason = verify_checkpoint(p, hashes=True)
        if reason:
            raise CheckpointError(f"{p}: invalid checkpoint: {reason}")
    check_architecture(p)
    if not any(p.glob("*.safetensors")):
        raise CheckpointError(f"{p}: no .safetensors weights (only safetensors checkpoints are loaded)")


# --------------------------------------------------------------------------------------------- run dirs

CONFIG_FILE = "config.yaml"  # the resolved config of the run
SUMMARY_FILE = "summary.json"  # written when the run stops: status, losses, sizes
METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"
FINAL_DIR = "final"
CHECKPOINTS_DIR = "checkpoints"
ANALYSIS_DIR = "analysis"
EVAL_DIR = "eval"
UPSTREAM_CLOZE_DIR = "upstream_cloze"


@dataclass(frozen=True)
class RunDir:
    """A plasticity run directory (pretraining or fine-tuning; docs/artifacts.md): the one place that knows its
    layout. Readers ask it for files and parsed contents instead of joining paths themselves."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # ---- files
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def run_info_path(self) -> Path:
        return self.path / RUN_INFO_FILE

    @property
    def final(self) -> Path:
        """The model after the last step (an HF directory)."""
        return self.path / FINAL_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def snapshot(self, step: int) -> Path:
        """The checkpoint directory after `step` optimizer steps (present or not)."""
        return self.checkpoints_dir / step_dir_name(step)

    def snapshots(self) -> list[tuple[int, Path]]:
        """(step, dir) of every complete checkpoint, oldest first (size check only)."""
        return list_checkpoints(self.checkpoints_dir)

    @property
    def analysis_dir(self) -> Path:
        return self.path / ANALYSIS_DIR

    def analysis_path(self, name: str) -> Path:
        return self.analysis_dir / f"{name}.json"

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL_DIR

    @property
    def upstream_cloze_dir(self) -> Path:
        return self.path / UPSTREAM_CLOZE_DIR

    # ---- contents
    def is_run(self) -> bool:
        """A plasticity run (config.yaml or summary.json, and not itself an HF model dir)."""
        p = self.path
        return (p.is_dir() and not (p / "config.json").is_file()
                and (self.config_path.is_file() or self.summary_path.is_file()))

    def config(self, cls: type | None = None) -> Any:
        """The run's resolved config: the raw mapping, or typed as `cls` (``PretrainConfig``, ``FinetuneConfig``).
        One-line UserError for a missing or malformed file."""
        from plasticity.config import from_dict, read_yaml

        raw = read_yaml(self.config_path)
        return raw if cls is None else from_dict(cls, raw)

    def summary(self, strict: bool = False) -> dict[str, Any] | None:
        """``summary.json`` (None when missing or unreadable: a run that never stopped cleanly). `strict`: a file
        that does not parse is a one-line error naming it (`io.read_json`) instead of None."""
        from plasticity.files import read_json, read_json_or_none

        if strict:
            return read_json(self.summary_path) if self.summary_path.is_file() else None
        return read_json_or_none(self.summary_path)

    def kind(self) -> str | None:
        """``pretrain`` / ``finetune`` from the summary (None: no readable summary)."""
        summary = self.summary()
        kind = summary.get("kind") if isinstance(summary, dict) else None
        return kind if isinstance(kind, str) else None

    def completed(self) -> bool:
        """The summary parses and says completed, and ``final/`` has its manifest (a damaged summary is not a
        finished run: its results row would have no numbers)."""
        summary = self.summary()
        return summary is not None and summary.get("status") == "completed" and (self.final / MANIFEST).is_file()

    def analysis(self, name: str) -> dict[str, Any] | None:
        """``analysis/<name>.json`` (``probes``, ``rank``, ``gap``, ``norms``), None when absent or unreadable."""
        from plasticity.files import read_json_or_none

        return read_json_or_none(self.analysis_path(name))

    def eval(self, task: str) -> dict[str, Any] | None:
        """``eval/<task>.json`` of ``plasticity evaluate RUN`` (None when absent or unreadable)."""
        from plasticity.files import read_json_or_none

        return read_json_or_none(self.eval_dir / f"{task}.json")

    def snapshot_at(self, fraction: float) -> ModelSource:
        """The model at `fraction` of the run's steps: ``final/`` (fraction >= 1) or the snapshot
        ``checkpoints/step_N`` (N = round(fraction x total steps), at least 1)."""
        if fraction >= 1:
            return resolve_model_source(self.path)
        total = (self.summary() or {}).get("total_steps")
        if not isinstance(total, int):
            raise CheckpointError(f"{self.summary_path}: missing or without total_steps (not a completed run?)")
        step = round(fraction * total)
        if not 1 <= step < total:
            raise CheckpointError(f"{self.path}: {fraction:g} of {total} steps is step {step}, not a snapshot "
                                  "between step 1 and the final model")
        path = self.snapshot(step)
        if not (path / MANIFEST).exists():
            raise CheckpointError(f"{self.path}: no checkpoint at {fraction:g} of pretraining ({path.name}); "
                                  f"add {fraction} to train.checkpoint_fractions")
        return ModelSource("checkpoint", str(path), None, self.path)

    def pretrain_run(self, config: Any = None) -> RunDir | None:
        """For a fine-tuning run: the plasticity pretraining run it started from (None for external
        checkpoints and Hub models). `config`: the run's ``FinetuneConfig`` when the caller has read it already."""
        from plasticity.config import FinetuneConfig

        p = Path((config if config is not None else self.config(FinetuneConfig)).init_from).expanduser()
        run = RunDir(p) if RunDir(p).is_run() else RunDir.owning(p) if p.is_dir() else None
        return run if run is not None and run.kind() == "pretrain" else None

    @classmethod
    def owning(cls, model_dir: str | Path) -> RunDir | None:
        """The run a checkpoint directory belongs to: ``<run>/final`` or ``<run>/checkpoints/step_N``."""
        p = Path(model_dir)
        cand = p.parent if p.name == FINAL_DIR else p.parent.parent if p.parent.name == CHECKPOINTS_DIR else None
        return RunDir(cand) if cand is not None and RunDir(cand).is_run() else None


# --------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. `path`: the local model dir (run, checkpoint) or the Hub id (hub); `revision`:
    the Hub revision (None for local dirs); `run_dir`: the plasticity run the model belongs to, if any."""

    kind: Literal["run", "checkpoint", "hub"]
    path: str
    revision: str | None = None
    run_dir: Path | None = None

    def local_dir(self, allow_patterns: list[str] | None = None) -> Path:
        """The local model directory (a Hub source is fetched by :func:`hub_snapshot`)."""
        if self.kind == "hub":
            return Path(hub_snapshot(self.path, self.revision, allow_patterns=allow_patterns))
        return Path(self.path)

    def describe(self) -> str:
        return f"{self.path}@{self.revision}" if self.kind == "hub" and self.revision else self.path


def resolve_model_source(spec: str | Path, revision: str | None = None) -> ModelSource:
    """A run dir (its ``final/`` model), a checkpoint dir (itself) or a Hub id (``owner/name`` at `revision`).
    Downloads nothing; one-line CheckpointError for a missing path, an incomplete run, a non-model dir."""
    spec = str(spec)
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p}: not a checkpoint directory (give a run dir, a checkpoint dir or a Hub id)")
        run = RunDir(p)
        if run.is_run():
            final = run.final
            if not final.is_dir():
                raise CheckpointError(f"{p}: run has no final/ model (unfinished, or final/ was removed): finish it "
                                      f"with `plasticity pretrain|finetune {p / 'config.yaml'} --resume`")
            if not (final / "config.json").is_file():
                raise CheckpointError(f"{final}: no config.json (unfinished run?)")
            return ModelSource("run", str(final), None, p)
        if (p / "config.json").is_file():
            owner = RunDir.owning(p)
            return ModelSource("checkpoint", str(p), None, owner.path if owner else None)
        raise CheckpointError(f"{p}: neither a run directory (config.yaml + final/) nor an HF checkpoint "
                              "(config.json)")
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise CheckpointError(f"{spec}: no such run or checkpoint directory (and not a Hub id owner/name)")
    return ModelSource("hub", spec, revision, None)


# --------------------------------------------------------------------------------------------- Hub


def hub_snapshot(repo_id: str, revision: str | None = None, allow_patterns: list[str] | None = None) -> str:
    """The local directory of Hub repo `repo_id` at `revision` (downloaded, or from the HF cache): the ONLY
    place that downloads a model or tokenizer. Pickled weight files are never fetched.

    Test hook: env ``PLASTICITY_HUB_MOCK=<dir>`` returns ``<dir>/<owner>__<name>@<revision>`` if it exists, else
    ``<dir>/<owner>__<name>``, else ``<dir>`` itself if it holds a config.json; nothing is downloaded."""
    where = f"{repo_id}@{revision}" if revision else repo_id
    mock = os.environ.get(HUB_MOCK_ENV)
    if mock:
        base = Path(mock) / repo_id.replace("/", "__")
        for cand in ([Path(f"{base}@{revision}")] if revision else []) + [base]:
            if cand.is_dir():
                return str(cand)
        if (Path(mock) / "config.json").is_file():
            return str(mock)
        raise CheckpointError(f"{where}: not in the mock Hub {mock} ({HUB_MOCK_ENV})")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns,
                                 ignore_patterns=_HUB_IGNORE)
    except Exception as e:  # noqa: BLE001 - offline, unknown repo or revision, gated: one line for the user
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{where}: cannot download from the Hub: {msg}") from None


# --------------------------------------------------------------------------------------------- loading


def load_model_checked(path: str | Path | ModelSource, trust_remote_code: bool = False,
                       device: Any = "cpu", revision: str | None = None, dtype: Any = None):
    """Load an HF causal LM in `dtype` (default float32) from a run dir, a checkpoint dir or a Hub id (at
    `revision`: a commit sha, tag or branch; None = the default branch), after :func:`check_model_dir` (manifest
    when present, a supported family, safetensors only)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    src = path if isinstance(path, ModelSource) else resolve_model_source(path, revision)
    local = src.local_dir()
    check_model_dir(local)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its MISSING/UNEXPECTED table: we refuse such a model in one line instead
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(local), dtype=dtype or torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code,
            revision=None, output_loading_info=True)  # a local dir: the Hub revision is fetched
    except Exception as e:  # noqa: BLE001 - any loading failure is a one-line checkpoint problem
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{src.describe()}: cannot load model: {msg}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = sorted(set(info.get("missing_keys") or ()) - tied)
    unexpected, mismatched = sorted(info.get("unexpected_keys") or ()), list(info.get("mismatched_keys") or ())
    if missing or unexpected or mismatched:  # transformers would initialise them randomly and only warn
        what = "; ".join(f"{n} {k}: {', '.join(map(str, v[:3]))}{' ...' if len(v) > 3 else ''}" for k, v, n in (
            ("missing", missing, len(missing)), ("unexpected", unexpected, len(unexpected)),
            ("of another shape", mismatched, len(mismatched))) if v)
        raise CheckpointError(f"{src.describe()}: the weights do not match config.json ({what}); refusing to "
                              "load a partly random model")
    if model.config.model_type not in ARCHITECTURES:
        raise CheckpointError(f"{src.describe()}: model type '{model.config.model_type}' is not {family_names()}")
    return model.to(device)


def check_vocab(tokenizer: Any, model: Any, where: str | Path) -> None:
    """A tokenizer with more tokens than the model's embedding table would index past it (IndexError mid-run):
    one-line CheckpointError naming `where`."""
    n, vocab = len(tokenizer), int(model.config.vocab_size)
    if n > vocab:
        raise CheckpointError(f"{where}: tokenizer has {n} tokens but the model vocabulary is {vocab} (vocab "
                              "mismatch)")


def load_tokenizer_of(src: ModelSource, trust_remote_code: bool = False, local: str | Path | None = None):
    """The tokenizer that ships with a model (run, checkpoint or Hub snapshot; `local`: the snapshot already
    fetched); one-line CheckpointError."""
    from transformers import AutoTokenizer

    local = local if local is not None else src.local_dir()
    try:
        return AutoTokenizer.from_pretrained(str(local), revision=None, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{src.describe()}: cannot load its tokenizer ({msg})") from None
