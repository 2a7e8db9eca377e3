"""The checkpoint stage: an existing model (our run, any HF model dir of a supported family, or a pinned Hub revision)
that analyze and finetune consume like a pretraining node. Its output dir holds ``model`` (a link to the run or
model dir, the Hub snapshot included) and ``checkpoint.json`` (where it came from, what was checked)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plasticity.checkpoints import RunDir
from plasticity.config import CheckpointConfig
from plasticity.errors import CheckpointError, ConfigError
from plasticity.files import read_json_or_none as read_json
from plasticity.names import name_problem
from plasticity.study.stages.base import GridPoint, Node, RunContext, Stage, StudySpec, Upstream, grid_points, runs_dir
from plasticity.study.stages.finetune import start_fractions
from plasticity.study.stages.pretrain import PretrainStage

ROW_KEY = "checkpoint"  # the results column (and row point key) naming a row's checkpoint entry


class CheckpointStage(Stage):
    """A model per ``checkpoints`` entry; its rows cross the entry with the axes of the stages built on a model."""

    kind = "checkpoint"
    config_type = CheckpointConfig
    section = "checkpoints"
    provides = "model"

    def check_spec(self, spec: StudySpec, axes: dict[str, list[Any]]) -> None:
        """Each entry's source (plan-time, nothing downloaded), and what a study over checkpoints cannot do."""
        if not spec.checkpoints:
            return
        for name, cfg in spec.checkpoints.items():
            self.check(name, cfg)
        if spec.analyze is None and spec.finetune is None:
            raise ConfigError("checkpoints", "a study over checkpoints needs `analyze` or `finetune`")
        if start_fractions(axes):
            raise ConfigError("finetune_from", "fractions of pretraining need pretraining runs; checkpoint entries "
                              "are fine-tuned as they are (give each intermediate checkpoint its own entry)")

    def row_keys(self, spec: StudySpec) -> list[str]:
        return [ROW_KEY] if spec.checkpoints else []

    def rows(self, spec: StudySpec, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Every entry crossed with every point of `grid`."""
        points = grid_points(grid)
        return [{ROW_KEY: name, **p} for name in spec.checkpoints for p in points]

    def check(self, name: str, cfg: CheckpointConfig) -> None:
        """Plan-time checks (nothing downloaded): the source exists, a Hub id has a revision, a local model is
        of a supported family (`plasticity.architectures`). One-line ConfigError naming the entry."""
        from plasticity.checkpoints import check_architecture, resolve_model_source

        key = f"checkpoints.{name}"
        problem = name_problem(name)
        if problem:
            raise ConfigError(key, f"entry name {problem}")
        if not cfg.path:
            raise ConfigError(f"{key}.path", "set a run dir, a checkpoint dir or a Hub id")
        try:
            src = resolve_model_source(cfg.path, cfg.revision)
            if src.kind == "hub":
                if not cfg.revision:
                    raise ConfigError(f"{key}.revision", f"required for the Hub model {cfg.path} (pin a commit "
                                      "sha, tag or branch, so that the study's cache means one model)")
            else:
                if cfg.revision:
                    raise ConfigError(f"{key}.revision", "only for Hub ids (this is a local directory)")
                check_architecture(src.path)
        except CheckpointError as e:
            raise ConfigError(f"{key}.path", str(e)) from None

    def identity(self, cfg: CheckpointConfig) -> dict[str, Any]:
        """Hub: id and revision. Local: the resolved path and a fingerprint of the weights (the manifest of our
        checkpoints, else file sizes and mtimes), so a model rewritten in place is a new node."""
        from plasticity.checkpoints import resolve_model_source

        src = resolve_model_source(cfg.path, cfg.revision)
        if src.kind == "hub":
            return {"hub": src.path, "revision": cfg.revision}
        model = Path(src.path).resolve()
        manifest = model / "manifest.json"
        if manifest.is_file():
            fp: Any = hashlib.sha256(manifest.read_bytes()).hexdigest()
        else:
            fp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(model.iterdir())
                  if f.name == "config.json" or f.suffix == ".safetensors"]
        return {"path": str(model), "run": str(src.run_dir.resolve()) if src.kind == "run" else None,
                "fingerprint": fp}

    def build(self, spec: StudySpec, point: GridPoint, upstream: Upstream) -> Node:
        name = point.axes[ROW_KEY]
        cfg = spec.checkpoints[name]
        c_id = self.node_id(self.identity(cfg))
        gpus, _ = spec.resources.of(self.kind)
        return Node(id=c_id, kind=self.kind, deps=[], out=str(runs_dir(spec) / c_id), label=f"{ROW_KEY}={name}",
                    gpus=gpus, config={"name": name, "path": cfg.path, "revision": cfg.revision})

    def extend(self, upstream: Upstream, node: Node) -> Upstream:
        """Analyze and finetune are given the node's ``model`` link (a run dir or a model dir)."""
        return upstream.add(self.provides, node, model_dir=str(Path(node.out) / "model"), shape=None)

    def run(self, node: Node, ctx: RunContext) -> dict[str, Any]:
        from plasticity.checkpoints import check_model_dir, read_manifest, resolve_model_source, weights_digest

        src = resolve_model_source(node.config["path"], node.config["revision"])
        local = src.local_dir()  # a Hub snapshot is fetched here (the only download)
        check_model_dir(local)  # manifest sha256 when ours, a supported family, safetensors
        model_type = json.loads((Path(local) / "config.json").read_text())["model_type"]
        target = src.run_dir if src.kind == "run" else Path(local)
        out = Path(node.out)
        out.mkdir(parents=True, exist_ok=True)
        link = out / "model"
        tmp = out / f"model.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(target).resolve(), target_is_directory=True)
        os.replace(tmp, link)
        manifest = read_manifest(Path(local))
        info = {"name": node.config["name"], "source": src.describe(), "kind": src.kind,
                "revision": node.config["revision"], "model_dir": str(local),
                "run_dir": str(src.run_dir) if src.run_dir is not None else None, "model_type": model_type,
                "manifest_verified": manifest is not None, "weights_sha256": weights_digest(local)}
        from plasticity.files import write_json

        write_json(out / "checkpoint.json", info)
        ctx.log(f"{node.config['name']}: {src.describe()} ({model_type}"
                + (", manifest verified)" if manifest is not None else ")"))
        return {"status": "done", "out": node.out, "metrics": {"model_type": model_type}}

    def outputs_present(self, node: Node, out: Path) -> bool:
        return (out / "checkpoint.json").is_file() and (out / "model").exists()

    def model_shape(self, node: Node) -> Any | None:
        """An existing model's shape from its config.json when it is local (a Hub model's is read when it runs)."""
        from plasticity.train import memory as mem

        root = Path(str(node.config.get("path", "")))
        for conf in (root / "config.json", RunDir(root).final / "config.json"):
            try:
                return mem.shape_of_hf_config(json.loads(conf.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return None

    def metrics(self, node: Node, label: str) -> dict[str, Any]:
        info = read_json(Path(node.out) / "checkpoint.json") or {}
        out: dict[str, Any] = {"source": info.get("source") or node.config["path"],
                               "weights_sha256": info.get("weights_sha256")}
        if info.get("kind") == "run":  # one of our runs: its pretraining numbers
            out.update(PretrainStage().metrics(Node(**dict(vars(node), out=info["run_dir"])), label))
        return out

    def review(self, rows: list[dict[str, Any]], log: Callable[[str], None]) -> None:
        """Entries whose weights are identical (a Hub repo may serve one file under several revisions)."""
        by_digest: dict[str, list[str]] = {}
        for r in rows:
            if r.get("weights_sha256") and r.get(ROW_KEY):
                names = by_digest.setdefault(r["weights_sha256"], [])
                if r[ROW_KEY] not in names:
                    names.append(r[ROW_KEY])
        for names in by_digest.values():
            if len(names) > 1:
                log(f"  warning: checkpoint entries {', '.join(names)} have identical weights (weights_sha256): "
                    "their rows measure one model")
