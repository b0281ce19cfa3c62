"""Row readers for JSON, JSONL(.gz), CSV and XLSX files; errors name the file and the row."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.core.errors import DataError

#: one source row: column name -> value
Row = dict[str, Any]
#: text encodings tried in turn: UTF-8 (a BOM allowed), the only one benchmark data may use
UTF8 = ("utf-8-sig",)


def read_text(path: Path, encodings: Sequence[str] = UTF8) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            failure = exc
    names = " or ".join(e.removesuffix("-sig").upper() for e in encodings)
    raise DataError(f"{path}: not {names} text ({failure})") from failure


def read_rows(path: Path, header: bool = True, encodings: Sequence[str] = UTF8) -> Iterator[tuple[int, Row]]:
    """Yield (1-based source row number, row) for JSON, JSONL(.gz), CSV and XLSX files; text is
    decoded with the first of ``encodings`` that fits (labelled judge data may be GB18030)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        for lineno, line in enumerate(read_text(path, encodings).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: row {lineno}: malformed JSON ({exc.msg})") from exc
            if not isinstance(value, dict):
                raise DataError(f"{path}: row {lineno}: expected a JSON object, got {type(value).__name__}")
            yield lineno, value
    elif name.endswith(".json"):
        try:
            value = json.loads(read_text(path, encodings))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: row {exc.lineno} (column {exc.colno}): malformed JSON ({exc.msg})") from exc
        if isinstance(value, dict):
            yield 0, value  # nested layout: one mapping
            return
        if not isinstance(value, list):
            raise DataError(f"{path}: expected a JSON array or object, got {type(value).__name__}")
        for index, entry in enumerate(value, start=1):
            if isinstance(entry, str):
                yield index, {"prompt": entry}
            elif isinstance(entry, dict):
                yield index, entry
            else:
                raise DataError(f"{path}: row {index}: expected a string or object, got {type(entry).__name__}")
    elif name.endswith(".csv"):
        csv.field_size_limit(1 << 30)  # long answers in labelled judge data exceed the 128 KiB default
        reader = csv.reader(io.StringIO(read_text(path, encodings), newline=""), strict=True)
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise DataError(f"{path}: row {reader.line_num}: malformed CSV ({exc})") from exc
        yield from _table_rows(path, rows, header)
    elif name.endswith(".xlsx"):
        import pandas as pd

        frame = pd.read_excel(path, header=None, dtype=str, keep_default_na=False)
        yield from _table_rows(path, frame.values.tolist(), header)
    else:
        raise DataError(f"{path}: unsupported file type (expected .json, .jsonl[.gz], .csv or .xlsx)")


def _table_rows(path: Path, rows: list[list[Any]], header: bool) -> Iterator[tuple[int, Row]]:
    if header:
        if not rows:
            return
        columns = [str(c) for c in rows[0]]
        for number, values in enumerate(rows[1:], start=2):
            if not any(str(v).strip() for v in values):
                continue
            if len(values) != len(columns):
                raise DataError(f"{path}: row {number}: {len(values)} fields, the header has {len(columns)}")
            yield number, dict(zip(columns, values, strict=True))
    else:
        for number, values in enumerate(rows, start=1):
            yield number, {str(i): v for i, v in enumerate(values)}
