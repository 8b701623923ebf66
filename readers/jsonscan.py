"""Line-aware, fault-tolerant reading of a JSON list file and of a JSONL file.

``json.load`` gives all or nothing.  Here a top-level JSON list is decoded element by
element, so that one malformed record costs only that record, and every record (or
error) comes with the 1-based line it starts on.

A file written one record per line (``[`` / records / ``]``, as ``json.dump`` of
nothing fancier than line-joined records gives) is decoded line by line.  Otherwise
the stream is decoded element by element; recovery rule after a malformed element: skip to the next line whose first non-blank
character is the character that opened the broken element (``{`` or ``[``), i.e. the
start of the next record in a file written one record per line or pretty-printed by
``json.dump(indent=...)``.  If no such line follows, reading stops there.
"""
from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

_WS = " \t\n\r"


@dataclass(frozen=True)
class ScanError:
    line: int
    message: str


@dataclass(frozen=True)
class ScanRecord:
    line: int
    index: int  # position among the list's elements (broken ones included)
    value: Any


Scanned = Union[ScanRecord, ScanError]


class _Lines:
    def __init__(self, text: str) -> None:
        self._nl = [m.start() for m in re.finditer("\n", text)]

    def at(self, pos: int) -> int:
        return bisect.bisect_left(self._nl, pos) + 1


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _line_mode(text: str) -> Optional[list[tuple[int, str]]]:
    """``[(lineno, line), ...]`` of the record lines if the file is written one record
    per line (``[`` and ``]`` alone on the first and last non-blank lines, every line
    between starting with ``{`` or ``[``, at least one decoding on its own); else None."""
    rows = [(k, ln.strip()) for k, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if len(rows) < 3:
        return None
    first = rows[0][1].lstrip("\ufeff").strip()
    if first != "[" or rows[-1][1] != "]":
        return None
    body = rows[1:-1]
    if not all(ln[0] in "{[" for _, ln in body):
        return None
    for _, ln in body:
        try:
            json.loads(ln.rstrip(",").rstrip())
            return body
        except json.JSONDecodeError:
            continue
    return None


def scan_json_list(text: str) -> Iterator[Scanned]:
    """Yield a :class:`ScanRecord` per decodable element of a top-level JSON list and
    a :class:`ScanError` per problem (not a list, malformed element, missing ``]``).

    A file written one record per line is decoded line by line, so that a record with
    a missing closing bracket cannot swallow the records after it."""
    body = _line_mode(text)
    if body is not None:
        for index, (lineno, ln) in enumerate(body):
            try:
                yield ScanRecord(lineno, index, json.loads(ln.rstrip(",").rstrip()))
            except json.JSONDecodeError as e:
                yield ScanError(lineno, f"malformed JSON record: {e.msg} (column {e.colno})")
        return
    lines = _Lines(text)
    dec = json.JSONDecoder()
    n = len(text)
    i = _skip_ws(text, 0)
    if text.startswith("\ufeff"):
        i = _skip_ws(text, 1)
    if i >= n:
        yield ScanError(1, "empty file")
        return
    if text[i] != "[":
        yield ScanError(lines.at(i), f"top level is not a JSON list (starts with {text[i]!r})")
        return
    i += 1
    index = 0
    while True:
        i = _skip_ws(text, i)
        if i >= n:
            yield ScanError(lines.at(n), "unterminated list: missing ']' at end of file")
            return
        if text[i] == "]":
            j = _skip_ws(text, i + 1)
            if j < n:
                yield ScanError(lines.at(j), "unexpected text after the closing ']'")
            return
        start = i
        try:
            value, end = dec.raw_decode(text, start)
        except json.JSONDecodeError as e:
            yield ScanError(lines.at(e.pos), f"malformed JSON record (starting line {lines.at(start)}): {e.msg}")
            index += 1
            opener = text[start]
            if opener not in "{[":
                opener = "{["
            m = re.compile(r"\n[ \t]*[" + re.escape(opener) + "]").search(text, max(e.pos, start + 1))
            if m is None:
                return
            i = m.end() - 1
            continue
        yield ScanRecord(lines.at(start), index, value)
        index += 1
        i = _skip_ws(text, end)
        if i < n and text[i] == ",":
            i += 1
        elif i < n and text[i] != "]":
            yield ScanError(lines.at(i), "expected ',' or ']' after a record")
            # Treat as a missing comma and go on with the next element.


def scan_jsonl(text: str) -> Iterator[Scanned]:
    """Yield one :class:`ScanRecord` per non-blank decodable line, a :class:`ScanError`
    per undecodable line.  ``index`` counts non-blank lines."""
    index = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if lineno == 1 and s.startswith("\ufeff"):
            s = s[1:].strip()
        if not s:
            continue
        try:
            value = json.loads(s)
        except json.JSONDecodeError as e:
            yield ScanError(lineno, f"malformed JSON line: {e.msg} (column {e.colno})")
        else:
            yield ScanRecord(lineno, index, value)
        index += 1
