"""The data step's cache, under the kit's cache directory (``<cache>/data``, never the run directory).

Two kinds of entries, each named by a key that is the sha256 of everything its content depends on:

- **loaded sources**: a source file's unified records as an Arrow file (memory-mapped when read back) and its
  ``LoadReport`` as JSON, keyed by the file's sha256, ``LOADER_VERSION`` and the load parameters that change the
  records (source name, format, language, max_records, on_invalid). A second run reads Arrow instead of parsing JSON.
- **step results**: which rows a cleaning step kept (a NumPy index array) and its report, or the contamination
  check's matches, keyed by the key of their input, the step's parameters and ``STEP_VERSION``.

Entries are written to a temporary name and renamed, so a crash never leaves half an entry; ``data.cache: false``
turns the cache off. Deleting ``<cache>/data`` is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..base import cache_dir, sha256_file

LOADER_VERSION = 2  # bump when loading or an adapter changes what records a file gives
STEP_VERSION = 1  # bump when a cleaning step or the contamination check changes its result


def key(*parts: Any) -> str:
    """A stable key for JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:40]


class DataCache:
    """One cache directory; ``enabled=False`` makes every lookup miss and every store a no-op."""

    def __init__(self, root: str | Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_dir() / "data"
        self.enabled = enabled
        self._file_sha: dict[tuple[str, int, int], str] = {}

    def file_sha256(self, path: Path) -> str:
        st = path.stat()
        k = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if k not in self._file_sha:
            self._file_sha[k] = sha256_file(path)
        return self._file_sha[k]

    def _path(self, k: str, suffix: str) -> Path:
        return self.root / k[:2] / f"{k}{suffix}"

    def file_path(self, k: str, suffix: str) -> Path:
        """Where an entry's own file lives (e.g. a mix, ``.mix.jsonl``); its folder exists."""
        p = self._path(k, suffix)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # ---- loaded sources: records.arrow + report.json

    def get_records(self, k: str) -> tuple[datasets.Dataset, dict] | None:
        arrow, meta = self._path(k, ".arrow"), self._path(k, ".json")
        if not (self.enabled and arrow.is_file() and meta.is_file()):
            return None
        try:
            return datasets.Dataset.from_file(str(arrow), in_memory=False), json.loads(meta.read_text("utf-8"))
        except (OSError, ValueError):
            return None  # unreadable entry: load again

    def records_path(self, k: str) -> Path:
        """Where a new records entry is written (under a temporary name: ``commit_records`` renames it)."""
        p = self._path(k, f".arrow.tmp{os.getpid()}")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit_records(self, k: str, tmp: Path, meta: dict) -> datasets.Dataset:
        self._write(self._path(k, ".json"), json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        os.replace(tmp, self._path(k, ".arrow"))
        return datasets.Dataset.from_file(str(self._path(k, ".arrow")), in_memory=False)

    # ---- step results: kept rows (.npy) and a JSON document

    def get_step(self, k: str) -> tuple[np.ndarray | None, Any] | None:
        meta = self._path(k, ".step.json")
        if not (self.enabled and meta.is_file()):
            return None
        try:
            doc = json.loads(meta.read_text("utf-8"))
            rows = np.load(self._path(k, ".npy")) if doc.get("has_rows") else None
        except (OSError, ValueError):
            return None
        return rows, doc["value"]

    def put_step(self, k: str, rows: np.ndarray | None, value: Any) -> None:
        if not self.enabled:
            return
        if rows is not None:
            buf = _npy_bytes(np.asarray(rows, dtype=np.int64))
            self._write(self._path(k, ".npy"), buf)
        doc = {"has_rows": rows is not None, "value": value}
        self._write(self._path(k, ".step.json"), json.dumps(doc, ensure_ascii=False, default=_plain).encode("utf-8"))

    def _write(self, path: Path, data: bytes) -> None:
        if not self.enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _plain(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return str(x)
