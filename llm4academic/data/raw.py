"""Raw reading of instruction-data files: bytes → ``(line, JSON object)``, whatever the layout.

A file may be a JSON array, JSON Lines, or gzip of either; the layout is detected from the bytes, not the file name
(BELLE ships JSON Lines named ``.json``). Broken input is a ``DataError`` naming ``file:line``; a malformed JSON Lines
line is handed on as an ``InvalidRecord`` so that the caller can count and skip it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..base import KitError


class DataError(KitError):
    """A data file that cannot be read as asked: the message names file:line and what was expected."""


class InvalidRecord(Exception):
    """One record that does not fit its format; ``reason`` is the counting key (e.g. ``missing:output``)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); expected UTF-8 text"
        ) from None


def iter_raw(path: Path) -> tuple[str, Iterator[tuple[int, Any]]]:
    """Yield ``(line, object)`` for each element of a JSON array or each line of JSON Lines.

    A malformed JSON Lines line is yielded as ``(line, InvalidRecord)`` so the caller can skip it; a malformed
    JSON array cannot be resynchronised and raises ``DataError``.
    """
    text = _read_text(path)
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] == "[":
        return "json-array", _iter_array(path, text, start + 1)
    return "jsonl", _iter_lines(text)


def _iter_lines(text: str) -> Iterator[tuple[int, Any]]:
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield no, json.loads(line)
        except json.JSONDecodeError as e:
            yield no, InvalidRecord("malformed_json", f"malformed JSON ({e.msg} at column {e.colno})")


def _iter_array(path: Path, text: str, pos: int) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    line, counted = 1, 0  # line number at offset `counted`
    n = len(text)

    def line_at(offset: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, offset)
        counted = offset
        return line

    def skip_ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{line_at(e.pos)}: malformed JSON array element ({e.msg}); expected a JSON object"
            ) from None
        yield line_at(pos), obj
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            return
        raise DataError(f"{path}:{line_at(pos)}: malformed JSON array: expected ',' or ']'")
