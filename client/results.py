"""The classify output: one record per file, CSV or JSONL, written and flushed as results arrive.

Every record is exactly one line (text fields are flattened to one line), so a run killed
mid-write leaves at most one partial last line; :func:`load_done` cuts it off before a
``--resume`` appends. The file path is the key: a resumed run never writes a path twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from vidcls.client.evidence import FIELDS as EVIDENCE_FIELDS

FORMATS = ("csv", "jsonl")


def fieldnames(classes: Sequence[str], top_k: bool = False, evidence: bool = False) -> list[str]:
    """Columns: path, class, one probability column per class (named by it), then bookkeeping.
    ``skipped`` holds why a file found in a folder was not sent (not a video), ``error`` why a
    file failed; a row has a class, an error or a skip reason."""
    return ["path", "class", *classes, *(["top_k"] if top_k else []),
            *(EVIDENCE_FIELDS if evidence else ()),
            "latency_ms", "error", "skipped", "attempts", "endpoint"]


def written_classes(done: dict[str, dict[str, Any]], header: list[str] | None) -> tuple[str, ...] | None:
    """The class columns an existing output was written with (every column :func:`fieldnames`
    does not name for itself), or None when nothing tells (an empty file)."""
    names = header if header else next((list(r) for r in done.values()), None)
    if not names:
        return None
    own = set(fieldnames((), top_k=True, evidence=True))
    return tuple(c for c in names if c not in own)


def detect_format(output: str | None, fmt: str | None) -> str:
    if fmt and fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
        return fmt
    if output and output != "-" and Path(output).suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


def one_line(text: str) -> str:
    """Server messages may span lines; a record must not (see the module docstring)."""
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _cut_partial_tail(path: Path) -> None:
    """Truncate a last line that has no newline: the record being written when a run died."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Scan back for the last newline in blocks (files can be large).
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                f.truncate(start + idx + 1)
                return
            pos = start
        f.truncate(0)


def load_done(path: str | os.PathLike, fmt: str) -> tuple[dict[str, dict[str, Any]], list[str] | None]:
    """Records already in an output file, keyed by path, plus the CSV header (None for JSONL or
    an empty file). A partial last line is removed from the file first."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return {}, None
    _cut_partial_tail(path)
    done: dict[str, dict[str, Any]] = {}
    header = None
    with open(path, newline="", encoding="utf-8") as f:
        if fmt == "csv":
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            if header and "path" not in header:
                raise ValueError(f"{path} has no 'path' column: not a vidcls classify output")
            for row in reader:
                done[row["path"]] = row
        else:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n} is not JSON ({exc}); not a vidcls classify output") from None
                done[rec["path"]] = rec
    return done, header


def drop_records(path: str | os.PathLike, fmt: str, keys: set[str]) -> None:
    """Rewrite the output without the records of ``keys`` (used by --retry-failed), atomically:
    a temporary file beside it replaces it, so a crash leaves either the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(path, newline="", encoding="utf-8") as src, open(tmp, "w", newline="", encoding="utf-8") as dst:
        if fmt == "csv":
            reader = csv.DictReader(src)
            writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [], lineterminator="\n")
            writer.writeheader()
            for row in reader:
                if row["path"] not in keys:
                    writer.writerow(row)
        else:
            for line in src:
                if line.strip() and json.loads(line)["path"] not in keys:
                    dst.write(line if line.endswith("\n") else line + "\n")
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same number
    if isinstance(value, list) and all(isinstance(e, dict) and "class" in e for e in value):
        # top-k: [{"class": .., "score": ..}, ...]
        return ";".join(f"{e['class']}:{e['score']:.6f}" for e in value)
    if isinstance(value, (list, dict)):  # the evidence: JSON text in one cell
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str):
        return one_line(value)
    return value


class ResultWriter:
    """Appends records to ``output`` (``-`` = stdout) and flushes each one."""

    def __init__(self, output: str | None, fmt: str, fields: list[str], header: list[str] | None = None):
        self.fmt = fmt
        self.fields = header or fields  # a resumed CSV keeps its own columns
        self._own = output not in (None, "-")
        if self._own:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(output, "a", newline="", encoding="utf-8")
        else:
            self._f = sys.stdout
        self._csv = None
        if fmt == "csv":
            self._csv = csv.DictWriter(self._f, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
            if header is None:
                self._csv.writeheader()
                self._f.flush()

    def write(self, record: dict[str, Any]) -> None:
        if self._csv is not None:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
            w.writerow({k: _csv_value(record.get(k)) for k in self.fields})
            line = buf.getvalue()
        else:
            rec = {k: (one_line(v) if isinstance(v, str) else v) for k, v in record.items()}
            line = json.dumps(rec, ensure_ascii=False) + "\n"
        # One write call per record, then flush: a killed run keeps every record it finished.
        self._f.write(line)
        self._f.flush()

    def close(self) -> None:
        if self._own:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_records(path: str | os.PathLike, fmt: str | None = None) -> list[dict[str, Any]]:
    """Read an output back (``vidcls report``, the demo, tests): one record per file."""
    fmt = fmt or detect_format(str(path), None)
    return list(load_done(path, fmt)[0].values())
