"""One run-directory type: what "a run dir, a checkpoint dir or a Hub id" means, everywhere.

* :func:`resolve_model_source` turns a user's spec into a :class:`ModelSource` (a run dir means its ``final/``
  model, a checkpoint dir is itself, ``owner/name`` is a Hub id) with one-line errors, downloading nothing.
* :func:`hub_snapshot` is the only function that downloads a model or tokenizer from the Hub
  (env ``PLASTICITY_HUB_MOCK``: a directory of local stand-ins, for offline tests).
* Our checkpoints carry ``manifest.json`` (sha256 and size of every file, written last);
  :func:`verify_checkpoint` checks it, :func:`check_model_dir` adds the architecture and safetensors checks,
  :func:`load_model_checked` runs them all before any weights load.
Writing checkpoints and resuming from them is training's business (``plasticity.train.checkpoint``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .architectures import FAMILIES, family_names
from .errors import CheckpointError
from .hashing import sha256_file

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
    if (p / MANIFEST).exists() or _owning_run(p) is not None:  # a run's own checkpoints need their manifest
        reason = verify_checkpoint(p, hashes=True)
        if reason:
            raise CheckpointError(f"{p}: invalid checkpoint: {reason}")
    check_architecture(p)
    if not any(p.glob("*.safetensors")):
        raise CheckpointError(f"{p}: no .safetensors weights (only safetensors checkpoints are loaded)")


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


def is_run_dir(p: Path) -> bool:
    """A plasticity run directory (config.yaml / summary.json, and not itself an HF model dir)."""
    return (p.is_dir() and not (p / "config.json").is_file()
            and ((p / "config.yaml").is_file() or (p / "summary.json").is_file()))


def _owning_run(p: Path) -> Path | None:
    """The run a checkpoint dir belongs to: ``<run>/final`` or ``<run>/checkpoints/step_N``."""
    cand = p.parent if p.name == "final" else p.parent.parent if p.parent.name == "checkpoints" else None
    return cand if cand is not None and is_run_dir(cand) else None


def resolve_model_source(spec: str | Path, revision: str | None = None) -> ModelSource:
    """A run dir (its ``final/`` model), a checkpoint dir (itself) or a Hub id (``owner/name`` at `revision`).
    Downloads nothing; one-line CheckpointError for a missing path, an incomplete run, a non-model dir."""
    spec = str(spec)
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p}: not a checkpoint directory (give a run dir, a checkpoint dir or a Hub id)")
        if is_run_dir(p):
            final = p / "final"
            if not final.is_dir():
                raise CheckpointError(f"{p}: run has no final/ model (unfinished, or final/ was removed): finish it "
                                      f"with `plasticity pretrain|finetune {p / 'config.yaml'} --resume`")
            if not (final / "config.json").is_file():
                raise CheckpointError(f"{final}: no config.json (unfinished run?)")
            return ModelSource("run", str(final), None, p)
        if (p / "config.json").is_file():
            return ModelSource("checkpoint", str(p), None, _owning_run(p))
        raise CheckpointError(f"{p}: neither a run directory (config.yaml + final/) nor an HF checkpoint "
                              "(config.json)")
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise CheckpointError(f"{spec}: no such run or checkpoint directory (and not a Hub id owner/name)")
    return ModelSource("hub", spec, revision, None)


def snapshot_at(run_dir: str | Path, fraction: float) -> ModelSource:
    """A run's model at `fraction` of its steps: ``final/`` (fraction >= 1) or the snapshot
    ``checkpoints/step_N`` (N = round(fraction x total steps), at least 1)."""
    if fraction >= 1:
        return resolve_model_source(run_dir)
    p = Path(run_dir)
    try:
        total = json.loads((p / "summary.json").read_text())["total_steps"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{p}/summary.json: missing or without total_steps (not a completed run?)") from None
    step = round(fraction * total)
    if not 1 <= step < total:
        raise CheckpointError(f"{run_dir}: {fraction:g} of {total} steps is step {step}, not a snapshot between "
                              "step 1 and the final model")
    path = p / "checkpoints" / step_dir_name(step)
    if not (path / MANIFEST).exists():
        raise CheckpointError(f"{run_dir}: no checkpoint at {fraction:g} of pretraining ({path.name}); "
                              f"add {fraction} to train.checkpoint_fractions")
    return ModelSource("checkpoint", str(path), None, p)


def pretrain_run_of(finetune_run: str | Path) -> Path | None:
    """The plasticity pretraining run a fine-tuning run started from (None for external checkpoints)."""
    from .config import FinetuneConfig, from_dict, read_yaml

    cfg = from_dict(FinetuneConfig, read_yaml(Path(finetune_run) / "config.yaml"))
    p = Path(cfg.init_from).expanduser()
    run = p if is_run_dir(p) else _owning_run(p) if p.is_dir() else None
    if run is None or not (run / "summary.json").is_file():
        return None
    try:
        kind = json.loads((run / "summary.json").read_text()).get("kind")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return run if kind == "pretrain" else None


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
                       device: Any = "cpu", revision: str | None = None):
    """Load an HF causal LM in float32 from a run dir, a checkpoint dir or a Hub id (at `revision`: a commit sha,
    tag or branch; None = the default branch), after :func:`check_model_dir` (manifest when present, a
    supported family, safetensors only)."""
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
            str(local), dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code,
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
