"""One notebook: papermill runs it in a child process, the executed notebook tells which cell failed (or was running
when the timeout or a signal hit), and nbconvert renders it to HTML without CDN scripts. Also the Jupyter kernel that
runs this very Python.

Stopping a notebook (the timeout, or SIGINT/SIGTERM to the runner under ``stop_on_signals``) stops its whole process
tree: papermill, the kernel (jupyter_client starts it in a session of its own) and the training workers the kernel
forked — SIGTERM, then SIGKILL for what is still alive a few seconds later. Checkpoints are written under a temporary
name and renamed (``fsdp.py``), so the latest one stays resumable.

``pipeline.py`` runs a study's notebooks in order through ``execute_notebook`` and ``render_html``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import yaml
from ipykernel.kernelspec import install as install_kernel
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbconvert import HTMLExporter

from .base import KitError, atomic_write, now

HTML_TEMPLATE_DIR = Path(__file__).parent / "resources" / "templates" / "nbconvert"
KERNEL_NAME = "llm4academic"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_GRACE_S = 5.0  # after SIGTERM, what is still alive then gets SIGKILL


class Interrupted(KitError):
    """SIGINT or SIGTERM stopped the run (raised in the main thread by ``stop_on_signals``)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum  # as a shell reports a process a signal ended
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise ``Interrupted`` — also where a shell started the run with SIGINT
    ignored (a background job), which Python would otherwise leave ignored. Once raised, further signals are
    ignored until the block ends, so the clean-up (stopping the notebook's processes, the report) runs to its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------------------------- process trees


def _parents() -> dict[int, int]:
    """pid → parent pid of every process (Linux ``/proc``; ``ps`` elsewhere)."""
    out: dict[int, int] = {}
    if os.path.isdir("/proc/self"):
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    stat = Path(f"/proc/{name}/stat").read_text()
                except OSError:
                    continue
                fields = stat[stat.rfind(")") + 2 :].split()
                if fields[0] != "Z":  # a zombie is over
                    out[int(name)] = int(fields[1])
        return out
    try:
        ps = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,stat="], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return out
    for line in ps.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not parts[2].startswith("Z"):
            out[int(parts[0])] = int(parts[1])
    return out


def _descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _signal_all(pids: set[int], sig: int) -> None:
    own = os.getpgid(0)
    for pid in pids:
        with contextlib.suppress(OSError):
            pgid = os.getpgid(pid)
            if pgid != own:  # the whole group (papermill's, the kernel's with its workers), never the runner's
                os.killpg(pgid, sig)
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def stop_process_tree(root: int, grace_s: float = STOP_GRACE_S) -> set[int]:
    """SIGTERM to ``root``, every process under it and their process groups; SIGKILL to what is still alive after
    ``grace_s``. Processes that a dying parent leaves behind are followed (they are remembered, not looked up by
    parent again). Returns the pids it signalled."""
    known = _descendants({root}, _parents())
    _signal_all(known, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        parents = _parents()
        new = _descendants(known & set(parents), parents) - known  # started after the first look
        known |= new
        _signal_all(new, signal.SIGTERM)
        alive = known & set(parents)
        if not alive:
            return known
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for _ in range(3):
        parents = _parents()
        known |= _descendants(known & set(parents), parents)
        alive = known & set(parents)
        if not alive:
            break
        _signal_all(alive, signal.SIGKILL)
        time.sleep(0.2)
    return known


# --------------------------------------------------------------------------------------------- the kernel


def ensure_kernel() -> str:
    """The Jupyter kernel that runs this very Python (registered with ``--sys-prefix`` if missing)."""
    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        install_kernel(kernel_name=KERNEL_NAME, display_name="Python (llm4academic)", prefix=sys.prefix)
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    if os.path.abspath(spec.argv[0]) != os.path.abspath(sys.executable):
        raise KitError(
            f"the Jupyter kernel {KERNEL_NAME!r} ({spec.resource_dir}) runs {spec.argv[0]}, not this "
            f"environment's {sys.executable}. Re-register it: {sys.executable} -m ipykernel install "
            f"--sys-prefix --name {KERNEL_NAME}"
        )
    return KERNEL_NAME


# --------------------------------------------------------------------------------------------- one notebook


def _failure(nb_path: Path, timed_out: bool) -> dict[str, Any] | None:
    """Which cell failed (or was running when the timeout hit), read from papermill's cell metadata."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception:  # a notebook killed mid-write is reported as such
        return None
    want = "running" if timed_out else "failed"
    for i, cell in enumerate(nb.cells, 1):
        if cell.get("metadata", {}).get("papermill", {}).get("status") != want:
            continue
        info: dict[str, Any] = {
            "cell": i,
            "execution_count": cell.get("execution_count"),
            "source": cell.source.strip().splitlines()[0][:200] if cell.source.strip() else "",
        }
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                info.update(ename=out.get("ename"), evalue=str(out.get("evalue"))[:2000])
        return info
    return None


WIDGET_MIME = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")


def offline_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what would need a CDN to display: ipywidgets state and views (progress bars; their ``text/plain``
    fallback stays)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data:
                for mime in WIDGET_MIME:
                    data.pop(mime, None)
    return nb


def render_html(nb_path: Path, html_path: Path, show_inputs: bool) -> None:
    """nbconvert's lab page without its CDN scripts (require.js, MathJax, the widget manager): tables and
    figures are inline, so the page reads offline."""
    exporter = HTMLExporter(
        template_name="offline",
        extra_template_basedirs=[str(HTML_TEMPLATE_DIR)],
        exclude_input=not show_inputs,
        exclude_input_prompt=not show_inputs,
        exclude_output_prompt=not show_inputs,
    )
    body, _ = exporter.from_notebook_node(offline_notebook(nbformat.read(nb_path, as_version=4)))
    atomic_write(html_path, body)


def execute_notebook(
    src: Path, out: Path, parameters: dict, *, kernel: str, cwd: Path, timeout_s: int
) -> dict[str, Any]:
    """Run one notebook with papermill in a child process; returns its status record (never raises on failure):
    ``ok``, ``failed``, ``timeout`` or ``interrupted`` (an ``Interrupted`` raised while it ran; its process tree is
    stopped either way)."""
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    partial.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        str(src),
        str(partial),
        "-k",
        kernel,
        "--cwd",
        str(cwd),
        "-y",
        yaml.safe_dump(parameters, allow_unicode=True),
        "--progress-bar",
        "--log-level",
        "WARNING",
        "--request-save-on-cell-execute",
    ]
    t0 = time.monotonic()
    started = now()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=None, text=True)
    timed_out = False
    stopped: Interrupted | None = None
    try:
        stdout, _ = proc.communicate(timeout=timeout_s)
    except (subprocess.TimeoutExpired, Interrupted) as e:
        timed_out = isinstance(e, subprocess.TimeoutExpired)
        stopped = None if timed_out else e
        stop_process_tree(proc.pid)
        try:
            stdout, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
    duration = time.monotonic() - t0
    rec: dict[str, Any] = {"started": started, "ended": now(), "duration_s": round(duration, 2)}
    if proc.returncode == 0 and not timed_out and not stopped:
        rec["status"] = "ok"
    else:
        rec["status"] = "interrupted" if stopped else "timeout" if timed_out else "failed"
        cell = _failure(partial, timed_out or bool(stopped)) if partial.exists() else None
        if stopped:
            rec["error"] = {**(cell or {}), "ename": "Interrupted", "evalue": str(stopped)}
            rec["signal"] = signal.Signals(stopped.signum).name
        elif timed_out:
            rec["error"] = {
                **(cell or {}),
                "ename": "Timeout",
                "evalue": f"stopped after {timeout_s} s (report.notebook_timeout_s)",
            }
        else:
            tail = "\n".join((stdout or "").strip().splitlines()[-5:])
            rec["error"] = cell or {"ename": "PapermillError", "evalue": tail or f"exit code {proc.returncode}"}
    if partial.exists():
        os.replace(partial, out)
    return rec
