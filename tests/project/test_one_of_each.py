"""One of each (issue #14): one ClozeItem, one JSONL reader, one hash-to-fraction helper, one bootstrap, one
count_params; each public name is defined once in the package."""

from __future__ import annotations

import ast
import hashlib
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from plasticity.files import BadLine, iter_jsonl, read_jsonl
from plasticity.hashing import hash_fraction
from plasticity.models import PRESETS, build_model, count_params

SRC = Path(__file__).resolve().parents[2] / "src" / "plasticity"
# public names that several modules define on purpose: each command module's `register(app)`, entry points, and
# the stages that are both a CLI command (cli.py) and a Python entry point (api.py, which the command mirrors)
MANY = {"register", "main", "pretrain", "finetune"}


def test_each_public_name_is_defined_once():
    where: dict[str, list[str]] = defaultdict(list)
    for f in sorted(SRC.rglob("*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(str(f.relative_to(SRC)))
    twice = {name: files for name, files in where.items() if len(files) > 1 and name not in MANY}
    assert twice == {}


def test_the_shared_helpers_are_the_ones_used():
    from plasticity.analysis import stats
    from plasticity.evaluate import loglikelihood as cloze
    from plasticity.evaluate import metrics
    from plasticity.resampling import bootstrap_ci
    from plasticity.tasks.base import ClozeItem

    assert cloze.ClozeItem is ClozeItem and metrics.bootstrap_ci is bootstrap_ci
    assert stats.bootstrap_ci is bootstrap_ci


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("tied", [False, True])
def test_count_params_of_a_shape_matches_the_built_model(name, tied):
    shape = replace(PRESETS[name], vocab_size=PRESETS[name].vocab_size or 4096, tie_embeddings=tied)
    assert count_params(shape) == count_params(build_model(shape, device="meta"))


def test_hash_fraction_keeps_every_split_where_it_was():
    """Task partitions (64 bits) and the pretraining-data / probe splits (32 bits, /(2**32-1)) are unchanged."""
    for key in ["", "a", "Winogrande row 17", "ü\u2028" * 50, "x" * 5000]:
        d = hashlib.sha256(f"3\0{key}".encode()).digest()
        assert hash_fraction(key, 3) == int.from_bytes(d[:8], "big") / 2**64
        assert hash_fraction(key, bits=32) == int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    assert hash_fraction("a", 3) != hash_fraction("a", 4)


def test_iter_jsonl_and_read_jsonl(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\n  \n\xff\xfe\n{not json\n[1, 2]\n{"a": 2}\r\n')
    got = list(iter_jsonl(p))
    assert [n for n, _ in got] == [1, 4, 5, 6, 7]
    assert got[0][1] == {"a": 1} and got[3][1] == [1, 2] and got[4][1] == {"a": 2}
    assert [v.reason for _, v in got if isinstance(v, BadLine)] == ["not UTF-8", "not JSON"]
    assert list(iter_jsonl(p, errors="replace"))[1][1].reason == "not JSON"  # \xff\xfe decodes, is no JSON
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')  # torn by a kill mid-write
    assert read_jsonl(log) == [{"step": 1}]
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')  # a bad line before the end is corruption
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(log)
