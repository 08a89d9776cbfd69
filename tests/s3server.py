"""A real S3-compatible server on 127.0.0.1 for the tests: moto's standalone server, in its own process.

Fixtures (imported by ``conftest.py``):

- ``s3_server`` (session): starts ``python -m moto.server -H 127.0.0.1 -p PORT`` on a free port, waits
  until it answers HTTP and stops it at the end of the session. Yields an ``S3Server`` with ``endpoint``
  (``http://127.0.0.1:PORT``), ``env`` (the standard AWS variables a process needs to use it),
  ``subprocess_env()`` (``os.environ`` + ``env``, minus variables that would send requests elsewhere),
  ``filesystem()`` (a pyarrow ``S3FileSystem`` on the server) and ``new_bucket()`` (a fresh, uniquely
  named bucket). Skips the test, with the reason, only when moto is not installed.
- ``s3_bucket`` (function): a fresh bucket for one test.

How the code under test finds the server: pyarrow (26) reads ``AWS_ENDPOINT_URL`` (and
``AWS_ENDPOINT_URL_S3``, which wins over it) through the AWS SDK, so plain ``s3://bucket/path`` URIs work
in any process with ``env`` in its environment, and Ray workers of a local Ray started by that process
inherit it. In-process tests use ``s3_server.apply(monkeypatch)``. The explicit URI form
``s3://bucket/path?endpoint_override=127.0.0.1:PORT&scheme=http`` (``S3Server.uri``) needs only the
credentials in the environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"

# Variables that would point the AWS SDK at other credentials, profiles or endpoints.
# AWS_ENDPOINT_URL_S3 in particular takes precedence over AWS_ENDPOINT_URL (checked with pyarrow 26).
_FOREIGN = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    host_port: str  # 127.0.0.1:PORT
    env: dict[str, str] = field(default_factory=dict)

    def subprocess_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``env`` applied and foreign AWS settings removed."""
        out = dict(os.environ if base is None else base)
        for key in _FOREIGN:
            out.pop(key, None)
        out.update(self.env)
        return out

    def apply(self, monkeypatch) -> None:
        """Point this process's AWS settings at the server for one test (undone by ``monkeypatch``)."""
        for key in _FOREIGN:
            monkeypatch.delenv(key, raising=False)
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)

    def filesystem(self, **kwargs):
        """A pyarrow ``S3FileSystem`` on this server (explicit settings: needs no environment)."""
        from pyarrow import fs as pafs

        opts = dict(
            endpoint_override=self.endpoint,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )
        opts.update(kwargs)
        return pafs.S3FileSystem(**opts)

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a bucket with a unique name (``<prefix>-<12 hex>``) and return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return name

    def uri(self, bucket: str, path: str = "") -> str:
        """``s3://bucket/path`` with the endpoint in the URI itself (pyarrow's query options)."""
        return f"s3://{bucket}/{path.lstrip('/')}?endpoint_override={self.host_port}&scheme=http"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # moto answers GET / with 200
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _start(log_dir: Path, attempts: int = 3, timeout: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Start moto's server; retry on another port if the chosen one was taken meanwhile."""
    last = ""
    for attempt in range(attempts):
        port = _free_port()
        log = log_dir / f"moto-{port}.log"
        env = dict(os.environ)
        env.pop("MOTO_PORT", None)
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _answers(f"http://127.0.0.1:{port}/"):
                return proc, port
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        last = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"moto server did not start after {attempts} attempts; last log:\n{last}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    try:
        import moto  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"moto is not installed ({exc}); pip install 'moto[server]' (extra 'test' of pyproject.toml)")
    log_dir = tmp_path_factory.mktemp("moto")
    proc, port = _start(log_dir)
    endpoint = f"http://127.0.0.1:{port}"
    none = str(log_dir / "no-such-aws-file")  # no shared config or credentials file of the host
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",  # never wait for the instance metadata service
        "AWS_CONFIG_FILE": none,
        "AWS_SHARED_CREDENTIALS_FILE": none,
    }
    try:
        yield S3Server(endpoint=endpoint, host_port=f"127.0.0.1:{port}", env=env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the session's server."""
    return s3_server.new_bucket()
