"""The machine a benchmark runs on: CPU model, memory, load, this process's resident memory, a free port.

Standard library only, so that ``benchmarks/gpu.py`` can use it before anything heavy is imported.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import socket
from pathlib import Path


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (also used by benchmarks/gpu.py)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def memory_gb() -> float | None:
    """Total memory in GiB (/proc/meminfo)."""
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return round(int(m.group(1)) / 2**20, 1) if m else None


def _proc_status_mb(field: str) -> float | None:
    try:
        m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def rss_mb() -> float | None:
    """This process's resident memory now, in MB."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory, in MB (since the last ``reset_peak_rss``)."""
    mb = _proc_status_mb("VmHWM")
    if mb is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; a lifetime peak
    return mb


def reset_peak_rss() -> bool:
    """Linux: restart the process's peak-RSS counter (``/proc/self/clear_refs`` ← 5), so each variant gets its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
