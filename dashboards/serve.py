"""``fer dashboard serve``: the review page of a sweep, live, while it runs.

A read-only ``ThreadingHTTPServer`` with exactly two routes:

- ``GET /`` (or ``/index.html``): the page, rebuilt from the experiment folder when its files
  changed since the last build (Tune's trial folders while the sweep runs, the tables once it ends);
- ``GET /version``: ``{"version": ...}``, a fingerprint of those files; the page polls it every
  ``refresh_s`` seconds and reloads itself when it changes.

Served a root (a folder of experiments, not itself one: ``fer dashboard serve ROOT``), the routes are:

- ``GET /``: the index of every experiment under the root (``dashboards.index``), rebuilt at most
  every ``INDEX_TTL_S`` seconds, so experiments created after the server started appear;
- ``GET /e/<name>/`` and ``/e/<name>/version``: the live page of the experiment ``<name>``, as above;
- ``GET /compare?a=<name>&b=<name>``: two experiments side by side (``dashboards.compare``).

``<name>`` must be the name of an experiment folder directly under the root, as listed there now:
anything with a separator, ``.``/``..`` (percent-encoded or not) or not in the listing is 404, so no
request reaches a file outside the experiments or a folder that is not one.

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
import time
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fer_core.errors import FerError

from .html import LIVE_JS, esc, json_script

__all__ = [
    "DashboardServer",
    "IndexServer",
    "make_server",
    "experiment_version",
    "host_allowed",
    "allowed_names",
    "serves_index",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "INDEX_TTL_S",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
#: The index of a root is rebuilt at most this often (seconds): new experiments show within it.
INDEX_TTL_S = 5.0
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Inline scripts only (plotly.js is inlined; its WebGL traces compile shaders with eval); fetch only here.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
        "connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'"
    ),
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
    if header is None:  # HTTP/1.0 clients without a Host header: not a browser
        return True
    if "*" in names:
        return True
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:8050
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:  # name:8050 (a bare IPv6 address has several colons)
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
        self._cached: tuple[str, int, bytes] | None = None  # (version, status, body)

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
        except FerError as exc:  # not (yet) an experiment: say so, and reload when files appear
            return HTTPStatus.SERVICE_UNAVAILABLE, self._waiting(version, f"Waiting for the sweep: {exc}")
        except Exception as exc:  # noqa: BLE001 - a half-written file must not take the server down
            print(f"fer dashboard serve: building the page failed: {exc!r}", file=sys.stderr)
            return HTTPStatus.INTERNAL_SERVER_ERROR, self._waiting(version, f"The page could not be built: {exc!r}")

    def respond(self, path: str, query: str) -> tuple[int, bytes, str, dict]:
        """(status, body, content type, extra headers) of a request for ``path``."""
        if path in ("/", "/index.html"):
            status, body = self.page()
            return status, body, _HTML, {}
        if path == "/version":
            return HTTPStatus.OK, json.dumps({"version": self.version()}).encode(), "application/json", {}
        return HTTPStatus.NOT_FOUND, b"not found: this server serves only / and /version\n", _TEXT, {}

    def _waiting(self, version: str, message: str) -> bytes:
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>fer dashboard</title></head>'
            f"<body><p>{esc(message)}</p>{json_script('page-version', version)}"
            f"<script>{LIVE_JS % (self.refresh_s * 1000)}</script></body></html>\n"
        ).encode()


def serves_index(uri: str | Path) -> bool:
    """Whether ``uri`` is a root of experiments: an existing folder that is not an experiment itself and
    holds at least one (``serve`` then serves the index; otherwise the one experiment, as before)."""
    from fer_core.storage import StorageError, locate

    from .index import experiment_names, is_experiment

    try:
        loc = locate(str(uri))
        if not loc.is_dir() or is_experiment(loc):
            return False
        return bool(experiment_names(loc)[0])
    except StorageError:
        return False


_NAV = b'<main><nav class="crumbs"><a href="%s">&larr; all experiments</a></nav>'


class IndexServer:
    """The index of a root of experiments, each experiment's live page and comparisons; thread-safe."""

    def __init__(self, root: str | Path, *, refresh_s: int = 10, ttl_s: float = INDEX_TTL_S):
        from .index import open_root

        self.root = open_root(str(root))
        self.refresh_s, self.ttl_s = refresh_s, ttl_s
        self._lock = threading.Lock()
        self._names: tuple[float, list[str], list[str]] | None = None  # (when, experiments, other folders)
        self._index: tuple[float, bytes] | None = None
        self._pages: dict[str, DashboardServer] = {}
        self._compared: dict[tuple, bytes] = {}

    def names(self, *, fresh: bool = False) -> tuple[list[str], list[str]]:
        from .index import experiment_names

        with self._lock:
            if fresh or self._names is None or time.monotonic() - self._names[0] > self.ttl_s:
                self._names = (time.monotonic(), *experiment_names(self.root))
            return self._names[1], self._names[2]

    def resolve(self, name: str) -> str | None:
        """``name`` when it is an experiment folder directly under the root (listed again if not seen yet)."""
        from .index import safe_name

        if not safe_name(name):
            return None
        if name in self.names()[0] or name in self.names(fresh=True)[0]:
            return name
        return None

    def _where(self, name: str) -> str:
        return self.root.child(name).uri

    def index_page(self) -> bytes:
        from .index import build_index, read_rows

        with self._lock:
            cached = self._index
        if cached is not None and time.monotonic() - cached[0] <= self.ttl_s:
            return cached[1]
        t0 = time.perf_counter()
        names, other = self.names(fresh=True)
        rows = read_rows(self.root, names)
        body = build_index(self.root, rows, serve=True, skipped=other, elapsed_s=time.perf_counter() - t0).encode()
        with self._lock:
            self._index = (time.monotonic(), body)
        return body

    def experiment(self, name: str) -> DashboardServer:
        with self._lock:
            if name not in self._pages:
                self._pages[name] = DashboardServer(self._where(name), refresh_s=self.refresh_s)
            return self._pages[name]

    def compare(self, a: str, b: str) -> tuple[int, bytes]:
        from sweeps.experiment import load_experiment

        from .compare import build_compare

        key = (a, b, experiment_version(self._where(a)), experiment_version(self._where(b)))
        with self._lock:
            if key in self._compared:
                return HTTPStatus.OK, self._compared[key]
        try:
            body = build_compare(load_experiment(self._where(a)), load_experiment(self._where(b))).encode()
        except FerError as exc:
            return HTTPStatus.SERVICE_UNAVAILABLE, f"cannot compare {a} and {b}: {exc}\n".encode()
        body = body.replace(b"<main>", _NAV % b"./", 1)
        with self._lock:
            self._compared = {k: v for k, v in list(self._compared.items())[-3:]}
            self._compared[key] = body
        return HTTPStatus.OK, body

    def respond(self, path: str, query: str) -> tuple[int, bytes, str, dict]:
        """(status, body, content type, extra headers) of a request for ``path`` (percent-encoded)."""
        missing: tuple[int, bytes, str, dict] = (
            HTTPStatus.NOT_FOUND,
            b"not found: this server serves /, /e/<experiment>/ and /compare?a=<experiment>&b=<experiment>\n",
            _TEXT,
            {},
        )
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, self.index_page(), _HTML, {}
        if path == "/compare":
            args = parse_qs(query, keep_blank_values=True)
            if any(len(args.get(k) or []) != 1 for k in ("a", "b")):
                return missing
            a, b = self.resolve(args["a"][0]), self.resolve(args["b"][0])
            if a is None or b is None:
                return missing
            status, body = self.compare(a, b)
            return status, body, _HTML if status == HTTPStatus.OK else _TEXT, {}
        parts = path.split("/")
        if len(parts) < 3 or parts[:2] != ["", "e"]:
            return missing
        name = self.resolve(unquote(parts[2], errors="strict"))
        if name is None:
            return missing
        if len(parts) == 3:  # /e/<name>: the page's relative links (version, ../../) need the slash
            return HTTPStatus.MOVED_PERMANENTLY, b"", _TEXT, {"Location": f"{quote(name, safe='')}/"}
        rest = "/".join(parts[3:])
        if rest not in ("", "index.html", "version"):
            return missing
        page = self.experiment(name)
        if rest == "version":
            return HTTPStatus.OK, json.dumps({"version": page.version()}).encode(), "application/json", {}
        status, body = page.page()
        return status, body.replace(b"<main>", _NAV % b"../../", 1), _HTML, {}


