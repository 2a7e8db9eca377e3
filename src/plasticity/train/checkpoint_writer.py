"""Writing crash-safe checkpoints in plain HF format, plus the loop state needed to resume (reading and
verifying them: ``plasticity.checkpoints``).

A checkpoint directory is written under a temporary name, every file fsynced, ``manifest.json`` (sha256 and
size of every file) written last, then renamed into place. A directory without a manifest, or whose files do
not match it, is never treated as valid. Trainer state is loaded with ``torch.load(weights_only=True)``: no
arbitrary unpickling.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from plasticity.checkpoints import (
    FORMAT_VERSION,
    MANIFEST,
    TRAINER_STATE,
    read_manifest,
    sha256_file,
    verify_checkpoint,
)
from plasticity.checkpoints import (
    list_checkpoints as list_checkpoints,  # re-exported: the training loop's view of a run
)
from plasticity.checkpoints import step_dir_name as step_dir_name
from plasticity.errors import CheckpointError
from plasticity.files import current_umask, fsync_dir, write_json


def rng_state(all_cuda: bool = True) -> dict[str, Any]:
    """Torch and Python RNG states as tensors (loadable with ``weights_only=True``). ``all_cuda=False``: only
    the current GPU's (one process per GPU: touching the others would open a CUDA context on each)."""
    state = {"torch": torch.get_rng_state(),
             "python": torch.tensor(list(json.dumps(random.getstate()).encode()), dtype=torch.uint8)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all() if all_cuda else [torch.cuda.get_rng_state()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "python" in state:
        py = json.loads(bytes(state["python"].tolist()).decode())
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == 1:  # one GPU, or saved by one process per GPU: set the current device's
            torch.cuda.set_rng_state(state["cuda"][0])
        else:
            torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: torch.nn.Module, tokenizer_dir: Path | None,
                    trainer_state: dict[str, Any] | None, meta: dict[str, Any],
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Atomically write an HF checkpoint (+ tokenizer, + optional trainer state) to `path`. `state_dict`:
    the weights to save instead of the model's own (a sharded model's gathered full state)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True,
                              state_dict=dict(state_dict) if state_dict is not None else None)
        if tokenizer_dir is not None:
            for f in Path(tokenizer_dir).iterdir():
                if f.is_file() and not f.name.startswith("."):
                    shutil.copy2(f, tmp / f.name)
        if trainer_state is not None:
            _torch_save(trainer_state, tmp / TRAINER_STATE)
        files = {}
        mode = 0o666 & ~current_umask()
        for f in sorted(tmp.iterdir()):
            os.chmod(f, mode)  # safetensors writes 0600 files: artifacts follow the umask like any other file
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        write_json(tmp / MANIFEST, {"format_version": FORMAT_VERSION, "created": time.time(), "files": files,
                                    **meta})
        fsync_dir(tmp)
        if path.exists():
            trash = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:  # disk full, read-only, permissions: the previous checkpoint is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e}); "
                              "the previous checkpoint is intact") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` reporting a failed write (a full disk) as the OSError it is: torch raises RuntimeError
    (``unexpected pos ...``, ``file write failed``)."""
    try:
        torch.save(obj, path)
    except RuntimeError as e:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        first = re.sub(r"^\[enforce fail at [^\]]*\]\s*[.:]?\s*", "", first)
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      "No space left on device" if full else f"torch.save failed: {first}") from None


def latest_resumable(ckpt_root: Path, log=print) -> tuple[int, Path] | None:
    """Newest checkpoint that verifies fully and carries trainer state (listed in its manifest: a trainer state
    the manifest does not cover, e.g. left by an interrupted `strip_trainer_state`, is never read)."""
    listed = {d for _, d in list_checkpoints(ckpt_root)}
    for d in sorted(Path(ckpt_root).glob("step_*"), reverse=True) if Path(ckpt_root).is_dir() else []:
        if d not in listed:  # no manifest, or files of the wrong size: say so, never resume from it silently
            log(f"skipping checkpoint {d}: {verify_checkpoint(d, hashes=False)}")
            continue
        step = int(d.name.split("_")[1])
        if TRAINER_STATE not in (read_manifest(d) or {}).get("files", {}):
            continue
        reason = verify_checkpoint(d, hashes=True)
        if reason is None:
            return step, d
        log(f"skipping checkpoint {d}: {reason}")
    return None


def load_trainer_state(path: Path, mmap: bool = False) -> dict[str, Any]:
    """``mmap``: tensors are read from the file only when touched (large optimizer states, many processes)."""
    try:
        with warnings.catch_warnings():  # a foreign pickle (protocol != 2) is refused below; torch's aside is noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(Path(path) / TRAINER_STATE, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"{path}/{TRAINER_STATE}: cannot load trainer state ({_load_reason(e)})") from None


def _load_reason(e: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without torch's advice to use
    ``weights_only=False`` (which would unpickle arbitrary code)."""
    msg = str(e)
    m = re.search(r"WeightsUnpickler error: ([^\n]+)", msg)
    if m:
        return f"refused to unpickle it: {m.group(1).split('. Please')[0].strip()}"
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), type(e).__name__)
    return "refused to unpickle it: not plain tensors" if "weights_only" in first else first


_TEMP_DIR = re.compile(r"^\..+\.(tmp|old)-\d+$")  # `.<name>.tmp-<pid>` (being written), `.<name>.old-<pid>` (trash)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint directory: renamed to a trash name first, so a kill mid-delete leaves a temp directory
    (removed by `remove_stale_temps` on the next resume), never a half-deleted ``step_*`` directory."""
    path = Path(path)
    trash = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def remove_stale_temps(run_dir: Path) -> list[str]:
    """Remove the temp and trash directories that killed checkpoint writes left in `run_dir` and its
    ``checkpoints/`` (a full checkpoint each). Only for the holder of the run lock: then no live writer owns them.
    (Temp files of killed `plasticity.files.atomic_path` writes go with the next write of the same file.) Returns the
    names removed."""
    removed = []
    for parent in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for d in sorted(parent.iterdir()) if parent.is_dir() else []:
            if d.is_dir() and _TEMP_DIR.match(d.name):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(str(d.relative_to(run_dir)))
    return removed


def prune_resume_only(ckpt_root: Path) -> None:
    """Remove the resume-only (non-snapshot) checkpoints of a completed run; snapshots stay for the analyses."""
    for _, d in list_checkpoints(ckpt_root):
        if not (read_manifest(d) or {}).get("snapshot"):
            remove_checkpoint(d)


def strip_trainer_state(path: Path) -> None:
    """Drop the (large) optimizer state from an older snapshot, keeping weights; manifest rewritten first."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        return
    if TRAINER_STATE not in manifest.get("files", {}):
        (path / TRAINER_STATE).unlink(missing_ok=True)  # finish a strip that a kill interrupted
        return
    del manifest["files"][TRAINER_STATE]
    write_json(path / MANIFEST, manifest)
    (path / TRAINER_STATE).unlink(missing_ok=True)
