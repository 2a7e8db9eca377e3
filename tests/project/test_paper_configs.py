"""The paper configs (configs/paper/*.yaml) hold the values of the paper's Tables 3-6, App. C.4 and App. E, so they
cannot drift. The expected values are transcribed from the paper, not read from the configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticity.config import PretrainConfig, from_dict
from plasticity.study.plan import build_plan
from plasticity.study.spec import load_spec, stage_config

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper"

# Table 3 (weight decays), Tables 4/5 (pretraining), Table 6 (fine-tuning lr by model size)
LLAMA_WD = [0.0, 0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 1.5, 3.0, 10.0]
PRETRAIN = {  # config file: (preset, global batch, seq len, lr, min_lr, schedule, tpp, weight decays of Table 3)
    "llama2-0.5b-20tpp.yaml": ("llama2-0.5b", 512, 2048, 2.5e-4, 2.5e-5, "cosine", 20, LLAMA_WD),
    "llama2-1b-20tpp.yaml": ("llama2-1b", 512, 2048, 2.0e-4, 2.0e-5, "cosine", 20, LLAMA_WD),
    "llama2-4b-20tpp.yaml": ("llama2-4b", 1024, 2048, 1.5e-4, 1.5e-5, "cosine", 20, [0.0, 0.1, 1.0]),
    "olmo2-1b-20tpp.yaml": ("olmo2-1b", 512, 4096, 4.0e-4, 4.0e-5, "cosine", 20,
                            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    "olmo2-1b-140tpp-wsd.yaml": ("olmo2-1b", 512, 4096, 4.0e-4, 0.0, "wsd", 140, [0.0, 0.1, 0.3, 1.0]),
}
FT_LR = {"llama2-0.5b": 1.0e-5, "llama2-1b": 1.0e-5, "olmo2-1b": 1.0e-5, "llama2-4b": 7.5e-6}  # Table 6
STUDIES = {  # study file: (its pretraining config, weight decays swept)
    "study-llama2-0.5b-20tpp.yaml": ("llama2-0.5b-20tpp.yaml", LLAMA_WD),
    "study-llama2-1b-20tpp.yaml": ("llama2-1b-20tpp.yaml", LLAMA_WD),
    "study-llama2-4b-20tpp.yaml": ("llama2-4b-20tpp.yaml", [0.0, 0.1, 1.0]),
    "study-olmo2-1b-20tpp.yaml": ("olmo2-1b-20tpp.yaml", [0.0, 0.1, 0.3, 0.6, 1.0]),  # the five of App. C.1
    "study-olmo2-1b-140tpp-wsd.yaml": ("olmo2-1b-140tpp-wsd.yaml", [0.0, 0.1, 0.3, 1.0]),
    "study-olmo2-1b-20tpp-ft-sweep.yaml": ("olmo2-1b-20tpp.yaml", [0.1, 0.3, 0.6, 1.0]),  # App. E.2
    "study-olmo2-1b-20tpp-pt-sweep.yaml": ("olmo2-1b-20tpp.yaml", [0.1, 0.6, 1.0]),  # App. E.1
}
COT = ["metamathqa", "simplescaling", "mmlu_pro_cot", "medmcqa", "pubmedqa", "race"]  # Table 7
CLOZE = ["hellaswag", "winogrande", "piqa", "arc_easy", "arc_challenge"]
ORM = "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"  # Sec. 3
HARM_JUDGE = "safepaca/absolute-harmfulness-predictor-redteam-osst"  # Bianchi et al. (2024), App. C.4
SAFETY_K = [300, 500, 1000, 2000]  # App. C.4


def test_every_paper_config_is_checked():
    assert sorted(p.name for p in PAPER.glob("*.yaml")) == sorted([*PRETRAIN, *STUDIES])


@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_paper_configs_pretraining_tables_3_to_5(name):
    from plasticity.config import read_yaml

    cfg = from_dict(PretrainConfig, read_yaml(PAPER / name))
    preset, batch, seq, lr, min_lr, kind, tpp, _ = PRETRAIN[name]
    assert cfg.model.preset == preset
    assert cfg.train.micro_batch_size * cfg.train.grad_accum == batch
    assert cfg.data.seq_len == seq
    assert (cfg.optim.lr, cfg.optim.min_lr) == pytest.approx((lr, min_lr))
    assert list(cfg.optim.betas) == [0.9, 0.95] and cfg.optim.grad_clip == 1.0
    assert cfg.schedule.kind == kind and cfg.schedule.warmup_fraction == 0.1
    assert cfg.train.tpp == tpp


# Table 4/5 "epoch 1": FineWeb-Edu subsets (GPT-2 tokens, dataset card) big enough for the Llama token budgets
FINEWEB_TOKENS = {"sample-10BT": 10e9, "sample-100BT": 100e9, "sample-350BT": 350e9, None: 1.3e12}


@pytest.mark.parametrize("name", [n for n in sorted(PRETRAIN) if n.startswith("llama2")])
def test_paper_configs_fineweb_subset_holds_one_epoch(name):
    from plasticity.config import read_yaml

    cfg = from_dict(PretrainConfig, read_yaml(PAPER / name))
    assert cfg.data.source == "hf:HuggingFaceFW/fineweb-edu"
    budget = {"llama2-0.5b": 10e9, "llama2-1b": 20e9, "llama2-4b": 80e9}[cfg.model.preset]  # Table 2
    # a margin of 1.1x for the Llama-2 tokenizer's count against the card's GPT-2 count
    assert FINEWEB_TOKENS[cfg.data.hf_config] >= 1.1 * budget, cfg.data.hf_config


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_paper_configs_studies_table_6_and_evaluation(name):
    spec = load_spec(PAPER / name)
    base_name, wds = STUDIES[name]
    assert Path(spec.base_config).name == base_name
    assert spec.axes["optim.weight_decay"] == wds
    assert set(wds) <= set(PRETRAIN[base_name][7])  # a subset of Table 3's values for that model
    pcfg = stage_config(spec, "pretrain", {})
    _, _, _, lr, min_lr, kind, tpp, _ = PRETRAIN[base_name]
    assert (pcfg.optim.lr, pcfg.optim.min_lr, pcfg.schedule.kind, pcfg.train.tpp) == (lr, min_lr, kind, tpp)
    ft = stage_config(spec, "finetune", {})
    assert ft.cutoff_len == 2048 and ft.train.epochs == 3
    assert ft.schedule.kind == "cosine" and ft.schedule.warmup_fraction == 0.1
    if "ft-sweep" in name:  # App. E: lr x wd x batch size
        assert spec.axes["finetune.optim.lr"] == [1.0e-5, 3.0e-5, 6.0e-5]
        assert spec.axes["finetune.optim.weight_decay"] == [0.0, 0.1, 1.0]
        assert [g * ft.train.micro_batch_size for g in spec.axes["finetune.train.grad_accum"]] == [32, 64, 128]
        assert spec.tasks == ["metamathqa", "simplescaling"]
    elif "pt-sweep" in name:  # App. E.1: pretraining lr x wd, fine-tuned on the six CoT tasks
        assert spec.axes["optim.lr"] == [2.0e-4, 4.0e-4, 8.0e-4]
        assert ft.optim.lr == 1.0e-5 and ft.train.micro_batch_size * ft.train.grad_accum == 64
        assert spec.tasks == COT
    else:
        assert ft.optim.lr == FT_LR[pcfg.model.preset]
        assert ft.train.micro_batch_size * ft.train.grad_accum == 64
        assert spec.tasks == [*COT, *CLOZE, "safety"]  # every model group on all twelve tasks (Figs 8, 11-16)
        # the paper fine-tunes fully trained models only (`finetune_from` is ours)
        assert not spec.finetune_from and "finetune_from" not in spec.axes
        assert spec.analyze is not None and spec.analyze.probe_sets == ["sst2", "ag_news"]  # Sec. 5.1, App. F.1
    ev = stage_config(spec, "evaluate", {})
    assert (ev.k, ev.temperature, ev.greedy_repetition_penalty) == (16, 1.0, 1.0)
    assert ev.reward_model == ORM and ev.judge == HARM_JUDGE
    assert sorted(ev.stability_tasks) == sorted(CLOZE)
    if "safety" in spec.tasks:
        assert spec.task_axes == {"safety": {"k": SAFETY_K}}
        plan = build_plan(spec)
        labels = {t for r in plan.rows for t, _ in plan.row_nodes(r, "finetune")}
        assert {f"safety[k={k}]" for k in SAFETY_K} <= labels
