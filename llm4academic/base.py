"""The bottom layer every module may import: the kit's error type, where things live, atomic writes, JSON reading,
provenance (git, file hashes), the process environment, a YAML loader that refuses repeated keys and the hook that
ends a worker with its parent. Imports nothing of the kit and no torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCES_DIR = PACKAGE_DIR / "resources"
PKG_PREFIX = "pkg:"  # paths inside the package's shipped resources, e.g. pkg:instruct/alpaca/...


class KitError(Exception):
    """An error a user can act on: the CLI prints its message, not a traceback."""

    exit_code = 2


# --------------------------------------------------------------------------------------------- where things live


def project_root() -> Path | None:
    """The checkout the package runs from (editable install), or None for an installed wheel."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() else None


def cache_dir() -> Path:
    """Where the kit keeps state (tiny models, HF cache, Jupyter runtime, temp files): never ``~``."""
    env = os.environ.get("LLM4A_CACHE_DIR")
    if env:
        return Path(env).resolve()
    return ((project_root() or Path.cwd()) / ".cache").resolve()


def default_reports_dir() -> Path:
    """``reports/`` of the checkout (or of the working directory for an installed wheel)."""
    return (project_root() or Path.cwd()) / "reports"


def resolve_data_path(value: str, base_dir: Path) -> Path:
    """``pkg:…`` → inside the package's resources; relative → against the params file's folder."""
    if value.startswith(PKG_PREFIX):
        return (RESOURCES_DIR / value[len(PKG_PREFIX) :]).resolve()
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base_dir / p).resolve()


def setup_environment() -> dict[str, str]:
    """Point HF, matplotlib, Jupyter, IPython and temp dirs at the project cache unless already set.

    Called by the CLI, the runner and the notebooks so that kernels started for a study inherit the same settings.
    Returns the variables it set.
    """
    base = cache_dir()
    wanted = {
        "LLM4A_CACHE_DIR": base,
        "HF_HOME": base / "huggingface",
        "MPLCONFIGDIR": base / "matplotlib",
        "JUPYTER_CONFIG_DIR": base / "jupyter" / "config",
        "JUPYTER_DATA_DIR": base / "jupyter" / "data",
        "JUPYTER_RUNTIME_DIR": base / "jupyter" / "runtime",
        "IPYTHONDIR": base / "ipython",
        "TMPDIR": base / "tmp",
    }
    done = {}
    for key, path in wanted.items():
        if not os.environ.get(key):
            os.environ[key] = str(path)
            done[key] = str(path)
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return done


def exit_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so a
    training worker never outlives the kernel or launcher that started it; a parent already gone ends it now.
    Returns whether the hook is armed (False off Linux, where the runner's process-tree stop is what remains)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(sig), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if parent == 1 or os.getppid() != parent:  # the parent died before the hook was armed
        os.kill(os.getpid(), sig)
    return True


# --------------------------------------------------------------------------------------------- files

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any, default=str) -> None:
    """``obj`` as indented UTF-8 JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, default=default))


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's contents; ``None`` when it does not exist. Broken JSON is a ``KitError`` naming file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise KitError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def unique_key_loader(error: type[Exception]) -> type[yaml.SafeLoader]:
    """A ``SafeLoader`` that raises ``error`` on a mapping key given twice, naming both lines (PyYAML silently keeps
    the last one). Set the loader's ``name`` to the file's path for the message."""

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise error(f"{self.name}:{line}: {key!r} appears twice (first on line {seen[key]})")
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    break
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- provenance


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def git_info() -> dict[str, Any]:
    """sha and dirty flag of the kit's checkout (``None`` outside git)."""
    root = project_root() or Path.cwd()

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if sha else None
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_num_proc(num_proc: int | None) -> int:
    """``None`` = every usable CPU; at least 1."""
    return max(1, usable_cpus() if num_proc is None else int(num_proc))


def cache_batches(lengths, rows: int, run_cost: float, new_tokens: int = 0) -> list[list[int]]:
    """``length_runs`` for batches bounded by a cache: at most ``rows`` rows of the longest length (+ ``new_tokens``)
    in padded positions, at most ``4 × rows`` rows, ``run_cost`` per batch. Generation and the judge batch this way."""
    if not lengths:
        return []
    budget = rows * (max(lengths) + new_tokens)
    return length_runs(lengths, run_cost=run_cost, extra=new_tokens, max_rows=4 * rows, budget=budget)


def length_runs(
    lengths, *, run_cost: float, extra: int = 0, max_rows: int | None = None, budget: float | None = None
) -> list[list[int]]:
    """Indices of ``lengths`` cut into runs of their length order (longest first, ties in input order) — batches
    whose rows share a length. Each run is padded to its first (longest) row, plus ``extra`` positions per row; the
    cut minimises the padded positions of all runs + ``run_cost`` per run (dynamic programming), with at most
    ``max_rows`` rows per run and, for runs of more than one row, at most ``budget`` padded positions. Generation
    batches, prefill groups and judge batches are cut this way."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        lowest = max(j - max_rows, 0) if max_rows else 0
        for i in range(j - 1, lowest - 1, -1):  # order[i:j] in one run, as wide as order[i]
            size = (j - i) * (lengths[order[i]] + extra)  # grows as i falls
            alone = run_cost + size
            if i < j - 1 and ((budget is not None and size > budget) or alone >= best[j]):
                break
            if best[i] + alone < best[j]:
                best[j], cut[j] = best[i] + alone, i
    runs, j = [], len(order)
    while j:
        runs.append(order[cut[j] : j])
        j = cut[j]
    return runs[::-1]
