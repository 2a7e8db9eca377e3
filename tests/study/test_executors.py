"""Study executors: `--executor ray` against a real local Ray instance (started by the CLI); torchrun nodes."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from tests.conftest import run_cli


def test_ray_executor_runs_the_study_and_matches_local(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'lm-plasticity[ray]')")
    spec = {
        "name": "ray", "axes": {"optim.weight_decay": [0.0, 1.0]}, "analyze": ["norms"],
        "base": {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512, "train_documents": 150},
                 "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
                 "optim": {"lr": 0.01}, "train": {"micro_batch_size": 4, "max_steps": 12, "log_every": 4}},
    }
    rows = {}
    for executor in ("ray", "local"):
        path = tmp_path / f"{executor}.yaml"
        path.write_text(yaml.safe_dump(dict(spec, out_dir=str(tmp_path / executor))))
        r = run_cli("study", str(path), "--executor", executor, "--workers", "2", "--no-report",
                    env={"RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"})
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"{executor} executor" in r.stderr and "6 to run" in r.stderr
        with open(tmp_path / executor / "ray" / "results.csv") as f:
            rows[executor] = list(csv.DictReader(f))
    assert [x["status"] for x in rows["ray"]] == ["completed", "completed"]
    assert rows["ray"] == rows["local"]  # same nodes, same numbers, whichever executor ran them


def test_study_pretrains_a_node_with_torchrun(tmp_path):
    """resources.pretrain_nproc: 2 runs each pretraining node as a 2-process torchrun job (gloo on CPU)."""
    spec = {
        "name": "ddp", "out_dir": str(tmp_path / "s"), "axes": {"optim.weight_decay": [0.1]},
        "resources": {"pretrain_nproc": 2},
        "base": {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512, "train_documents": 150},
                 "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
                 "optim": {"lr": 0.01}, "train": {"micro_batch_size": 4, "max_steps": 8, "log_every": 4}},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("study", str(path), "--workers", "1", "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = next((tmp_path / "s" / "runs").glob("pretrain-*/summary.json"))
    s = json.loads(summary.read_text())
    assert s["status"] == "completed" and s["world_size"] == 2


def test_study_resources_per_stage_keep_node_ids(tmp_path):
    """finetune/evaluate GPUs and processes go on the nodes, not into their ids."""
    from plasticity.config import from_dict
    from plasticity.study.plan import build_plan
    from plasticity.study.spec import StudySpec, validate_spec

    base = {"name": "res", "out_dir": str(tmp_path), "base": {"model": {"preset": "llama2-tiny"}},
            "tasks": ["demo_arith"], "finetune": {}, "evaluate": {"k": 2}}
    plans = []
    for res in ({}, {"gpus": 1, "finetune_gpus": 8, "evaluate_nproc": 4, "pretrain_gpus": 8}):
        spec = from_dict(StudySpec, dict(base, resources=res))
        validate_spec(spec)
        plans.append(build_plan(spec))
    assert list(plans[0].nodes) == list(plans[1].nodes)
    got = {n.kind: (n.gpus, n.nproc) for n in plans[1].nodes.values()}
    assert got == {"tokenizer": (0, 1), "data": (0, 1), "pretrain": (8, 8), "finetune": (8, 8), "evaluate": (1, 4)}
    assert {n.kind: (n.gpus, n.nproc) for n in plans[0].nodes.values()}["finetune"] == (0, 1)


def test_local_engine_gives_each_node_its_own_gpus():
    from plasticity.study.plan import Node
    from plasticity.study.scheduler import LocalEngine

    class Handle:
        def __init__(self, args):
            self.args = args

        def get(self):
            return {"status": "done"}

        def ready(self):
            return True

    class Pool:
        def apply_async(self, fn, args):
            return Handle(args)

    eng = LocalEngine.__new__(LocalEngine)  # no worker pool: only the GPU bookkeeping
    eng.slots, eng.threads, eng.free_gpus, eng.total_gpus, eng.held, eng.pool = 4, 1, [0, 1, 2], 3, {}, Pool()
    eng.lost = False

    def node(gpus: int) -> Node:
        return Node(id=f"n{gpus}", kind="finetune", deps=[], out="", config={}, label="", gpus=gpus)

    a = eng.submit(node(2), "r", "l")
    assert a.async_result.args[4] == [0, 1] and eng.fits(node(1)) and not eng.fits(node(2))
    b = eng.submit(node(1), "r", "l")
    assert b.async_result.args[4] == [2] and not eng.fits(node(1)) and eng.fits(node(0))
    eng.result(a)
    assert eng.free_gpus == [0, 1] and eng.fits(node(2))
    assert not eng.fits(node(16))
    eng.result(b)
    assert eng.fits(node(16))  # more than the machine has: all of its GPUs, once they are all free
    assert eng.submit(node(0), "r", "l").async_result.args[4] is None


@pytest.mark.slow
def test_study_finetunes_and_evaluates_nodes_with_torchrun(tmp_path):
    """resources.finetune_nproc / evaluate_nproc: 2 run those nodes as 2-process torchrun jobs (gloo on CPU);
    the evaluation's files equal those of a 1-process study of the same spec."""
    spec = {
        "name": "multi", "axes": {"optim.weight_decay": [0.1]}, "tasks": ["demo_arith"],
        "base": {"model": {"preset": "llama2-tiny", "max_seq_len": 256},
                 "tokenizer": {"vocab_size": 512, "train_documents": 150},
                 "data": {"source": "packaged:bbc_news", "max_documents": 150, "seq_len": 32},
                 "optim": {"lr": 0.01}, "train": {"micro_batch_size": 4, "max_steps": 8, "log_every": 4}},
        "finetune": {"task_options": {"n_train": 32, "n_test": 8}, "cutoff_len": 256,
                     "train": {"micro_batch_size": 4, "grad_accum": 2, "max_steps": 3, "precision": "fp32"}},
        "evaluate": {"k": 2, "max_new_tokens": 8, "max_questions": 6, "batch_size": 2,
                     "stability_tasks": ["demo_choice"], "stability_max_questions": 4, "stability_sequences": 8},
    }
    outs = {}
    for name, res in (("one", {}), ("two", {"finetune_nproc": 2, "evaluate_nproc": 2})):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(dict(spec, out_dir=str(tmp_path / name), resources=res)))
        r = run_cli("study", str(path), "--workers", "1", "--no-report")
        assert r.returncode == 0, r.stderr[-3000:]
        outs[name] = tmp_path / name / "runs"
    ft = json.loads(next(outs["two"].glob("finetune-*/summary.json")).read_text())
    assert ft["status"] == "completed" and (ft["world_size"], ft["parallel"]) == (2, "ddp")
    ev = [next(p for p in outs[n].glob("evaluate-*") if p.is_dir()) for n in ("one", "two")]
    assert ev[0].name == ev[1].name  # the same node
    for f in ("demo_arith.json", "demo_arith.samples.jsonl"):
        a, b = (json.loads((d / f).read_text()) if f.endswith(".json") else (d / f).read_text() for d in ev)
        if f.endswith(".json"):  # the fine-tuned weights differ by float summation order (DDP): same shape of result
            assert a["n_questions"] == b["n_questions"] and set(a["metrics"]) == set(b["metrics"])
        else:
            assert len(a.splitlines()) == len(b.splitlines()) == 6 * 3
    assert (ev[1] / "stability.json").is_file()


