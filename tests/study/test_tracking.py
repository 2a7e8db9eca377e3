"""Experiment tracking (issue 29): TensorBoard event files readable by TensorBoard's own reader, W&B offline run
folders, one tracker run per study node grouped by the study and tagged by its axes, nothing imported unless
chosen, and node ids that do not depend on the tracker."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plasticity.config import from_dict, to_dict
from plasticity.study.plan import build_plan
from plasticity.study.spec import StudySpec, load_spec, validate_spec
from tests.conftest import REPO, run_cli, tiny_overrides

pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SPEC = {
    "name": "tracked",
    "analyze": ["norms", "rank"],
    "finetune": {"task": "demo_arith", "task_options": {"n_train": 16, "n_test": 4}, "cutoff_len": 256,
                 "optim": {"lr": 0.001}, "train": {"micro_batch_size": 8, "epochs": 1, "threads": 1, "log_every": 1}},
    "axes": {"finetune.optim.lr": [0.001]},
    "evaluate": {"k": 2, "max_questions": 3, "max_new_tokens": 8, "batch_size": 8, "stability_sequences": 8,
                 "stability_tasks": ["demo_choice"], "stability_max_questions": 4},
}


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard log dir, read by TensorBoard's event accumulator."""
    ea = EventAccumulator(str(logdir))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def texts(logdir: Path) -> dict[str, str]:
    ea = EventAccumulator(str(logdir))
    ea.Reload()
    return {tag: ea.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in ea.Tags()["tensors"]}


def assert_mirrors(metrics_jsonl: Path, series: dict[str, list[tuple[int, float]]]) -> int:
    """Every number of metrics.jsonl is in the TensorBoard series at its step (float32 as TensorBoard stores)."""
    n = 0
    for line in metrics_jsonl.read_text().splitlines():
        rec = json.loads(line)
        prefix = "train/" if "loss" in rec else "eval/"
        for k, v in rec.items():
            if k == "step" or not isinstance(v, int | float):
                continue
            got = dict(series[prefix + k])[rec["step"]]
            assert got == pytest.approx(v, rel=1e-6, abs=1e-6), (k, rec["step"])
            n += 1
    return n


def test_tracker_is_not_in_node_ids():
    """Where numbers are mirrored does not change what is computed: the same node ids with and without it."""
    spec = load_spec(None)
    plain = list(build_plan(spec).nodes)
    d = to_dict(spec)
    d["tracker"] = ["tensorboard", "wandb"]
    d["base"]["train"]["tracker"] = "wandb"
    if d.get("finetune"):
        d["finetune"]["train"]["tracker"] = "tensorboard"
    tracked = from_dict(StudySpec, d)
    validate_spec(tracked)
    plan = build_plan(tracked)
    assert list(plan.nodes) == plain
    tracked_nodes = [n for n in plan.nodes.values() if n.kind not in ("tokenizer", "data")]
    assert {n.track["group"] for n in tracked_nodes} == {spec.name}
    assert all(n.track["backends"] == ["tensorboard", "wandb"] for n in tracked_nodes)


def test_unknown_tracker_is_a_one_line_error(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(dict(SPEC, out_dir=str(tmp_path), tracker="mlflow",
                                     checkpoints={"a": {"path": str(tmp_path)}})))
    r = run_cli("study", str(p), "--dry-run")
    assert r.returncode == 2 and "tracker: unknown tracker 'mlflow'" in r.stderr, r.stderr[-800:]
    r = run_cli("pretrain", *tiny_overrides(tmp_path / "run", **{"train.tracker": "tensorbord"}))
    assert r.returncode == 2 and "train.tracker: unknown tracker 'tensorbord'" in r.stderr, r.stderr[-800:]


def test_nothing_is_imported_unless_chosen():
    code = ("import sys; from plasticity.tracking import open_run; import plasticity.train.run_lifecycle, "
            "plasticity.study.run_study; assert open_run([], '.', 'pretrain', {}) is None; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'wandb')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_pretrain_mirrors_metrics_jsonl_into_tensorboard(tmp_path):
    run = tmp_path / "run"
    r = run_cli("pretrain", *tiny_overrides(run, **{"train.tracker": "tensorboard", "train.max_steps": 10}))
    assert r.returncode == 0, r.stderr[-2000:]
    series = scalars(run / "tensorboard")
    assert assert_mirrors(run / "metrics.jsonl", series) >= 10
    summary = json.loads((run / "summary.json").read_text())
    assert series["summary/final_val_loss"][0][1] == pytest.approx(summary["final_val_loss"], rel=1e-6)
    assert "optim" in texts(run / "tensorboard")["config/text_summary"]


@pytest.fixture(scope="module")
def tracked_study(tiny_run, tmp_path_factory) -> dict[str, dict]:
    """A study over a checkpoint with both trackers (W&B offline): {node kind: {out, id, track}}."""
    tmp = tmp_path_factory.mktemp("tracked")
    trackers = ["tensorboard"] + (["wandb"] if importlib.util.find_spec("wandb") else [])
    spec = tmp / "study.yaml"
    spec.write_text(yaml.safe_dump(dict(SPEC, out_dir=str(tmp / "out"), tracker=trackers,
                                        checkpoints={"tiny": {"path": str(tiny_run)}})))
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp),
           "WANDB_CONFIG_DIR": str(tmp / "wandb-config"), "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
           "WANDB_DATA_DIR": str(tmp / "wandb-data")}
    r = run_cli("study", str(spec), "--workers", "1", "--no-report", env=env)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    plan = build_plan(load_spec(spec))
    return {n.kind: {"out": Path(n.out), "id": n.id, "track": n.track} for n in plan.nodes.values()}


