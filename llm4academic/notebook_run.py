"""One notebook: papermill runs it in a child process whose process group a timeout kills, the executed notebook
tells which cell failed (or was running when the timeout hit), and nbconvert renders it to HTML without CDN scripts.
Also the Jupyter kernel that runs this very Python.

``pipeline.py`` runs a study's notebooks in order through ``execute_notebook`` and ``render_html``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
    """Run one notebook with papermill in a child process; returns its status record (never raises on failure)."""
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
    try:
        stdout, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
    duration = time.monotonic() - t0
    rec: dict[str, Any] = {"started": started, "ended": now(), "duration_s": round(duration, 2)}
    if proc.returncode == 0 and not timed_out:
        rec["status"] = "ok"
    else:
        rec["status"] = "timeout" if timed_out else "failed"
        cell = _failure(partial, timed_out) if partial.exists() else None
        if timed_out:
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
