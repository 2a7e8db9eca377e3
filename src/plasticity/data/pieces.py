"""A local corpus read in pieces: byte ranges of JSONL and text files, row-group ranges of parquet files.

Each shard job reads only its own pieces, in any process or on any machine that sees the files, so a corpus is
never read whole and no piece depends on another. The pieces of a file, read in order, give exactly the documents
a sequential read gives (a JSONL line belongs to the range holding its first byte). A document is never held or
tokenized whole beyond ``PIECE_CHARS``: it is cut at *safe points* (a single space between two non-space
characters, where every mainstream pre-tokenizer splits anyway), so the cut does not change its tokens, and the
cut points depend on the document alone (never on the shard size or the number of workers).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from plasticity.errors import DataError

SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
PIECE_CHARS = 1 << 20  # a longer document is tokenized in pieces of about this many characters
TEXT_UNIT = 1 << 20  # a .txt file (one document) is read in units of this many bytes
SAFE_WINDOW = 1 << 16  # how far past a nominal cut a safe point is looked for
_SPACE = frozenset(b" \t\n\r\x0b\x0c")


@dataclass(frozen=True)
class Piece:
    """``kind`` ``jsonl``/``text``: bytes [start, end) of `path`; ``parquet``: row groups [start, end).
    ``size``: the input bytes it stands for (planning and progress)."""

    path: str
    kind: str
    start: int
    end: int
    size: int

    def to_dict(self) -> dict:
        return asdict(self)


def is_pattern(source: str) -> bool:
    return any(c in source for c in "*?[")


def local_files(source: str | list[str]) -> list[Path]:
    """The files of a local source in reading order: a file, a directory (its .txt/.jsonl/.json/.parquet files,
    sorted, recursively), a glob pattern (sorted matches) or a list of any of these (in the list's order).
    Missing, empty, non-regular (FIFO, device) or unsupported files are a DataError before anything is read."""
    if isinstance(source, list):
        return [f for s in source for f in local_files(s)]
    path = Path(os.path.expanduser(source))
    if is_pattern(source) and not path.exists():
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
        files = [f for f in files if f.suffix in SUFFIXES or not f.is_dir()]
        if not files:
            raise DataError(f"{source}: no files match this pattern")
        return [f for s in files for f in local_files(str(s))]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)
        if not files:
            raise DataError(f"{path}: no .txt/.jsonl/.parquet files in directory")
        for f in files:
            check_file(f)
        return files
    check_file(path)
    return [path]


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{path.suffix}' (use .txt, .jsonl or .parquet)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: data file is empty")


def plan_pieces(files: list[Path], shard_bytes: int, text_field: str) -> list[Piece]:
    """Every file cut into pieces of at most about `shard_bytes` of input (parquet: whole row groups, text:
    whole units of TEXT_UNIT bytes). Reads only sizes and parquet footers."""
    out: list[Piece] = []
    for f in files:
        size = f.stat().st_size
        if f.suffix == ".parquet":
            out += _parquet_pieces(f, shard_bytes, text_field)
            continue
        kind = "text" if f.suffix == ".txt" else "jsonl"
        step = max(1, shard_bytes) if kind == "jsonl" else max(1, shard_bytes // TEXT_UNIT) * TEXT_UNIT
        out += [Piece(str(f), kind, a, min(a + step, size), min(a + step, size) - a) for a in range(0, size, step)]
    return out


def _parquet_pieces(f: Path, shard_bytes: int, text_field: str) -> list[Piece]:
    import pyarrow.parquet as pq

    try:  # pyarrow raises ArrowInvalid (a ValueError) and OSError on corrupt files
        md = pq.ParquetFile(f).metadata
        names = md.schema.to_arrow_schema().names
    except Exception as e:  # noqa: BLE001 - any reader failure is the file's fault
        raise DataError(f"{f}: cannot read parquet: {first_line(e)}") from None
    if text_field not in names:
        raise DataError(f"{f}: no column '{text_field}' (data.text_field); columns: {', '.join(names)}")
    out, start, acc = [], 0, 0
    for g in range(md.num_row_groups):
        acc += md.row_group(g).total_byte_size
        if acc >= shard_bytes or g == md.num_row_groups - 1:
            out.append(Piece(str(f), "parquet", start, g + 1, acc))
            start, acc = g + 1, 0
    return out


def group_jobs(pieces: list[Piece], shard_bytes: int) -> list[list[Piece]]:
    """Consecutive pieces packed into jobs of at most `shard_bytes` of input (a bigger piece is a job alone)."""
    jobs: list[list[Piece]] = []
    acc = 0
    for p in pieces:
        if jobs and acc + p.size <= shard_bytes:
            jobs[-1].append(p)
            acc += p.size
        else:
            jobs.append([p])
            acc = p.size
    return jobs


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class FileStats:
    """What reading a file's pieces found: usable documents and skipped lines by reason."""

    good: int = 0
    not_utf8: int = 0
    not_json: int = 0
    no_field: int = 0

    def add(self, other: dict) -> None:
        for k, v in other.items():
            setattr(self, k, getattr(self, k) + v)


def read_piece(p: Piece, text_field: str, stats: FileStats) -> Iterator[tuple[str, bool, bool]]:
    """The text of a piece as ``(text, starts_document, ends_document)``; JSONL and parquet yield whole
    documents, a text file yields its one document in safe-cut units."""
    if p.kind == "jsonl":
        for doc in _read_jsonl_range(p, text_field, stats):
            yield doc, True, True
    elif p.kind == "parquet":
        for doc in _read_parquet_groups(p, text_field, stats):
            yield doc, True, True
    else:
        yield from _read_text_range(p, stats)


def _read_jsonl_range(p: Piece, text_field: str, stats: FileStats) -> Iterator[str]:
    with open(p.path, "rb") as f:
        if p.start > 0:
            f.seek(p.start - 1)
            f.readline()  # the line holding byte start-1 belongs to the previous range
        pos = f.tell()
        first = p.start == 0
        lineno = 0
        while pos < p.end:
            raw = f.readline()
            if not raw:
                break
            pos += len(raw)
            lineno += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats.not_utf8 += 1
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                stats.not_json += 1
                first = False
                continue
            if first and isinstance(row, dict) and text_field not in row:
                raise DataError(f"{p.path}:{lineno}: missing field '{text_field}' (data.text_field); the row has "
                                f"fields: {', '.join(sorted(row)) or '(none)'}")
            first = False
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                stats.no_field += 1
                continue
            stats.good += 1
            text = row[text_field]
            if text.strip():
                yield text


def _read_parquet_groups(p: Piece, text_field: str, stats: FileStats) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p.path)
        batches = pf.iter_batches(batch_size=1024, row_groups=list(range(p.start, p.end)), columns=[text_field])
        for batch in batches:
            for v in batch.column(0).to_pylist():
                if isinstance(v, str):
                    stats.good += 1
                    if v.strip():
                        yield v
                else:
                    stats.no_field += 1
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt row group is the file's fault
        raise DataError(f"{p.path}: cannot read parquet: {first_line(e)}") from None


