"""`plasticity bench` runs every section end to end (toy sizes) and reports a table and one JSON record."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_bench_tiny_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("bench", "--tiny", "--threads", "1", "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert json.loads(r.stdout.strip().splitlines()[-1]) == rec  # the JSON line is the last line of stdout
    for key in ("cpu", "kind", "flags", "threads", "allocator", "torch", "transformers", "load_start", "load_end"):
        assert key in rec, key
    assert rec["threads"] == 1 and rec["mode"] == "tiny"
    assert rec["gemm_gflops"]["fp32"] > 0 and rec["gemm_gflops"]["bf16"] > 0
    (train,) = rec["train"]
    assert train["hf_eager_fp32"]["tok_per_s"] > 0 and train["ours"]["speedup"] > 0
    for key in ("bs16", f"bs{rec['sampler']['prompts'] * rec['sampler']['k']}"):
        assert rec["sampler"][key]["generate"] > 0 and rec["sampler"][key]["speedup"] > 0
    assert rec["cloze"]["requests_per_s"] > 0 and rec["analysis"]["seconds"] > 0
    assert "train llama2-tiny" in r.stdout and "GEMM peak fp32" in r.stdout
    assert "FutureWarning" not in r.stderr and "deprecated" not in r.stderr  # sampler uses the current cache API
