"""A study over existing checkpoints (issue 14): two runs made by `plasticity pretrain` (one given as its run dir,
one as its ``final/`` checkpoint dir) and a Hub entry served by the mock Hub (``PLASTICITY_HUB_MOCK``), analysed,
fine-tuned and evaluated like pretraining nodes through the real CLI; rows labelled by entry name; refusals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli

HUB_ID, HUB_REV = "example-org/tiny-llama", "step-30"
SPEC = {
    "name": "released",
    "analyze": ["norms", "rank", "gap"],
    "finetune": {"task": "demo_arith", "task_options": {"n_train": 16, "n_test": 4}, "cutoff_len": 256,
                 "optim": {"lr": 0.001}, "train": {"micro_batch_size": 8, "epochs": 1, "threads": 1}},
    "evaluate": {"k": 2, "max_questions": 3, "max_new_tokens": 8, "batch_size": 8, "stability_sequences": 8,
                 "stability_tasks": ["demo_choice"], "stability_max_questions": 4},
}


def write_spec(tmp: Path, checkpoints: dict, **extra) -> Path:
    path = tmp / f"study-{len(list(tmp.glob('study-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(dict(SPEC, out_dir=str(tmp / "studies"), checkpoints=checkpoints, **extra),
                                  sort_keys=False))  # entry order is row order
    return path


@pytest.fixture(scope="module")
def setup(wd_runs, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(spec path, mock Hub dir, env) for entries: a run dir, a final/ checkpoint dir, a Hub id at a revision."""
    tmp = tmp_path_factory.mktemp("ckpt_study")
    hub = tmp / "hub"
    shutil.copytree(wd_runs[0.0] / "final", hub / f"{HUB_ID.replace('/', '__')}@{HUB_REV}")
    spec = write_spec(tmp, {"wd0-run": {"path": str(wd_runs[0.0])},
                            "wd3-final": {"path": str(wd_runs[3.0] / "final")},
                            "hub-tiny": {"path": HUB_ID, "revision": HUB_REV}})
    return spec, hub, {"PLASTICITY_HUB_MOCK": str(hub)}


def test_dry_run_lists_checkpoint_nodes_and_nothing_pretrains(setup):
    spec, _, env = setup
    r = run_cli("status", str(spec), "--json", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    nodes = json.loads(r.stdout)
    kinds = sorted(n["kind"] for n in nodes)
    assert kinds == ["analyze"] * 3 + ["checkpoint"] * 3 + ["evaluate"] * 3 + ["finetune"] * 3
    assert {n["label"] for n in nodes if n["kind"] == "checkpoint"} == {
        "checkpoint=wd0-run", "checkpoint=wd3-final", "checkpoint=hub-tiny"}
    r = run_cli("study", str(spec), "--dry-run", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "checkpoint=hub-tiny" in r.stdout and r.stdout.count("checkpoint-") >= 3


def test_checkpoints_study_end_to_end(setup):
    spec, _, env = setup
    r = run_cli("study", str(spec), "--workers", "1", env=env)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    study = spec.parent / "studies" / "released"
    with open(study / "results.csv") as f:
        rows = {row["checkpoint"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["wd0-run", "wd3-final", "hub-tiny"]
    for name, row in rows.items():
        assert row["status"] == "completed", (name, row["reason"])
        for col in ("weight_norm", "qk_rank_frac", "demo_arith/demo_arith/pass@2", "stability"):
            assert row[col] not in ("", None), (name, col)
    assert rows["hub-tiny"]["source"] == f"{HUB_ID}@{HUB_REV}"
    # the run entry keeps its training history: pretraining numbers, the train-val gap, its upstream loss change
    assert rows["wd0-run"]["val_loss"] and rows["wd0-run"]["train_val_gap"]
    assert rows["wd0-run"]["upstream_loss_change"]
    # a bare checkpoint: what needs the training data is skipped (empty), the rest is there
    assert rows["wd3-final"]["train_val_gap"] == "" and rows["wd3-final"]["upstream_loss_change"] == ""
    gap = json.loads((study / rows["wd3-final"]["run"] / "analysis" / "gap.json").read_text())
    assert "unknown" in gap["unseen_seen_reason"]
    # same weights (the Hub stand-in is a copy of the wd=0 run's final/): same norm
    assert float(rows["hub-tiny"]["weight_norm"]) == pytest.approx(float(rows["wd0-run"]["weight_norm"]))
    assert float(rows["wd3-final"]["weight_norm"]) < float(rows["wd0-run"]["weight_norm"])  # wd 3 shrinks them
    ck = json.loads((study / rows["wd3-final"]["run"] / "checkpoint.json").read_text())
    assert ck["manifest_verified"] and ck["model_type"] == "llama" and ck["name"] == "wd3-final"
    report = (study / "report" / "index.html").read_text()
    assert all(name in report for name in rows)
    r = run_cli("study", str(spec), "--no-report", env=env)  # cached: nothing runs again
    assert r.returncode == 0 and "0 to run" in r.stderr + r.stdout


def test_non_llama_checkpoint_and_unpinned_hub_id_are_refused(setup, tmp_path):
    _, _, env = setup
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    for entry, key, words in (({"path": str(gpt2)}, "checkpoints.gpt.path", "gpt2"),
                              ({"path": HUB_ID}, "checkpoints.gpt.revision", "pin"),
                              ({"path": str(tmp_path / "nope")}, "checkpoints.gpt.path", "no such")):
        r = run_cli("study", str(write_spec(tmp_path, {"gpt": entry})), "--dry-run", env=env)
        assert r.returncode == 2, (entry, r.stdout[-500:], r.stderr[-1000:])
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and key in err and words in err and "Traceback" not in err, err


def test_shipped_released_models_study_validates_under_the_mock_hub(setup):
    _, hub, env = setup
    path = REPO / "configs" / "study-released-models.yaml"
    spec = yaml.safe_load(path.read_text())
    assert spec["checkpoints"] and all(e.get("revision") for e in spec["checkpoints"].values())  # pinned
    for entry in spec["checkpoints"].values():  # every Hub entry served by the mock (a tiny llama)
        shutil.copytree(hub / f"{HUB_ID.replace('/', '__')}@{HUB_REV}",
                        hub / f"{entry['path'].replace('/', '__')}@{entry['revision']}", dirs_exist_ok=True)
    r = run_cli("status", str(path), "--json", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    labels = {n["label"] for n in json.loads(r.stdout) if n["kind"] == "checkpoint"}
    assert labels == {f"checkpoint={name}" for name in spec["checkpoints"]}
