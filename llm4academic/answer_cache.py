"""The answer cache of ``generate.py``: model identity, row keys, and the JSONL file the rows are appended to.

One JSONL file per model identity (``directory_identity``: resolved path + sha256 of the weights, config and tokenizer
files; a file's hash is remembered by (size, mtime) under the kit cache), in a folder the caller gives (the study's
``RunDir(run_dir).generations``). A row's ``key`` hashes the identity, the rendered prompt text, the template, the
requested dtype, the backend and the decoding settings (batch size is recorded but not part of the key: it does not
change greedy or seeded answers). Rows are appended line by line and flushed + fsynced after every batch, so an
interrupted run resumes with only the missing prompts; a truncated last line (a crash mid-write) is dropped, reported
and cut from the file before appending.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .base import KitError, atomic_write, cache_dir

try:
    import fcntl
except ImportError:  # not POSIX: appends are not locked
    fcntl = None

CACHE_VERSION = 1  # bump when what a key stands for changes (prompt encoding, decoding)
IDENTITY_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "merges.txt",
)


# --------------------------------------------------------------------------------------------- model identity


def _hash_memo_path() -> Path:
    return cache_dir() / "generate" / "file-sha256.json"


_MEMO: dict[str, list] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered (in memory and under the kit cache) by path, size and mtime."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    memo_file = _hash_memo_path()
    if not _MEMO and memo_file.is_file():
        try:
            known = json.loads(memo_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}  # a damaged memo only costs re-hashing
        _MEMO.update({p: v for p, v in known.items() if Path(p).exists()})  # forget deleted files
    hit = _MEMO.get(str(path))
    if hit and hit[:2] == stamp:
        return hit[2]
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    _MEMO[str(path)] = [*stamp, digest]
    atomic_write(memo_file, json.dumps(_MEMO, indent=0, sort_keys=True))
    return digest


def identity_files(directory: str | Path) -> list[Path]:
    """The files a model directory's identity hashes: its ``*.safetensors`` weights, config and tokenizer files."""
    directory = Path(directory)
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise KitError(f"{directory}: no *.safetensors weights (the kit loads safetensors only)")
    return weights + [directory / n for n in IDENTITY_FILES if (directory / n).is_file()]


def directory_identity(directory: str | Path) -> str:
    """``<directory>@sha256:<digest>``: where a model is and what its weights, config and tokenizer are. Hashes are
    remembered by (size, mtime), so a second call does not re-read the weights."""
    directory = Path(directory).resolve()
    h = hashlib.sha256()
    for f in identity_files(directory):
        h.update(f"{f.name}\t{file_sha256(f)}\n".encode())
    return f"{directory}@sha256:{h.hexdigest()}"


def cache_file(out_dir: str | Path, identity: str) -> Path:
    """The JSONL file holding one model identity's answers under ``out_dir``."""
    where, _, _ = identity.partition("@sha256:")
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(where).name)[:60] or "model"
    return Path(out_dir) / f"{stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.jsonl"


def cache_key(
    identity: str, text: str, template: str, decoding: dict, *, dtype: str = "auto", backend: str = "transformers"
) -> str:
    """A row's key: model identity, rendered prompt text, template, dtype asked for, backend, decoding settings
    (``GenParams.decoding()``)."""
    body = {
        "v": CACHE_VERSION,
        "model": identity,
        "prompt_text": text,
        "template": template,
        "generation": decoding,
        "dtype": dtype,
        "backend": backend,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --------------------------------------------------------------------------------------------- the cache file


@dataclass
class CacheContents:
    """A cache file as read: rows by key, and what was wrong with it."""

    rows: dict[str, dict] = field(default_factory=dict)
    good_bytes: int = 0  # length of the file up to its last complete line
    partial: bool = False
    duplicates: int = 0


def read_cache(
    path: str | Path, what: str = "generation row", fix: str = "delete that line (or the file) to regenerate it"
) -> CacheContents:
    """The rows of an append-only JSONL cache by key (the answer cache, the judge's verdict cache). A half-written
    last line is dropped (``partial``); a broken line anywhere else is an error naming ``file:line``, ``what`` it
    should be and how to ``fix`` it; a repeated key keeps its first row."""
    out, path = CacheContents(), Path(path)
    if not path.is_file():
        return out
    data = path.read_bytes()
    lines = data.split(b"\n")
    for n, raw in enumerate(lines, start=1):
        last = n == len(lines)
        if last and not raw:
            break
        try:
            row = json.loads(raw)
            if not isinstance(row, dict) or "key" not in row:
                raise ValueError("not a row")
        except ValueError:
            if last:  # no newline after it: the write was interrupted
                out.partial = True
                break
            raise KitError(f"{path}:{n}: not a {what}; {fix}") from None
        if last:  # complete JSON but the newline never made it: keep nothing half-written
            out.partial = True
            break
        out.good_bytes += len(raw) + 1
        if row["key"] in out.rows:
            out.duplicates += 1
        else:
            out.rows[row["key"]] = row
    return out


def warn_if_damaged(cached: CacheContents, path: str | Path) -> None:
    if cached.partial:
        warnings.warn(
            f"{path}: the last line was half-written (an interrupted run); dropped, it is generated again", stacklevel=3
        )


class Appender:
    """Appends rows to a cache file under an exclusive lock, flushed and fsynced per batch."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "a", encoding="utf-8")
        try:
            if fcntl is not None:
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise KitError(
                f"{path}: another run is writing this model's answers; wait for it or use another cache folder"
            ) from None

    def reread(self) -> CacheContents:
        """The file's rows as read under the lock, a half-written last line cut off (still reported)."""
        cached = read_cache(self.path)
        if cached.partial:
            self.fh.flush()
            os.truncate(self.path, cached.good_bytes)
        return cached

    def write(self, rows: Sequence[dict]) -> None:
        for row in rows:
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()  # releases the lock
