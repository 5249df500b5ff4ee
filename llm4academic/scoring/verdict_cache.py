"""The endpoint judge's resumable ``VerdictCache``: replies (parsed, malformed or refused: final at temperature 0) by
request key, in an append-only JSONL file under an exclusive lock, each row flushed and fsynced. A torn last line is
dropped and reported, so a killed run resumes with only what is missing. Transport failures are not cached: the next
run asks again.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ..answer_cache import read_cache
from ..base import KitError
from .endpoint_http import EndpointError

try:
    import fcntl
except ImportError:  # not POSIX: appends are not locked
    fcntl = None


class VerdictCache:
    """The endpoint judge's replies by request key: append-only JSONL under an exclusive lock, each row flushed and
    fsynced. A half-written last line (a killed run) is cut off and reported (``partial``); a broken line elsewhere is
    an error naming ``file:line``; a repeated key keeps its first row (``duplicates``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self.partial, self.duplicates = False, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a", encoding="utf-8")
        try:
            if fcntl is not None:
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise EndpointError(f"{self.path}: another run is judging into this cache; wait for it") from None
        try:
            contents = read_cache(self.path, "judge cache row", "delete that line to ask again")
        except KitError:
            self.fh.close()
            raise
        self.rows, self.partial, self.duplicates = contents.rows, contents.partial, contents.duplicates
        if self.partial:
            os.truncate(self.path, contents.good_bytes)
            warnings.warn(f"{self.path}: the last line was half-written (an interrupted run); dropped", stacklevel=3)

    def append(self, row: dict) -> None:
        self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.rows[row["key"]] = row

    def close(self) -> None:
        self.fh.close()  # releases the lock

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
