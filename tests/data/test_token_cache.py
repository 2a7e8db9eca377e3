"""The sharded token cache (issue 25): the same token stream as the single-file cache it replaced, whatever the
number of workers or shards; long documents tokenized in pieces without changing their tokens; the loader reads
shards as one stream; Hub sources are pinned to a commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plasticity.config import DataConfig, TokenizerConfig
from plasticity.data import pieces, prepare, shards
from plasticity.data.packed import (
    PackedSequences,
    _is_val,
    prepare_data,
    prepare_tokenizer,
    prepare_tokens,
    training_documents,
)
from plasticity.data.sources import iter_documents
from plasticity.tokenizer import load_tokenizer


def reference_streams(data: DataConfig, tok) -> dict[str, np.ndarray]:
    """The pre-issue-25 cache: every document read into a list, hash split, one file per split."""
    docs = list(iter_documents(data.source, data.text_field, limit=data.max_documents))
    train = [d for d in docs if not _is_val(d, data.val_fraction)]
    val = [d for d in docs if _is_val(d, data.val_fraction)]
    if not val:
        train, val = docs[:-1], docs[-1:]
    out = {}
    for name, split in (("train", train), ("val", val)):
        ids: list[int] = []
        for e in tok.backend_tokenizer.encode_batch(split, add_special_tokens=False):
            ids += e.ids + [tok.eos_token_id]
        out[name] = np.asarray(ids)
    return out


def stream(prepared, split: str) -> np.ndarray:
    s = prepared.sequences(split, 8)
    return s.read(0, s.n_tokens)


def test_packaged_cache_is_the_old_single_file_stream(tmp_path: Path) -> None:
    """The default study's corpus (packaged, streamed) gives exactly the tokens the old cache held, so packed
    sequences and results do not change; the BPE trains on the same documents as before."""
    data = DataConfig(source="packaged:bbc_news", max_documents=120, cache_dir=str(tmp_path), num_workers=1)
    tok_cfg = TokenizerConfig(vocab_size=400, train_documents=60)
    prepared = prepare_data(data, tok_cfg, log=lambda m: None)
    ref = reference_streams(data, prepared.tokenizer())
    for split in ("train", "val"):
        assert np.array_equal(stream(prepared, split), ref[split])
    docs = list(iter_documents(data.source, limit=120))
    assert list(training_documents(data, 60)) == [d for d in docs if not _is_val(d, 0.05)][:60]
    assert prepared.meta["format"] == prepare.FORMAT and prepared.meta["shards"] == {"train": 1, "val": 1}


def _corpus(root: Path, n: int = 120) -> Path:
    from plasticity.data.sources import bbc_news_articles

    arts = [t for _, _, t in bbc_news_articles()[:n]]
    root.mkdir(parents=True)
    with open(root / "a.jsonl", "w") as f:
        for i, t in enumerate(arts[: n // 2]):
            f.write(json.dumps({"text": f"{t} ({i})"}) + "\n")
    with open(root / "b.jsonl", "w") as f:
        for t in arts[n // 2:]:
            f.write(json.dumps({"text": t, "id": 1}) + "\n")
    (root / "c.txt").write_text(" ".join(arts[:40]))  # one long document
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": arts[:30] + [None, " "], "id": list(range(32))}), root / "d.parquet",
                   row_group_size=5)
    return root


def test_local_files_in_many_shards_give_the_reference_stream(tmp_path: Path, monkeypatch) -> None:
    """Byte-range jobs over JSONL files and a text file read in safe-cut units, long documents encoded in
    pieces: the concatenated shards are the whole-corpus stream, and shard files match their checksums."""
    monkeypatch.setattr(pieces, "PIECE_CHARS", 3000)
    monkeypatch.setattr(shards, "PIECE_CHARS", 3000)
    monkeypatch.setattr(pieces, "TEXT_UNIT", 4096)
    src = _corpus(tmp_path / "corpus")
    data = DataConfig(source=str(src), cache_dir=str(tmp_path / "cache"), num_workers=1, shard_mb=0.02)
    prepared = prepare_data(data, TokenizerConfig(vocab_size=400, train_documents=50), log=lambda m: None)
    assert prepared.meta["shards"]["train"] > 5
    ref = reference_streams(data, prepared.tokenizer())
    for split in ("train", "val"):
        assert np.array_equal(stream(prepared, split), ref[split])
    for s in prepared.shards["train"] + prepared.shards["val"]:
        assert shards.sha256_file(prepared.dir / s["file"]) == s["sha256"]
        assert (prepared.dir / s["file"]).stat().st_size == 2 * s["tokens"]


def test_safe_cuts_keep_the_tokens_of_a_long_document(tmp_path: Path, monkeypatch) -> None:
    src = _corpus(tmp_path / "corpus")
    data = DataConfig(source=str(src), cache_dir=str(tmp_path / "cache"))
    tok_dir = prepare_tokenizer(data, TokenizerConfig(vocab_size=400, train_documents=50), log=lambda m: None)
    text = (src / "c.txt").read_text()
    monkeypatch.setattr(shards, "PIECE_CHARS", 500)
    enc = shards.Encoder(str(tok_dir / "tokenizer.json"))
    assert not enc.strip_continuation  # byte-level BPE: a continuation keeps its leading space
    whole = enc.tok.encode(text, add_special_tokens=False).ids
    assert enc.encode([(text, False)]) == [whole]
    cuts = pieces.safe_char_cuts(text, 500)
    assert len(cuts) > 10 and all(text[c] == " " and text[c - 1] != " " for c in cuts[1:-1])


def test_loader_reads_shards_as_one_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 500, n).astype(np.uint16) for n in (5, 17, 3, 40)]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"s{i}.bin")
        p.tofile(paths[-1])
    whole = np.concatenate(parts).astype(np.int64)
    seqs = PackedSequences(paths, 6, "uint16")
    assert len(seqs) == len(whole) // 6
    got = seqs.get(range(len(seqs))).numpy()
    assert np.array_equal(got, whole[: len(seqs) * 6].reshape(-1, 6))
    assert np.array_equal(seqs.tokens, whole)


def test_hub_source_is_streamed_at_a_pinned_commit(tmp_path: Path, monkeypatch) -> None:
    """`hf:` stays a real path: the revision is resolved to a commit once, recorded in plan.json and meta.json,
    and the documents are streamed at that commit (the network calls are replaced here)."""
    src = _corpus(tmp_path / "corpus")
    local = DataConfig(source=str(src), cache_dir=str(tmp_path / "cache"))
    tok_dir = prepare_tokenizer(local, TokenizerConfig(vocab_size=400, train_documents=50), log=lambda m: None)
    docs = [json.loads(x)["text"] for x in (src / "b.jsonl").read_text().splitlines()]
    seen = {}

    def fake_read_hub(dataset_id, text_field, config, split, revision, limit):
        seen.update(id=dataset_id, revision=revision, split=split, config=config)
        yield from docs

    monkeypatch.setattr(prepare, "resolve_hub_revision", lambda ds, rev: "c0ffee" + (rev or "main"))
    monkeypatch.setattr("plasticity.data.sources.read_hub", fake_read_hub)
    data = DataConfig(source="hf:org/corpus", hf_config="sample", hf_revision="v1", cache_dir=str(tmp_path / "cache"),
                      num_workers=1)
    prepared = prepare_tokens(data, tok_dir, log=lambda m: None)
    assert seen == {"id": "org/corpus", "revision": "c0ffeev1", "split": "train", "config": "sample"}
    assert prepared.meta["hf_revision"] == ["c0ffeev1"]
    assert json.loads((prepared.dir / "plan.json").read_text())["sources"][0]["hf_revision"] == "c0ffeev1"
    ref = reference_streams(DataConfig(source=str(src / "b.jsonl")), load_tokenizer(tok_dir))
    assert np.array_equal(stream(prepared, "train"), ref["train"])


def test_data_config_keys_that_only_change_speed_keep_node_ids() -> None:
    from plasticity.config import PretrainConfig
    from plasticity.study.stages.pretrain import PretrainStage

    a, b = PretrainConfig(), PretrainConfig()
    b.data.num_workers, b.data.shard_mb = 7, 1.5
    assert PretrainStage().identity(a) == PretrainStage().identity(b)
    assert "num_workers" not in PretrainStage().identity(a)["data"]


@pytest.mark.parametrize("source", [["a.jsonl", "b.jsonl"], "*.jsonl"])
def test_a_glob_or_a_list_of_files_is_one_source(tmp_path: Path, source, monkeypatch) -> None:
    src = _corpus(tmp_path / "corpus")
    monkeypatch.chdir(src)
    files = pieces.local_files(source)
    assert [f.name for f in files] == ["a.jsonl", "b.jsonl"]
    assert [f.name for f in pieces.local_files(str(src))] == ["a.jsonl", "b.jsonl", "c.txt", "d.parquet"]
    got = list(iter_documents(source))
    assert got == list(iter_documents(str(src / "a.jsonl"))) + list(iter_documents(str(src / "b.jsonl")))


def _prepare_in_daemon(src: str, cache: str, q) -> None:
    from plasticity.config import DataConfig, TokenizerConfig
    from plasticity.data.packed import prepare_data

    msgs: list[str] = []
    d = prepare_data(DataConfig(source=src, cache_dir=cache, num_workers=2, shard_mb=0.02),
                     TokenizerConfig(vocab_size=400, train_documents=50), log=msgs.append)
    q.put((d.meta, msgs))


@pytest.mark.slow
def test_a_study_pool_worker_prepares_with_threads_and_the_same_tokens(tmp_path: Path) -> None:
    """A study's node runs in a daemonic pool worker, which may not start processes: it tokenizes in-process
    with Rust threads, and the cache is the one `plasticity data` makes with worker processes."""
    import multiprocessing as mp

    src = _corpus(tmp_path / "corpus")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_prepare_in_daemon, args=(str(src), str(tmp_path / "a"), q), daemon=True)
    p.start()
    meta, msgs = q.get(timeout=300)
    p.join()
    assert any("tokenizer threads" in m for m in msgs)
    import shutil

    shutil.rmtree(tmp_path / "a" / "tokens")  # the same cache again, from one worker (the tokenizer is kept)
    ref = prepare_data(DataConfig(source=str(src), cache_dir=str(tmp_path / "a"), num_workers=1, shard_mb=0.02),
                       TokenizerConfig(vocab_size=400, train_documents=50), log=lambda m: None)
    assert meta == ref.meta


def test_tiny_corpus_and_separate_validation_source_keep_the_old_splits(tmp_path: Path) -> None:
    """No document hashed into validation: the last one is held out (moved out of its shard at the end, as the
    old cache did); with `data.val_source` every document of each source goes to its side."""
    src = _corpus(tmp_path / "corpus")
    f = src / "b.jsonl"
    tok_dir = prepare_tokenizer(DataConfig(source=str(src), cache_dir=str(tmp_path / "c")),
                                TokenizerConfig(vocab_size=400, train_documents=50), log=lambda m: None)
    tok = load_tokenizer(tok_dir)
    tiny = DataConfig(source=str(f), val_fraction=1e-9, cache_dir=str(tmp_path / "c"), num_workers=1, shard_mb=0.01)
    prepared = prepare_tokens(tiny, tok_dir, log=lambda m: None)
    ref = reference_streams(tiny, tok)
    assert prepared.meta["val_documents"] == 1 and prepared.meta["shards"]["train"] > 3
    for split in ("train", "val"):
        assert np.array_equal(stream(prepared, split), ref[split])
    sep = DataConfig(source=str(src / "a.jsonl"), val_source=str(f), cache_dir=str(tmp_path / "c"), num_workers=1,
                     shard_mb=0.01)
    prepared = prepare_tokens(sep, tok_dir, log=lambda m: None)
    whole = {name: reference_streams(DataConfig(source=str(p), val_fraction=1e-9), tok)
             for name, p in (("train", src / "a.jsonl"), ("val", f))}
    for split in ("train", "val"):  # the reference's tiny rule moved each file's last document: put it back
        assert np.array_equal(stream(prepared, split), np.concatenate([whole[split]["train"], whole[split]["val"]]))


def test_streamed_chunks_on_two_workers_give_the_reference_stream(tmp_path: Path) -> None:
    """A streamed source (here capped by max_documents) in many chunks tokenized by a pool of 2 workers."""
    data = DataConfig(source="packaged:bbc_news", max_documents=100, cache_dir=str(tmp_path), num_workers=2,
                      shard_mb=0.02)
    prepared = prepare_data(data, TokenizerConfig(vocab_size=400, train_documents=60), log=lambda m: None)
    assert prepared.meta["shards"]["train"] >= 4
    ref = reference_streams(data, prepared.tokenizer())
    for split in ("train", "val"):
        assert np.array_equal(stream(prepared, split), ref[split])
