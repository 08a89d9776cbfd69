"""cluster/requirements.lock stays the environment pyproject.toml asks for, and every cluster
config installs it: fails when the lock drifts from pyproject.toml, from the installed venv, or
when aws.yaml / the KubeRay image stop using it. Reads files and package metadata only (no pip,
no network, no Ray)."""

from __future__ import annotations

import importlib.metadata as md
import platform
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "cluster" / "requirements.lock"
TEST_LOCK = ROOT / "cluster" / "requirements-test.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#\[\]]+)$")


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"{path.name}:{number}: not an exact 'name==version' pin: {raw!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        Version(m.group(2))  # a valid version, or InvalidVersion
        pins[name] = m.group(2)
    return pins


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in pyproject()["project"]["dependencies"]]


def cluster_extras() -> list[Requirement]:
    """The packages scripts/lock.sh adds for the cluster (CLUSTER_EXTRAS="...")."""
    m = re.search(r'^CLUSTER_EXTRAS="([^"]*)"', (ROOT / "scripts" / "lock.sh").read_text(), re.M)
    assert m, "scripts/lock.sh no longer sets CLUSTER_EXTRAS"
    return [Requirement(r) for r in m.group(1).split()]


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    return read_lock(LOCK)


@pytest.fixture(scope="module")
def test_lock() -> dict[str, str]:
    return read_lock(TEST_LOCK)


def test_lock_files_are_exact_unique_pins():
    assert len(read_lock(LOCK)) > 100  # the full transitive set, not just the direct dependencies
    read_lock(TEST_LOCK)


def test_lock_pins_every_dependency_within_pyproject_specifier(lock):
    for req in runtime_requirements() + cluster_extras():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} (pyproject.toml / lock.sh) is not in {LOCK.name}"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={lock[name]}, outside pyproject.toml's {req}"
        )


def test_torch_pins_equal_pyproject(lock):
    exact = {canonicalize_name(r.name): str(r.specifier) for r in runtime_requirements()}
    for name in ("torch", "torchvision"):
        assert exact[name] == f"=={lock[name]}", (name, exact[name], lock[name])


def test_lock_leaves_out_the_project_and_the_test_extra(lock, test_lock):
    assert "fer-sweep" not in lock and "fer-sweep" not in test_lock
    assert not set(lock) & set(test_lock), "a package is pinned in both lock files"
    for req in (Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["test"]):
        name = canonicalize_name(req.name)
        assert name in test_lock, f"test extra {req} is not in {TEST_LOCK.name}"
        assert req.specifier.contains(test_lock[name], prereleases=True), (name, test_lock[name])


def _closure(roots: list[Requirement], pins: dict[str, str]) -> tuple[set[str], set[str], list[str]]:
    """Names reachable from roots through installed metadata (markers for this interpreter), the
    reached names whose requirements could not be read (not installed at their pinned version), and
    the problems met: a requirement missing from pins or pinned outside its specifier."""
    env = default_environment()
    seen: dict[str, set[str]] = {}
    unread: set[str] = set()
    problems: list[str] = []
    todo = [(r, "pyproject.toml") for r in roots]
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{parent} needs {req}: not pinned")
            continue
        if not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{parent} needs {req}: pinned {pins[name]}")
        extras = set(req.extras) - seen.get(name, set())
        if name in seen and not extras:
            continue
        seen.setdefault(name, set()).update(extras)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            unread.add(name)
            continue
        if dist.version != pins[name]:
            unread.add(name)
            continue
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = [""] + sorted(seen[name])
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in wanted):
                todo.append((sub, f"{name}=={pins[name]}"))
    return set(seen), unread, problems


on_lock_platform = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info[:2] == (3, 11)),
    reason="the lock was resolved for CPython 3.11 on Linux x86_64",
)


@on_lock_platform
def test_lock_is_exactly_the_dependency_closure(lock):
    reached, unread, problems = _closure(runtime_requirements() + cluster_extras(), lock)
    assert not problems, "\n".join(problems)
    surplus = sorted(set(lock) - reached)
    assert not surplus, f"pinned but needed by nothing: {surplus}" + (
        f" (or by {sorted(unread)}: not installed at their locked versions, run scripts/setup.sh)" if unread else ""
    )


@on_lock_platform
def test_venv_matches_lock(lock):
    """The environment the tests run in has the cluster's versions of what fer-sweep imports."""
    wrong = {}
    for req in runtime_requirements() + cluster_extras():
        name = canonicalize_name(req.name)
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            have = None
        if have != lock[name]:
            wrong[name] = (have, lock[name])
    assert not wrong, f"installed vs locked (run scripts/setup.sh or scripts/lock.sh): {wrong}"


def test_aws_nodes_install_the_lock():
    config = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    repo_dir = next(remote for remote, local in config["file_mounts"].items() if local in (".", "./"))
    setup = " && ".join(config["setup_commands"])
    assert f"cd {repo_dir}" in setup
    assert "pip install -q --no-deps -r cluster/requirements.lock" in setup
    assert "pip check" in setup
    assert "head_setup_commands" not in config and "worker_setup_commands" not in config, (
        "head and workers must run the same setup"
    )
    assert ".venv" in config.get("rsync_exclude", []), "the local .venv must not be synced to nodes"


def test_image_installs_the_lock():
    lines = [l.strip() for l in (ROOT / "cluster" / "Dockerfile").read_text().splitlines()]
    code = [l for l in lines if l and not l.startswith("#")]
    assert "COPY cluster/requirements.lock /tmp/requirements.lock" in code
    assert "RUN pip install --no-deps -r /tmp/requirements.lock" in code
    assert any(l.startswith("RUN pip install --no-deps --no-build-isolation /app") for l in code)
    assert "&& pip check" in code
    assert code[-1].startswith("USER ") and code[-1] != "USER root"


def test_kuberay_groups_run_one_immutable_image():
    job = yaml.safe_load((ROOT / "cluster" / "kuberay-rayjob.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    images = {c["image"] for c in spec["headGroupSpec"]["template"]["spec"]["containers"]}
    for group in spec["workerGroupSpecs"]:
        images |= {c["image"] for c in group["template"]["spec"]["containers"]}
    assert len(images) == 1, f"head and workers run different images: {images}"
    (image,) = images
    assert image.rsplit("/", 1)[-1].startswith("fer-sweep:") and not image.endswith(":latest")
    assert spec["rayVersion"] == read_lock(LOCK)["ray"]


def test_setup_uses_the_locks_as_constraints():
    text = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-c cluster/requirements.lock -c cluster/requirements-test.lock" in text
    install = next(l for l in text.splitlines() if "-e '.[test]'" in l)
    for req in cluster_extras():
        assert f" {req.name}" in install.split("-e '.[test]'")[1], f"setup.sh does not install {req}"
