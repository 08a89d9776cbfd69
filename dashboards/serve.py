"""``fer dashboard serve``: the review page of a sweep, live, while it runs.

A read-only ``ThreadingHTTPServer`` with exactly two routes:

- ``GET /`` (or ``/index.html``): the page, rebuilt from the experiment folder when its files
  changed since the last build (Tune's trial folders while the sweep runs, the tables once it ends);
- ``GET /version``: ``{"version": ...}``, a fingerprint of those files; the page polls it every
  ``refresh_s`` seconds and reloads itself when it changes.

Nothing else is served (no files, no directory listing): other paths are 404, methods other than
GET and HEAD are 405. It binds 127.0.0.1 unless a host is given: a sweep's page shows paths and
commands, so exposing it is a decision, not a default.

Host names (against DNS rebinding: a page on ``evil.example`` whose name is re-pointed at 127.0.0.1
could otherwise read this server from the user's browser): a request is answered only when its
``Host`` header is an IP address, ``localhost`` (or a ``*.localhost`` name, which browsers resolve
to loopback themselves), the name the server was bound to, this machine's host name when bound to
all interfaces, or a name given with ``--allow-host``; anything else gets 403. A rebinding attack
always carries the attacker's own name, so it is refused.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from fer_core.errors import FerError

from .html import LIVE_JS, esc, json_script

__all__ = ["DashboardServer", "make_server", "experiment_version", "host_allowed", "allowed_names", "DEFAULT_HOST",
           "DEFAULT_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Inline scripts only (plotly.js is inlined; its WebGL traces compile shaders with eval); fetch only here.
    "Content-Security-Policy": ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
                                "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
                                "connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'"),
}


def allowed_names(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host names (lowercase) a server bound to ``bound`` answers to, besides IP addresses and localhost."""
    names = {n.strip().lower().rstrip(".") for n in extra if n.strip()}
    bound = bound.strip().lower().rstrip(".")
    if bound in ("", "0.0.0.0", "::"):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    elif not _is_ip(bound):
        names.add(bound)
    return frozenset(names)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request whose ``Host`` header is ``header`` may be answered (see the module doc)."""
    if header is None:                      # HTTP/1.0 clients without a Host header: not a browser
        return True
    if "*" in names:
        return True
    host = header.strip().lower()
    if host.startswith("["):                # [::1]:8050
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:              # name:8050 (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    return _is_ip(host) or host == "localhost" or host.endswith(".localhost") or host in names


def experiment_version(exp_dir: str | Path) -> str:
    """A fingerprint of the files a page is built from (names, sizes, modification times); any storage URI."""
    from experiment_store import ExperimentStore

    try:
        return ExperimentStore(str(exp_dir)).fingerprint()
    except FerError:
        return "unreachable"


class DashboardServer:
    """Builds and caches the page of one experiment folder; thread-safe."""

    def __init__(self, exp_dir: str | Path, *, refresh_s: int = 10):
        self.exp_dir = str(exp_dir)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: tuple[str, int, bytes] | None = None       # (version, status, body)

    def version(self) -> str:
        return experiment_version(self.exp_dir)

    def page(self) -> tuple[int, bytes]:
        with self._lock:
            version = self.version()
            if self._cached is None or self._cached[0] != version:
                self._cached = (version, *self._build(version))
            return self._cached[1], self._cached[2]

    def _build(self, version: str) -> tuple[int, bytes]:
        from sweeps.experiment import load_experiment

        from .report import build_report

        try:
            return HTTPStatus.OK, build_report(load_experiment(self.exp_dir), live_version=version).encode()
        except FerError as exc:          # not (yet) an experiment: say so, and reload when files appear
            return HTTPStatus.SERVICE_UNAVAILABLE, self._waiting(version, f"Waiting for the sweep: {exc}")
        except Exception as exc:  # noqa: BLE001 - a half-written file must not take the server down
            print(f"fer dashboard serve: building the page failed: {exc!r}", file=sys.stderr)
            return HTTPStatus.INTERNAL_SERVER_ERROR, self._waiting(version, f"The page could not be built: {exc!r}")

    def _waiting(self, version: str, message: str) -> bytes:
        return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fer dashboard</title></head>"
                f"<body><p>{esc(message)}</p>{json_script('page-version', version)}"
                f"<script>{LIVE_JS % (self.refresh_s * 1000)}</script></body></html>\n").encode()


def _handler(dashboard: DashboardServer, quiet: bool, names: frozenset[str]):
    class Handler(BaseHTTPRequestHandler):
        def version_string(self) -> str:
            return "fer-dashboard"

        def _send(self, status: int, body: bytes, content_type: str, *, head: bool = False, extra: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _route(self, head: bool) -> None:
            host = self.headers.get("Host")
            if not host_allowed(host, names):
                assert host is not None  # host_allowed answers every request without a Host header
                shown = host[:100].encode("ascii", "replace").decode()
                print(f"fer dashboard serve: refused a request for host {shown!r} (not this server's name; "
                      "--allow-host NAME serves it under that name)", file=sys.stderr)
                self._send(HTTPStatus.FORBIDDEN, b"forbidden: this server does not answer to that host name; "
                           b"start it with --allow-host NAME to serve it under NAME\n", "text/plain; charset=utf-8",
                           head=head)
                return
            path = urlsplit(self.path).path
            if path in ("/", "/index.html"):
                status, body = dashboard.page()
                self._send(status, body, "text/html; charset=utf-8", head=head)
            elif path == "/version":
                body = json.dumps({"version": dashboard.version()}).encode()
                self._send(HTTPStatus.OK, body, "application/json", head=head)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found: this server serves only / and /version\n",
                           "text/plain; charset=utf-8", head=head)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._route(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._route(head=True)

        def _refuse(self) -> None:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: only GET and HEAD\n", "text/plain; charset=utf-8",
                       extra={"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
            if not quiet:
                super().log_message(format, *args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(exp_dir: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, refresh_s: int = 10,
                quiet: bool = False, allow_hosts: Iterable[str] = ()) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (``port=0``: any free port); call ``serve_forever()`` on it.

    ``allow_hosts``: extra host names it answers to (``*``: any; see the module doc).
    """
    # exp_dir may not exist yet: the page says it waits, and reloads when it appears
    cls = _Server6 if ":" in host else _Server
    try:
        return cls((host, port), _handler(DashboardServer(exp_dir, refresh_s=refresh_s), quiet,
                                          allowed_names(host, allow_hosts)))
    except OSError as exc:
        raise FerError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port") from None
