"""Study spec validation and planning (no training): axes over every stage, node identity, estimates."""

from __future__ import annotations

import pytest

from plasticity.config import from_dict
from plasticity.errors import ConfigError
from plasticity.study.plan import build_plan
from plasticity.study.spec import StudySpec, validate_spec

BASE = {
    "model": {"preset": "llama2-tiny"},
    "tokenizer": {"vocab_size": 512},
    "data": {"source": "packaged:bbc_news", "seq_len": 32},
    "train": {"micro_batch_size": 4, "max_steps": 20},
}
FT = {"task": "demo_arith", "task_options": {"n_train": 32, "n_test": 8}}


def spec(**kw) -> StudySpec:
    s = from_dict(StudySpec, dict({"name": "t", "out_dir": "/tmp/x", "base": BASE}, **kw))
    validate_spec(s)
    return s


def kinds(plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in plan.nodes.values():
        out[n.kind] = out.get(n.kind, 0) + 1
    return out


def test_axes_over_every_stage_and_checkpoint_fraction():
    s = spec(axes={"optim.weight_decay": [0.0, 0.1], "finetune.optim.lr": [1e-4, 1e-3]}, seeds=[0, 1],
             tasks=["demo_arith", "demo_choice"], finetune_from=[0.25, 1.0], analyze=["norms"], finetune=FT,
             evaluate={"k": 2})
    plan = build_plan(s)
    # 2 wd x 2 seeds pretraining runs; fine-tuning per (run, ft lr, fraction, task); tasks share a row
    assert kinds(plan) == {"tokenizer": 1, "data": 1, "pretrain": 4, "analyze": 4, "finetune": 32, "evaluate": 32}
    assert len(plan.rows) == 16 and all(len(plan.row_nodes(r, "finetune")) == 2 for r in plan.rows)
    for n in plan.nodes.values():
        if n.kind == "pretrain":
            assert 0.25 in n.config["train"]["checkpoint_fractions"]  # kept for fine-tuning from 25%
            assert n.est_tokens == 20 * 4 * 32 and n.est_flops > 0
        assert all(d in plan.nodes and list(plan.nodes).index(d) < list(plan.nodes).index(n.id) for d in n.deps)
    assert set(plan.rows[0].axes) == {"optim.weight_decay", "finetune.optim.lr", "train.seed", "finetune_from"}


def test_node_ids_change_only_downstream_of_a_changed_key():
    a = build_plan(spec(axes={"optim.weight_decay": [0.0, 1.0]}, analyze=["norms"], finetune=FT, evaluate={"k": 2}))
    b = build_plan(spec(axes={"optim.weight_decay": [0.0, 1.0]}, analyze=["norms"],
                        finetune=dict(FT, optim={"lr": 3e-4}), evaluate={"k": 2}))
    same = set(a.nodes) & set(b.nodes)
    assert {a.nodes[i].kind for i in same} == {"tokenizer", "data", "pretrain", "analyze"}
    assert {a.nodes[i].kind for i in set(a.nodes) - same} == {"finetune", "evaluate"}
    c = build_plan(spec(axes={"optim.weight_decay": [0.0, 1.0]}, analyze=["norms"], finetune=FT, evaluate={"k": 4}))
    assert {a.nodes[i].kind for i in set(a.nodes) - set(c.nodes)} == {"evaluate"}
    d = build_plan(spec(axes={"optim.weight_decay": [0.0, 1.0]}, analyze=["norms"], finetune=FT, evaluate={"k": 2},
                        base=dict(BASE, train=dict(BASE["train"], threads=1))))
    assert set(d.nodes) == set(a.nodes)  # thread count is how fast, not what
    pre = next(i for i in a.nodes if i.startswith("pretrain-"))
    down = a.dependents(pre)
    assert {i.split("-")[0] for i in down} == {"analyze", "finetune", "evaluate"} and len(down) == 3


@pytest.mark.parametrize("kw, key", [
    ({"axes": {"optim.weight_decay": [-1.0]}}, "axes.optim.weight_decay"),
    ({"axes": {"optim.weight_decay": []}}, "axes.optim.weight_decay"),
    ({"axes": {"optim.wieght_decay": [0.1]}}, "axes.optim.wieght_decay"),
    ({"axes": {"finetune.optim.lr": [1e-4]}}, "axes.finetune.optim.lr"),
    ({"finetune_from": [1.5], "finetune": FT}, "axes.finetune_from"),
    ({"analyze": ["probe"]}, "analyze"),
    ({"evaluate": {"k": 2}}, "evaluate"),
    ({"finetune": dict(FT, init_from="x")}, "init_from"),
    ({"finetune": FT, "evaluate": {"kk": 2}}, "evaluate.kk"),
    ({"executor": "slurm"}, "executor"),
    ({"seeds": [0], "axes": {"train.seed": [1]}}, "train.seed"),
])
def test_bad_specs_name_the_key(kw, key):
    with pytest.raises(ConfigError) as e:
        spec(**kw)
    assert key in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
