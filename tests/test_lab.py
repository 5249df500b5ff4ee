"""`make lab` starts a JupyterLab that answers, also as root (containers, cluster images): scripts/lab, which the
Makefile runs, adds --allow-root there and says so."""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_status(url: str, token: str) -> int | None:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None  # not listening yet


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL if it is still there after timeout_s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)


def test_make_lab_runs_scripts_lab():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/lab" in recipe
    script = (ROOT / "scripts" / "lab").read_text()
    assert "--allow-root" in script and "--no-browser" in script and os.access(ROOT / "scripts" / "lab", os.X_OK)


def test_lab_starts_and_answers_as_the_current_user(tmp_path):
    """As `make lab` starts it (scripts/lab, the Makefile's Jupyter dirs), as whoever runs the tests (root here):
    GET /api answers 200 within a minute; the server is stopped through its process group. About 4 s on 2 CPU cores,
    so not marked slow."""
    port, token = free_port(), secrets.token_hex(16)
    cache = tmp_path / "cache"
    env = dict(
        os.environ,
        JUPYTER=str(ROOT / ".venv" / "bin" / "jupyter"),
        JUPYTER_CONFIG_DIR=str(cache / "jupyter" / "config"),
        JUPYTER_DATA_DIR=str(cache / "jupyter" / "data"),
        JUPYTER_RUNTIME_DIR=str(cache / "jupyter" / "runtime"),
        IPYTHONDIR=str(cache / "ipython"),
    )
    log = tmp_path / "lab.log"
    args = [
        str(ROOT / "scripts" / "lab"),
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        status, deadline = None, time.monotonic() + 60
        while status != 200 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            status = api_status(f"http://127.0.0.1:{port}/api", token)
        text = log.read_text(errors="replace")
        assert status == 200, f"JupyterLab did not answer (status {status}, exit {proc.poll()}):\n{text[-3000:]}"
        assert api_status(f"http://127.0.0.1:{port}/api/contents", "wrong-token") == 403  # the token is required
        if os.geteuid() == 0:
            assert "running as root" in text and "--allow-root" in text
            assert "Running as root is not recommended" not in text
    finally:
        stop(proc)
    assert proc.returncode is not None