def safe_byte_cut(f, target: int, size: int) -> int:
    """The first safe point at or after byte `target` of an open binary file: a space byte between two
    non-space bytes, else (none within SAFE_WINDOW) the first byte that starts a UTF-8 character."""
    if target <= 0:
        return 0
    if target >= size:
        return size
    f.seek(target - 1)
    buf = f.read(SAFE_WINDOW + 2)
    for i in range(1, len(buf) - 1):
        if buf[i] == 0x20 and buf[i - 1] not in _SPACE and buf[i + 1] not in _SPACE:
            return target - 1 + i
    for i in range(1, len(buf)):
        if not 0x80 <= buf[i] <= 0xBF:
            return target - 1 + i
    return min(size, target - 1 + len(buf))


def _read_text_range(p: Piece, stats: FileStats) -> Iterator[tuple[str, bool, bool]]:
    size = os.path.getsize(p.path)
    with open(p.path, "rb") as f:
        for unit in range(p.start, p.end, TEXT_UNIT):
            a = safe_byte_cut(f, unit, size)
            b = safe_byte_cut(f, unit + TEXT_UNIT, size)
            if b <= a:
                continue
            f.seek(a)
            raw = f.read(b - a)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{p.path}: not UTF-8 text (invalid byte at offset {a + e.start})") from None
            yield text, a == 0, b == size
    if p.start == 0:
        stats.good += 1


def safe_char_cuts(text: str, piece: int = PIECE_CHARS) -> list[int]:
    """Cut points of a long document: for each multiple of `piece` characters, the first safe point at or
    after it (a space between two non-space characters; else the multiple itself)."""
    cuts = [0]
    n = len(text)
    for target in range(piece, n, piece):
        if target <= cuts[-1]:
            continue
        cut = target
        stop = min(n - 1, target + SAFE_WINDOW)
        i = text.find(" ", target, stop)
        while i != -1:
            if not text[i - 1].isspace() and not text[i + 1].isspace():
                cut = i
                break
            i = text.find(" ", i + 1, stop)
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(n)
    return cuts
