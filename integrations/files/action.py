"""``file.parse`` (CSV, JSON, JSON Lines -> rows) and ``file.store`` (keep a copy at a path).

Both take ``config.file``: a file reference a template gives
(``{{ trigger.files.upload }}``, ``{{ steps.download.output.file }}``); the
bytes come through ``ActionContext.files``, never from a path.

``file.parse`` reads the file as a stream and stops at its bounds, each named
in the error with its setting: rows (``POTAFLOW_PARSE_MAX_ROWS``), columns
(``POTAFLOW_PARSE_MAX_COLUMNS``), characters in one cell
(``POTAFLOW_PARSE_MAX_CELL_CHARS``) and the size of the rows as JSON
(``POTAFLOW_PARSE_MAX_OUTPUT_BYTES``, which also bounds what is stored as the
step's output instead of ``POTAFLOW_STEP_OUTPUT_MAX_BYTES``). Its output
``{"rows": [...]}`` is what ``for_each`` iterates over.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings

from integrations.base import Action, ActionContext
from integrations.errors import PermanentError
from integrations.file_access import FileAccess, FileInfo
from integrations.storable import JSONValue, storable

FORMATS = ["auto", "csv", "json", "jsonl"]
DELIMITERS = ",;\t|"
SNIFF_BYTES = 64 * 1024
SNIFF_ROWS = 20  # rows of the sample that decide the delimiter and whether there is a header
_FILE_SCHEMA = {
    "description": "A file reference: {{ trigger.files.<field> }} or {{ steps.<key>.output.file }}",
    "type": ["object", "string"],
}


def _files(ctx: ActionContext) -> FileAccess:
    if ctx.files is None:
        raise PermanentError("this step runs without access to files")
    return ctx.files


@dataclass(frozen=True)
class Bounds:
    rows: int
    columns: int
    cell: int
    output: int

    @classmethod
    def from_settings(cls) -> Bounds:
        return cls(
            rows=settings.POTAFLOW_PARSE_MAX_ROWS,
            columns=settings.POTAFLOW_PARSE_MAX_COLUMNS,
            cell=settings.POTAFLOW_PARSE_MAX_CELL_CHARS,
            output=settings.POTAFLOW_PARSE_MAX_OUTPUT_BYTES,
        )


class _Rows:
    """Collects rows, refusing at the first bound crossed (named with its setting)."""

    def __init__(self, bounds: Bounds, name: str) -> None:
        self.bounds = bounds
        self.name = name
        self.rows: list[JSONValue] = []
        self.size = 2

    def add(self, row: Any, line: int) -> None:
        if len(self.rows) >= self.bounds.rows:
            raise PermanentError(
                f"{self.name}: more than {self.bounds.rows} rows (POTAFLOW_PARSE_MAX_ROWS); nothing was parsed"
            )
        cells = row.values() if isinstance(row, dict) else row if isinstance(row, list) else [row]
        if isinstance(row, dict | list) and len(row) > self.bounds.columns:
            raise PermanentError(
                f"{self.name}: row {line} has {len(row)} columns, more than {self.bounds.columns} "
                "(POTAFLOW_PARSE_MAX_COLUMNS)"
            )
        for cell in cells:
            if isinstance(cell, str) and len(cell) > self.bounds.cell:
                raise PermanentError(
                    f"{self.name}: row {line} has a cell of {len(cell)} characters, more than {self.bounds.cell} "
                    "(POTAFLOW_PARSE_MAX_CELL_CHARS)"
                )
        value = storable(row)
        self.size += len(json.dumps(value)) + 1
        if self.size > self.bounds.output:
            raise PermanentError(
                f"{self.name}: the rows come to more than {self.bounds.output} bytes as JSON "
                "(POTAFLOW_PARSE_MAX_OUTPUT_BYTES)"
            )
        self.rows.append(value)


class ParseFile(Action):
    name = "file.parse"
    title = "Parse a file"
    description = (
        "Read a CSV (delimiter, header and encoding detected), JSON or JSON Lines file into rows: "
        'output {"rows": [...]}, for for_each or a later step.'
    )
    has_side_effects = False
    output_limit_setting = "POTAFLOW_PARSE_MAX_OUTPUT_BYTES"
    config_schema = {
        "type": "object",
        "required": ["file"],
        "additionalProperties": False,
        "properties": {
            "file": _FILE_SCHEMA,
            "format": {"type": "string", "enum": FORMATS, "default": "auto",
                       "description": "auto: from the file name's extension (.json, .jsonl/.ndjson), else CSV"},
            "encoding": {"type": "string", "default": "auto",
                         "description": "auto: UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252"},
            "delimiter": {"type": "string", "default": "auto", "description": "CSV: auto, or one character"},
            "header": {"type": ["boolean", "string"], "default": "auto",
                       "description": "CSV: first row names the columns (rows are objects); auto: detected"},
        },
    }  # fmt: skip

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        files = _files(ctx)
        info = files.info(config["file"], field="config.file")
        fmt = str(config.get("format") or "auto").lower()
        if fmt == "auto":
            fmt = _format_from_name(info)
        if fmt not in ("csv", "json", "jsonl"):
            raise PermanentError(f"config.format: {fmt!r} is not one of csv, json, jsonl")
        bounds = Bounds.from_settings()
        rows = _Rows(bounds, f"file {info.name!r}")
        with files.open(info) as raw:
            head = raw.read(SNIFF_BYTES)
            encoding = _encoding(config.get("encoding"), head)
            stream = _text(head, raw, encoding)
            output: dict[str, Any] = {"format": fmt, "encoding": encoding}
            try:
                if fmt == "csv":
                    output.update(_parse_csv(stream, head, encoding, config, rows))
                elif fmt == "jsonl":
                    _parse_jsonl(stream, rows)
                else:
                    _parse_json(stream, rows, bounds)
            except UnicodeDecodeError as exc:
                raise PermanentError(
                    f"file {info.name!r} is not {encoding} text ({exc.reason} at byte {exc.start}); set config.encoding"
                ) from None
        return {**output, "file": info.as_ref(), "row_count": len(rows.rows), "rows": rows.rows}


def _format_from_name(info: FileInfo) -> str:
    name = info.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json") or info.content_type.split(";")[0].strip().lower() == "application/json":
        return "json"
    return "csv"


def _encoding(requested: Any, head: bytes) -> str:
    if isinstance(requested, str) and requested.strip() and requested.strip().lower() != "auto":
        try:
            return codecs.lookup(requested.strip()).name
        except LookupError:
            raise PermanentError(f"config.encoding: unknown encoding {requested!r}") from None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        # The sample may end inside a character: decode what is whole.
        codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "cp1252"


def _text(head: bytes, rest: IO[bytes], encoding: str) -> io.TextIOWrapper:
    """The whole file as text: the sample already read, then the rest of the stream."""

    class Joined(io.RawIOBase):
        def __init__(self) -> None:
            self.pending = head

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if not self.pending:
                self.pending = rest.read(len(buffer))
            n = min(len(buffer), len(self.pending))
            buffer[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            return n

    errors = "replace" if encoding == "cp1252" else "strict"  # cp1252 leaves 5 bytes undefined
    return io.TextIOWrapper(io.BufferedReader(Joined()), encoding=encoding, errors=errors, newline="")


def _parse_csv(
    stream: io.TextIOWrapper, head: bytes, encoding: str, config: Mapping[str, Any], rows: _Rows
) -> dict[str, JSONValue]:
    sample = head.decode(encoding, errors="ignore")
    sample = sample[: sample.rfind("\n") + 1] or sample  # whole lines only
    delimiter = config.get("delimiter") or "auto"
    if delimiter == "auto":
        delimiter = _guess_delimiter(sample)
    elif not (isinstance(delimiter, str) and len(delimiter) == 1):
        raise PermanentError(f"config.delimiter: one character or auto, not {delimiter!r}")
    header = config.get("header", "auto")
    if header in ("auto", None, ""):
        has_header = _guess_header(sample, delimiter)
    else:
        has_header = header is True or str(header).lower() in ("true", "yes", "1")
    csv.field_size_limit(max(rows.bounds.cell + 1, 1024))
    reader = csv.reader(stream, delimiter=delimiter)
    columns: list[str] = []
    try:
        for number, record in enumerate(_records(reader), start=1):
            if len(record) > rows.bounds.columns:  # a header's row too: its extra cells would all be kept
                rows.add(record, number)  # refused, naming the bound
            if has_header and not columns:
                columns = _column_names(record)
                continue
            if columns:
                padded = record + [""] * (len(columns) - len(record))
                row: Any = dict(zip(columns, padded, strict=False))
                if len(record) > len(columns):
                    row["_extra"] = record[len(columns) :]
            else:
                row = record
            rows.add(row, number)
    except csv.Error as exc:
        message = str(exc)
        if "field larger than field limit" in message:
            message = f"a cell has more than {rows.bounds.cell} characters (POTAFLOW_PARSE_MAX_CELL_CHARS)"
        raise PermanentError(f"{rows.name}: not readable as CSV at line {reader.line_num}: {message}") from None
    return {"delimiter": delimiter, "header": has_header, "columns": storable(columns)}


def _sample_rows(sample: str, delimiter: str) -> list[list[str]]:
    """The first ``SNIFF_ROWS`` non-blank records of the sample split at ``delimiter`` (csv's reader: linear)."""
    reader = csv.reader(io.StringIO(sample), delimiter=delimiter)
    try:
        return [record for record in itertools.islice(reader, SNIFF_ROWS) if record]
    except csv.Error:
        return []


def _guess_delimiter(sample: str) -> str:
    """The candidate that splits the first rows into the same number (2 or more) of columns most often.

    Not ``csv.Sniffer``: its regular expressions backtrack for minutes on a 64 KiB
    sample such as ``,",",",...`` (a worker held by one small upload); this reads
    each candidate with the csv module's own parser, in linear time."""
    best, best_score = ",", (0.0, 0)
    for candidate in DELIMITERS:
        widths = [len(record) for record in _sample_rows(sample, candidate)]
        if not widths:
            continue
        width, seen = Counter(widths).most_common(1)[0]
        score = (seen / len(widths), width)
        if width >= 2 and score > best_score:
            best, best_score = candidate, score
    return best


def _guess_header(sample: str, delimiter: str) -> bool:
    """``csv.Sniffer.has_header``'s vote (a first row unlike the columns' values below it: numbers, or
    same-length codes), on rows read with ``delimiter`` instead of the Sniffer's backtracking guess."""
    records = _sample_rows(sample, delimiter)
    if not records:
        return True
    header, body = records[0], records[1:]
    kinds: dict[int, Any] = dict.fromkeys(range(len(header)))
    for record in body:
        if len(record) != len(header):
            continue
        for column in list(kinds):
            kind: Any = _kind(record[column])
            if kinds[column] is None:
                kinds[column] = kind
            elif kinds[column] != kind:
                del kinds[column]
    # A column no row could tell (none as wide as the header) votes "header", as the Sniffer's does.
    votes = sum(1 if kind is None or _kind(header[column]) != kind else -1 for column, kind in kinds.items())
    return votes > 0


def _kind(cell: str) -> Any:
    """A number's kind is ``complex`` (as the Sniffer has it), anything else is its length."""
    try:
        complex(cell)
    except (ValueError, OverflowError):
        return len(cell)
    return complex


def _records(reader: Any) -> Iterator[list[str]]:
    for record in reader:
        if record:  # blank lines carry no row
            yield record


def _column_names(record: list[str]) -> list[str]:
    names: list[str] = []
    for index, raw in enumerate(record, start=1):
        name = raw.strip() or f"column_{index}"
        while name in names:
            name = f"{name}_{index}"
        names.append(name)
    return names


def _parse_jsonl(stream: io.TextIOWrapper, rows: _Rows) -> None:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        if len(line) > rows.bounds.output:
            raise PermanentError(
                f"{rows.name}: line {number} is longer than {rows.bounds.output} bytes "
                "(POTAFLOW_PARSE_MAX_OUTPUT_BYTES)"
            )
        try:
            rows.add(json.loads(line), number)
        except ValueError as exc:
            raise PermanentError(f"{rows.name}: line {number} is not JSON: {exc}") from None


def _parse_json(stream: io.TextIOWrapper, rows: _Rows, bounds: Bounds) -> None:
    text = stream.read(bounds.output + 1)
    if len(text) > bounds.output:
        raise PermanentError(f"{rows.name}: more than {bounds.output} bytes of JSON (POTAFLOW_PARSE_MAX_OUTPUT_BYTES)")
    try:
        document = json.loads(text)
    except RecursionError:
        raise PermanentError(f"{rows.name}: the JSON is nested too deeply") from None
    except ValueError as exc:
        raise PermanentError(f"{rows.name}: not JSON: {exc}") from None
    for number, row in enumerate(document if isinstance(document, list) else [document], start=1):
        rows.add(row, number)


class StoreFile(Action):
    name = "file.store"
    title = "Store a file"
    description = (
        "Keep a copy of a file at a path (a template) in the organization's area of the file storage "
        "(local disk or the S3 bucket); output its location. Kept files stay when their run is deleted."
    )
    config_schema = {
        "type": "object",
        "required": ["file", "path"],
        "additionalProperties": False,
        "properties": {
            "file": _FILE_SCHEMA,
            "path": {"type": "string", "minLength": 1, "description": "e.g. reports/{{ run.id }}.csv"},
        },
    }

    def repeat_is_safe(self, config: Mapping[str, Any]) -> bool:
        return True  # the same path is written again: one copy, whatever the repeats

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue]:
        return {"path": storable(config.get("path"))}

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        files = _files(ctx)
        info = files.info(config["file"], field="config.file")
        if not isinstance(config.get("path"), str):
            raise PermanentError("config.path: a path is text")
        location = files.store(info, config["path"])
        return {"location": location, "file": info.as_ref(), "size": info.size, "sha256": info.sha256}