def test_a_node_stopped_by_ctrl_c_stops_the_study(tmp_path):
    """Ctrl-C reaches the study and its workers together; if the study's own SIGINT is lost (it was, once, on a
    loaded CI machine: the node stopped, the study went on to the next nodes and exited 1), a node result
    saying it stopped on SIGINT stops the study all the same: no further node starts, and KeyboardInterrupt
    reaches the CLI (one line `interrupted`, exit 130). A node stopped by another signal does not."""
    import signal
    from types import SimpleNamespace

    from plasticity.study.plan import Node
    from plasticity.study.scheduler import execute_plan

    class OneSlot:
        slots = 1

        def __init__(self, signum):
            self.signum, self.submitted, self.closed = signum, [], False

        def fits(self, node):
            return True

        def submit(self, node, root, log_path):
            self.submitted.append(node.id)
            return node.id

        def finished(self, handles, timeout):
            return list(handles)

        def result(self, handle):
            if handle == "pretrain-a":
                return {"status": "interrupted", "reason": "interrupted by signal", "signal": self.signum}
            return {"status": "done"}

        def close(self):
            self.closed = True

    nodes = {nid: Node(id=nid, kind="pretrain", deps=[], out=str(tmp_path / nid), config={}, label=nid)
             for nid in ("pretrain-a", "pretrain-b")}
    plan = SimpleNamespace(root=tmp_path, nodes=nodes)
    engine = OneSlot(int(signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        execute_plan(plan, list(nodes), set(), engine, log=lambda m: None)
    assert engine.submitted == ["pretrain-a"] and engine.closed
    engine = OneSlot(int(signal.SIGTERM))  # e.g. the worker alone was preempted: the other nodes go on
    results = execute_plan(plan, list(nodes), set(), engine, log=lambda m: None)
    assert engine.submitted == ["pretrain-a", "pretrain-b"] and results["pretrain-b"]["status"] == "done"
