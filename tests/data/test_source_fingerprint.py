"""A local corpus is identified by its bytes: a copy, a re-download (new mtime) or a relative vs absolute path
keeps the tokenizer and token caches; an edit invalidates them. Before: (name, size, mtime) keyed them, so a
re-provisioned data directory silently retrained the tokenizer and re-tokenised the corpus."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from plasticity.config import DataConfig, TokenizerConfig
from plasticity.data.packed import tokenizer_dir
from plasticity.data.sources import source_fingerprint


def _corpus(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text('{"text": "one two three"}\n{"text": "four five"}\n')
    (d / "validation.jsonl").write_text('{"text": "six"}\n')
    return d


def test_copy_touch_and_path_spelling_keep_the_identity(tmp_path: Path, monkeypatch) -> None:
    a = _corpus(tmp_path / "a")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    for f in b.iterdir():
        os.utime(f, (1_000_000_000, 1_000_000_000))
    assert source_fingerprint(str(a)) == source_fingerprint(str(b))
    assert source_fingerprint(str(a / "train.jsonl")) == source_fingerprint(str(b / "train.jsonl"))
    monkeypatch.chdir(tmp_path)
    assert source_fingerprint("a/train.jsonl") == source_fingerprint(str(a / "train.jsonl"))
    tok = TokenizerConfig(name="bpe", vocab_size=300)
    assert tokenizer_dir(DataConfig(source=str(a)), tok) == tokenizer_dir(DataConfig(source=str(b)), tok)


def test_an_edit_or_a_renamed_file_changes_the_identity(tmp_path: Path) -> None:
    a = _corpus(tmp_path / "a")
    before_dir, before_file = source_fingerprint(str(a)), source_fingerprint(str(a / "train.jsonl"))
    st = (a / "train.jsonl").stat()
    time.sleep(0.05)  # past the kernel's coarse timestamp tick, so the edit's ctime differs (as any later edit's)
    (a / "train.jsonl").write_text('{"text": "one two thrEe"}\n{"text": "four five"}\n')  # same size
    os.utime(a / "train.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the bytes differ
    assert source_fingerprint(str(a / "train.jsonl")) != before_file
    assert source_fingerprint(str(a)) != before_dir
    renamed = source_fingerprint(str(a))
    (a / "validation.jsonl").rename(a / "extra.jsonl")
    assert source_fingerprint(str(a)) != renamed


def test_hub_and_packaged_specs_are_their_own_identity(tmp_path: Path) -> None:
    assert source_fingerprint("packaged:bbc_news") == "packaged:bbc_news"
    assert source_fingerprint("hf:allenai/c4@abc") == "hf:allenai/c4@abc"
    assert source_fingerprint(str(tmp_path / "missing")) != source_fingerprint(str(tmp_path / "missing2"))
