"""``fer dashboard serve`` answers only to its own host names (DNS rebinding), and says so when exposed."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dashboards.serve import allowed_names, host_allowed, make_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path):
    def start(**kwargs):
        srv = make_server(tmp_path / "exp", port=0, quiet=True, **kwargs)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return srv.server_address[1]

    started: list = []
    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def _get(port: int, host_header: str | None, path: str = "/version") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    if host_header is not None:
        conn.putheader("Host", host_header)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_foreign_host_name_is_refused(server):
    port = server()
    assert _get(port, "evil.example") == 403
    assert _get(port, f"evil.example:{port}", "/") == 403
    assert _get(port, f"127.0.0.1.evil.example:{port}") == 403
    for ok in (
        f"127.0.0.1:{port}",
        "127.0.0.1",
        f"localhost:{port}",
        "LOCALHOST",
        f"[::1]:{port}",
        f"app.localhost:{port}",
        None,
    ):
        assert _get(port, ok) == 200, ok
    assert _get(port, f"localhost:{port}", "/") == 503  # the page itself: waiting for the sweep


def test_allow_host_adds_names(server):
    port = server(allow_hosts=["dash.team.example"])
    assert _get(port, f"dash.team.example:{port}") == 200
    assert _get(port, "other.example") == 403
    port = server(allow_hosts=["*"])
    assert _get(port, "anything.example") == 200


def test_bound_names():
    assert "myhost.internal" in allowed_names("myhost.internal")
    assert allowed_names("127.0.0.1") == frozenset()
    assert socket.gethostname().lower() in allowed_names("0.0.0.0")
    names = allowed_names("127.0.0.1")
    assert not host_allowed("attacker.com", names) and host_allowed("10.1.2.3:80", names)
    assert not host_allowed("localhost.attacker.com", names)


@pytest.mark.slow
@pytest.mark.e2e
def test_binding_all_interfaces_warns(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fer_cli", "dashboard", "serve", str(tmp_path), "--host", "0.0.0.0", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        deadline = time.time() + 60
        while time.time() < deadline and not any("warning" in line for line in lines):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.kill()
        proc.wait()
    text = "".join(lines)
    assert "warning: --host 0.0.0.0 exposes" in text, text