def _handler(dashboard: DashboardServer | IndexServer, quiet: bool, names: frozenset[str]):
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
                print(
                    f"fer dashboard serve: refused a request for host {shown!r} (not this server's name; "
                    "--allow-host NAME serves it under that name)",
                    file=sys.stderr,
                )
                self._send(
                    HTTPStatus.FORBIDDEN,
                    b"forbidden: this server does not answer to that host name; "
                    b"start it with --allow-host NAME to serve it under NAME\n",
                    "text/plain; charset=utf-8",
                    head=head,
                )
                return
            parts = urlsplit(self.path)
            try:
                status, body, content_type, extra = dashboard.respond(parts.path, parts.query)
            except UnicodeDecodeError:
                status, body, content_type, extra = HTTPStatus.NOT_FOUND, b"not found\n", _TEXT, {}
            except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
                print(f"fer dashboard serve: {self.path[:200]!r} failed: {exc!r}", file=sys.stderr)
                status, body, content_type, extra = (
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    b"the page could not be built\n",
                    _TEXT,
                    {},
                )
            self._send(status, body, content_type, head=head, extra=extra)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._route(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._route(head=True)

        def _refuse(self) -> None:
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"read-only: only GET and HEAD\n",
                "text/plain; charset=utf-8",
                extra={"Allow": "GET, HEAD"},
            )

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
            if not quiet:
                super().log_message(format, *args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: DashboardServer | IndexServer | None = None  # what it serves (one experiment, or a root's index)


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(
    exp_dir: str | Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    refresh_s: int = 10,
    quiet: bool = False,
    allow_hosts: Iterable[str] = (),
    index: bool | None = None,
) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (``port=0``: any free port); call ``serve_forever()`` on it.

    ``allow_hosts``: extra host names it answers to (``*``: any; see the module doc). ``index``: serve
    ``exp_dir`` as a root of experiments (True), as one experiment (False), or decide (None: a root
    when ``serves_index``).
    """
    # exp_dir may not exist yet: the page says it waits, and reloads when it appears
    if index is None:
        index = serves_index(exp_dir)
    app: DashboardServer | IndexServer = (
        IndexServer(exp_dir, refresh_s=refresh_s) if index else DashboardServer(exp_dir, refresh_s=refresh_s)
    )
    cls = _Server6 if ":" in host else _Server
    try:
        server = cls((host, port), _handler(app, quiet, allowed_names(host, allow_hosts)))
    except OSError as exc:
        raise FerError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port") from None
    server.app = app
    return server
