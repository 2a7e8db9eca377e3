"""Typed stage configs (issue 14): the study's sections are the commands' config dataclasses, which hold every
evaluate / analyze default once and check it for the CLI, the run functions and the study spec alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plasticity.config import AnalyzeConfig, EvaluateConfig, FinetuneConfig, PretrainConfig, from_dict
from plasticity.errors import ConfigError
from plasticity.study.plan import build_plan
from plasticity.study.spec import StudySpec, load_spec, validate_spec
from tests.conftest import run_cli

SRC = Path(__file__).resolve().parents[2] / "src"
BASE = {"model": {"preset": "llama2-tiny"}, "tokenizer": {"vocab_size": 512},
        "data": {"source": "packaged:bbc_news", "seq_len": 32}, "train": {"micro_batch_size": 4, "max_steps": 20}}


def spec(**kw) -> StudySpec:
    s = from_dict(StudySpec, dict({"name": "t", "out_dir": "/tmp/x", "base": BASE}, **kw))
    validate_spec(s)
    return s


def test_study_sections_are_the_commands_config_dataclasses():
    s = load_spec(None)
    assert isinstance(s.base, PretrainConfig) and isinstance(s.finetune, FinetuneConfig)
    assert isinstance(s.evaluate, EvaluateConfig) and isinstance(s.analyze, AnalyzeConfig)
    assert s.evaluate.k == 4 and s.evaluate.temperature == EvaluateConfig.temperature  # written / defaulted
    assert s.analyze.what == ["probes", "rank", "gap", "norms"]


def test_each_evaluate_default_is_written_once_in_src():
    hits = {pat: [str(p) for p in SRC.rglob("*.py") if re.search(pat, p.read_text())]
            for pat in (r"\bk: int = 16\b", r"\bmax_new_tokens: int = 256\b", r"\bn_probe: int = 400\b",
                        r"\brank_threshold: float = 0\.95\b")}
    assert all(len(v) == 1 and v[0].endswith("config.py") for v in hits.values()), hits


def test_analyze_section_list_or_mapping_and_its_identity():
    short = build_plan(spec(analyze=["rank", "norms"]))
    full = build_plan(spec(analyze={"what": ["norms", "rank"], "n_probe": 400, "rank_threshold": 0.95}))
    assert [n for n in short.nodes if n.startswith("analyze")] == [n for n in full.nodes if n.startswith("analyze")]
    other = build_plan(spec(analyze={"what": ["norms", "rank"], "rank_threshold": 0.9}))
    ana = [n for n in other.nodes.values() if n.kind == "analyze"][0]
    assert ana.id not in short.nodes and ana.config["options"] == {"rank_threshold": 0.9}
    assert set(other.nodes) - {ana.id} == set(short.nodes) - {n for n in short.nodes if n.startswith("analyze")}


@pytest.mark.parametrize("kw,key", [
    ({"analyze": {"what": ["norms"], "n_probe": 5}}, "analyze.n_probe"),
    ({"analyze": {"what": ["norms"], "rank_treshold": 0.9}}, "analyze.rank_treshold"),
    ({"finetune": {"task": "demo_arith"}, "evaluate": {"max_new_tokens": 0}}, "evaluate.max_new_tokens"),
    ({"finetune": {"task": "demo_arith"}, "evaluate": {"data_source": "web"}}, "evaluate.data_source"),
    ({"finetune": {"task": "demo_arith", "init_from": "/x"}}, "finetune.init_from"),
])
def test_typed_sections_name_the_bad_key(kw, key):
    with pytest.raises(ConfigError) as e:
        spec(**kw)
    assert key in str(e.value), str(e.value)


@pytest.mark.parametrize("argv,words", [
    (["evaluate", "org/model", "--task", "demo_arith", "--out", "o", "--k", "0"], "k: must be >= 1"),
    (["analyze", "nowhere", "--n-probe", "5"], "n_probe: must be >= 10"),
])
def test_cli_options_are_checked_by_the_dataclass(argv, words, tmp_path):
    r = run_cli(*[str(tmp_path / a) if a in ("o", "nowhere") else a for a in argv])
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
