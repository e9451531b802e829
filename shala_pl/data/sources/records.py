"""Reading helpers the source readers share: JSON lines, CSV rows and required fields, each error located."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from shala_pl.data.example import DataError, OnInvalid, ReadResult, RecordSink, VoteExample


def require(record: dict, key: str, path, line: Optional[int], types: type | tuple, name: Optional[str] = None):
    """``record[key]`` if present and of ``types``; otherwise a DataError naming the field (``name`` if given)."""
    name = name or key
    if key not in record or record[key] is None:
        raise DataError(path, line, name, "missing field", "missing_field")
    value = record[key]
    # bool is an int subclass; a JSON true where a count or id belongs is a mistake, not a 1
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise DataError(path, line, name, f"expected {_type_names(types)}, got {value!r}", "wrong_type")
    if not isinstance(value, types):
        raise DataError(path, line, name, f"expected {_type_names(types)}, got {type(value).__name__} {value!r}",
                        "wrong_type")
    return value


def _type_names(types: type | tuple) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def read_text(path) -> str:
    """The whole file as text: UTF-8, with or without a byte-order mark (as Windows tools write it). A byte that is
    not UTF-8 is a DataError naming its line and column: no record of a file in another encoding can be trusted."""
    data = Path(path).read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        raise DataError(path, data.count(b"\n", 0, error.start) + 1, None,
                        f"not UTF-8: byte 0x{data[error.start]:02x} at column {error.start - line_start + 1} "
                        "(save the file as UTF-8)", "not_utf8") from None


class JsonObject(dict):
    """A JSON object that remembers its repeated keys (``json``'s own dict keeps the last value silently; this one
    keeps the first and lists the others in ``repeated``). Use as ``json.loads(text, object_pairs_hook=...)``."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__()
        self.repeated: list[str] = []
        for key, value in pairs:
            if key in self:
                self.repeated.append(key)
            else:
                self[key] = value


def repeated_key_line(text: str, key_path: Sequence[str]) -> Optional[int]:
    """The line of the second ``key_path[-1]`` key after the keys before it, found in the document's text (JSON
    parsers report no positions to an object hook); None if the text does not show it plainly."""
    position = 0
    for depth, key in enumerate(key_path):
        pattern = re.compile(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:")
        matches = pattern.finditer(text, position)
        found = next(matches, None)
        if found is not None and depth == len(key_path) - 1:
            found = next(matches, None)
        if found is None:
            return None
        position = found.end()
    return text.count("\n", 0, position) + 1


def parse_json_object(path, line_number: int, text: str) -> dict:
    """One JSONL line as a dict, or a DataError naming the file and line."""
    try:
        record = json.loads(text, object_pairs_hook=JsonObject)
    except json.JSONDecodeError as error:
        raise DataError(path, line_number, None, f"malformed JSON: {error.msg} (column {error.colno})",
                        "malformed_json") from None
    if not isinstance(record, dict):
        raise DataError(path, line_number, None, f"expected a JSON object, got {type(record).__name__}",
                        "malformed_json")
    repeated = first_repeated_key(record)
    if repeated:
        raise DataError(path, line_number, ".".join(repeated), "the key appears twice in one object (which value "
                        "is meant?)", "repeated_key")
    return record


def first_repeated_key(value, key_path: tuple = ()) -> tuple:
    """The key path of the first repeated key in a document parsed with ``JsonObject``; () if there is none."""
    if isinstance(value, JsonObject):
        if value.repeated:
            return (*key_path, value.repeated[0])
        children = value.items()
    elif isinstance(value, list):
        children = ((str(i), item) for i, item in enumerate(value))
    else:
        return ()
    for key, child in children:
        found = first_repeated_key(child, (*key_path, key))
        if found:
            return found
    return ()


def json_lines(path: Path, sink: RecordSink) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; malformed lines go to ``sink.invalid``."""
    with io.StringIO(read_text(path), newline=None) as lines:
        for line_number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                record = parse_json_object(path, line_number, text)
            except DataError as error:
                sink.invalid(error)
                continue
            yield line_number, record


def read_json_lines(path: Path, on_invalid: OnInvalid, parse: Callable[[dict, int], VoteExample]) -> ReadResult:
    """A JSONL source with one example per line: ``parse(record, line)`` builds it or raises DataError."""
    sink = RecordSink(path, on_invalid)
    for line, record in json_lines(path, sink):
        try:
            example = parse(record, line)
        except DataError as error:
            sink.invalid(error)
            continue
        sink.add(example, line)
    return sink.finish()


def csv_rows(path: Path, sink: RecordSink, required_columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line where the row starts, {column: value})`` for each row of a CSV file with a header.

    A bad header (or no header at all) raises: no row of such a file can be read. A row with the wrong number of
    fields or broken quoting goes to ``sink.invalid``.
    """
    with io.StringIO(read_text(path), newline="") as source:
        reader = csv.reader(source, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as error:
            raise DataError(path, 1, None, f"malformed CSV header: {error}", "malformed_csv") from error
        if header is None:
            raise DataError(path, None, None, "no header: the file is empty", "empty_file")
        missing = [column for column in required_columns if column not in header]
        if missing:
            raise DataError(path, 1, missing[0], f"missing column(s) {missing} in the header", "missing_column")
        while True:
            # reader.line_num counts physical lines consumed so far, so a row starts one past the previous count
            # (a quoted field may span several lines)
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                sink.invalid(DataError(path, start, None, f"malformed CSV: {error}", "malformed_csv"))
                continue
            if not row:
                continue
            if len(row) != len(header):
                sink.invalid(DataError(path, start, None, f"expected {len(header)} fields, got {len(row)}",
                                       "malformed_csv"))
                continue
            yield start, dict(zip(header, row))