def test_study_logs_each_node_to_tensorboard(tracked_study):
    """A study over a checkpoint: the fine-tuning node's steps, the analysis and evaluation numbers, each in its
    node's own event files, with the study name and the axis values."""
    nodes = tracked_study
    ft = nodes["finetune"]["out"]
    assert assert_mirrors(ft / "metrics.jsonl", scalars(ft / "tensorboard")) >= 4
    run_text = json.loads(texts(ft / "tensorboard")["run/text_summary"].replace("\n    ", "\n"))
    assert run_text["group"] == "tracked" and run_text["axes"] == {"checkpoint": "tiny", "finetune.optim.lr": 0.001,
                                                                  "task": "demo_arith"}
    ana = scalars(nodes["analyze"]["out"] / "tensorboard")
    norms = json.loads((nodes["analyze"]["out"] / "norms.json").read_text())
    assert ana["summary/weight_norm"][0][1] == pytest.approx(norms["total_norm"], rel=1e-6)
    rank = json.loads((nodes["analyze"]["out"] / "rank.json").read_text())
    assert [s for s, _ in ana["rank/qk_fraction"]] == [c["step"] for c in rank["checkpoints"]]
    ev = scalars(nodes["evaluate"]["out"] / "tensorboard")
    assert "summary/demo_arith/pass@2" in ev and "summary/stability" in ev
    assert not (nodes["checkpoint"]["out"] / "tensorboard").exists()  # a link to a model: nothing to log


def test_study_logs_each_node_to_wandb_offline(tracked_study):
    pytest.importorskip("wandb", reason="wandb is in the dev extra")
    for kind in ("finetune", "analyze", "evaluate"):
        node = tracked_study[kind]
        runs = list((node["out"] / "wandb").glob(f"offline-run-*-{node['id']}"))
        assert len(runs) == 1, (kind, list((node["out"] / "wandb").iterdir()))
        data = (runs[0] / f"run-{node['id']}.wandb").read_bytes()
        assert b"tracked" in data and node["id"].encode() in data  # the group and the run id
        if kind == "finetune":
            assert b"train/loss" in data and b"trainer/step" in data
        if kind == "analyze":
            assert b"rank/qk_fraction" in data and b"summary/weight_norm" in data
        if kind == "evaluate":
            assert b"summary/demo_arith/pass@2" in data


def test_a_resumed_run_drops_the_events_past_its_checkpoint(tmp_path):
    """Records written after the checkpoint a run resumes from (metrics.jsonl drops them) leave TensorBoard too."""
    from plasticity.tracking import open_run

    first = open_run(["tensorboard"], tmp_path, "pretrain", {})
    for step in range(1, 11):
        first.log_record({"step": step, "loss": float(step)})
    first.close()
    resumed = open_run(["tensorboard"], tmp_path, "pretrain", {}, start_step=5)
    for step in range(6, 9):
        resumed.log_record({"step": step, "loss": 100.0 + step})
    resumed.close()
    assert scalars(tmp_path / "tensorboard")["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0),
                                                               (6, 106.0), (7, 107.0), (8, 108.0)]


class Recording:
    """A third backend in a few lines: what the `Tracker` protocol asks for."""

    calls: list = []

    def __init__(self, run):
        Recording.calls.append(("init", run.name, run.job_type))

    def log(self, metrics, step):
        Recording.calls.append(("log", step, metrics))

    def summary(self, metrics):
        Recording.calls.append(("summary", metrics))

    def close(self):
        Recording.calls.append(("close",))


class Broken(Recording):
    def log(self, metrics, step):
        raise OSError("disk full")


def test_a_backend_is_one_small_class_and_a_failing_one_never_stops_the_run(monkeypatch, tmp_path):
    from plasticity import tracking

    monkeypatch.setitem(tracking.BACKENDS, "recording", (f"{__name__}:Recording", "pytest"))
    monkeypatch.setitem(tracking.BACKENDS, "broken", (f"{__name__}:Broken", "pytest"))
    Recording.calls = []
    warnings: list[str] = []
    t = tracking.open_run(["recording", "broken"], tmp_path / "run", "pretrain", {"a": 1}, warn=warnings.append)
    t.log_record({"step": 1, "tokens": 64, "loss": 2.5, "lr": 0.1})
    t.log_record({"step": 1, "tokens": 64, "val_loss": 2.75})
    t.log_record({"step": 2, "tokens": 128, "loss": 2.0, "lr": 0.1})
    t.summary({"status": "completed", "final_val_loss": 2.5, "skipped_batches": 0, "ok": True})
    t.close()
    logged = [c for c in Recording.calls if c[0] == "log"]
    assert Recording.calls[0] == ("init", "run", "pretrain") and Recording.calls[-1] == ("close",)
    assert len(logged) == 3  # the recording backend saw every record; the broken one was dropped after its first
    assert logged[1] == ("log", 1, {"eval/tokens": 64.0, "eval/val_loss": 2.75})
    assert ("summary", {"final_val_loss": 2.5, "skipped_batches": 0.0}) in Recording.calls  # numbers only
    assert len(warnings) == 1 and "tracker broken failed (OSError: disk full)" in warnings[0]
