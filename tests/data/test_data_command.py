"""`plasticity data` end to end: 1 and 2 workers (and Ray) give one cache; a killed preparation resumes to a
byte-identical cache; two processes share one preparation; bad input is one line, exit 2, no cache left;
`--dry-run` runs offline on a paper config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

ARGS = ["model.preset=llama2-tiny", "tokenizer.vocab_size=400", "tokenizer.train_documents=40", "data.seq_len=32",
        "train.max_tokens=20000"]


def corpus(root: Path, n_files: int = 3, docs: int = 60) -> Path:
    from plasticity.data.sources import bbc_news_articles

    arts = [t for _, _, t in bbc_news_articles()[: n_files * docs]]
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        with open(root / f"part{k}.jsonl", "w") as f:
            for t in arts[k * docs: (k + 1) * docs]:
                f.write(json.dumps({"text": t}) + "\n")
    return root


def cache_files(cache: Path) -> dict[str, bytes]:
    """Every shard, meta.json and plan.json of the (single) token cache under `cache`."""
    (tok_dir,) = [d for d in (cache / "tokens").iterdir() if d.is_dir()]
    keep = [f for f in tok_dir.iterdir() if f.suffix == ".bin" or f.name in ("meta.json", "plan.json")]
    return {f.name: f.read_bytes() for f in keep}


def data_cmd(cache: Path, *extra: str, timeout: float = 600):
    return run_cli("data", *ARGS, *extra, env={"PLASTICITY_CACHE": str(cache)}, timeout=timeout)


def test_one_and_two_workers_make_the_same_cache(tmp_path: Path) -> None:
    src = corpus(tmp_path / "c")
    got = {}
    for w in (1, 2):
        r = data_cmd(tmp_path / f"w{w}", f"data.source={src}", "data.shard_mb=0.05", f"data.num_workers={w}")
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"({w} workers, local" in r.stderr and "epochs at this config's budget" in r.stdout
        got[w] = cache_files(tmp_path / f"w{w}")
    assert len([n for n in got[1] if n.startswith("train-")]) >= 4
    assert got[1] == got[2]


@pytest.mark.slow  # a local Ray start: ~40 s on 2 shared cores
def test_ray_executor_makes_the_same_cache(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'lm-plasticity[ray]')")
    src = corpus(tmp_path / "c")
    got = {}
    for ex in ("local", "ray"):
        r = data_cmd(tmp_path / ex, f"data.source={src}", "data.shard_mb=0.05", "data.num_workers=2",
                     "--executor", ex)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"workers, {ex}" in r.stderr
        got[ex] = cache_files(tmp_path / ex)
    assert got["ray"] == got["local"]


def _popen_data(cache: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PLASTICITY_CACHE=str(cache))
    return subprocess.Popen([sys.executable, "-m", "plasticity.cli", "data", *ARGS, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_preparation_resumes_to_a_byte_identical_cache(tmp_path: Path) -> None:
    src = corpus(tmp_path / "c", n_files=4)
    extra = (f"data.source={src}", "data.shard_mb=0.01", "data.num_workers=1")
    ref = data_cmd(tmp_path / "ref", *extra)
    assert ref.returncode == 0, ref.stderr[-2000:]
    n_jobs = len(json.loads((next((tmp_path / "ref" / "tokens").glob("*/plan.json"))).read_text())["sources"][0]
                 ["pieces"])
    assert n_jobs >= 8
    killed = tmp_path / "killed"
    p = _popen_data(killed, *extra)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            markers = list((killed / "tokens").glob("*/job-*.json")) if (killed / "tokens").exists() else []
            if len(markers) >= 2:
                break
            assert p.poll() is None, p.communicate()[1][-2000:]
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    (tok_dir,) = [d for d in (killed / "tokens").iterdir() if d.is_dir()]
    assert not (tok_dir / "meta.json").exists(), "killed too late: the preparation had finished"
    done_before = len(list(tok_dir.glob("job-*.json")))
    assert 2 <= done_before < n_jobs
    r = data_cmd(killed, *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "jobs resumed" in r.stderr
    assert cache_files(killed) == cache_files(tmp_path / "ref")
    assert not list(tok_dir.glob(".*.tmp"))


def test_two_processes_share_one_preparation(tmp_path: Path) -> None:
    src = corpus(tmp_path / "c")
    extra = (f"data.source={src}", "data.shard_mb=0.02", "data.num_workers=1")
    run_cli("data", *ARGS, *extra, "--dry-run", env={"PLASTICITY_CACHE": str(tmp_path / "x")})  # warm imports
    ps = [_popen_data(tmp_path / "cache", *extra) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], [o[1][-1000:] for o in outs]
    assert sum("tokenizing " in err for _, err in outs) == 1  # the other waited on the lock, then reused it
    assert outs[0][0].splitlines()[1] == outs[1][0].splitlines()[1]  # the same corpus line


def _bad_sources(tmp: Path) -> dict[str, str]:
    good = corpus(tmp / "good", n_files=1)
    (tmp / "empty.jsonl").write_bytes(b"")
    (tmp / "binary.jsonl").write_bytes(bytes(range(256)) * 64)
    (tmp / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 4000)
    (tmp / "one.txt").write_text("To be, or not to be, that is the question.\n" * 2000)  # one document: all val
    os.mkfifo(tmp / "fifo.jsonl")
    (tmp / "nofield.jsonl").write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(50)))
    later = tmp / "later"  # the tokenizer trains on the good file; the cache then meets a file without the field
    later.mkdir()
    (later / "a.jsonl").write_text((good / "part0.jsonl").read_text())
    (later / "b.jsonl").write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(5))
                                   + "".join(json.dumps({"text": 3}) + "\n" for i in range(5)))
    return {"empty": str(tmp / "empty.jsonl"), "binary": str(tmp / "binary.jsonl"),
            "binary-text": str(tmp / "binary.txt"), "fifo": str(tmp / "fifo.jsonl"), "device": "/dev/zero",
            "missing-field": str(tmp / "nofield.jsonl"), "missing-field-later": str(later),
            "missing": str(tmp / "nope.jsonl"), "no-match": str(tmp / "none-*.jsonl"),
            "one-text-file": str(tmp / "one.txt")}


@pytest.mark.parametrize("case", ["empty", "binary", "binary-text", "fifo", "device", "missing-field",
                                  "missing-field-later", "missing", "no-match", "one-text-file"])
def test_bad_input_is_one_line_and_leaves_no_cache(tmp_path: Path, case: str) -> None:
    source = _bad_sources(tmp_path)[case]
    cache = tmp_path / "cache"
    r = data_cmd(cache, f"data.source={source}", "data.num_workers=2", "data.shard_mb=0.001", timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith(("training", "BPE", "tokenizing",
                                                                                  "warning"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    if case == "one-text-file":  # says why, and what to do
        assert "no training documents" in lines[0] and "data.val_source" in lines[0], lines[0]
    tokens = cache / "tokens"
    assert not tokens.exists() or not [d for d in tokens.iterdir() if d.is_dir()]


def test_dry_run_of_a_paper_config_is_offline(tmp_path: Path) -> None:
    cfg = Path(__file__).resolve().parents[2] / "configs" / "paper" / "llama2-0.5b-20tpp.yaml"
    r = run_cli("data", str(cfg), "--dry-run", env={"HF_HUB_OFFLINE": "1", "PLASTICITY_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "budget: 10,018,437,120 tokens" in r.stdout
    lines = [x for x in r.stdout.splitlines() if "unknown without the Hub" in x]
    assert len(lines) == 1 and "hf:HuggingFaceFW/fineweb-edu" in lines[0]
    assert not (tmp_path / "tokens").exists()


def test_dry_run_of_a_local_corpus_reports_the_shard_plan_then_the_epochs(tmp_path: Path) -> None:
    src = corpus(tmp_path / "c")
    extra = (f"data.source={src}", "data.shard_mb=0.05", "data.num_workers=1")
    r = data_cmd(tmp_path / "cache", *extra, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["plan"]["files"] == 3 and rep["plan"]["jobs"] >= 3 and rep["prepared"] is False
    assert not (tmp_path / "cache" / "tokens").exists()
    assert data_cmd(tmp_path / "cache", *extra).returncode == 0
    rep = json.loads(data_cmd(tmp_path / "cache", *extra, "--dry-run", "--json").stdout)
    assert rep["prepared"] and 0 < rep["epochs"] and rep["corpus"]["train_tokens"] > 0
    assert rep["epochs"] == pytest.approx(rep["budget"]["tokens_trained"]
                                          / (rep["corpus"]["train_tokens"] // 32 * 32))
