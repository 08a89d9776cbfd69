"""The Ray a command runs on: ``fer sweep`` (Tune trials) and ``fer confirm`` (Ray tasks) share it.

``ray_session(address, num_cpus, ...)`` connects to ``address`` (``--address``; default ``RAY_ADDRESS``),
or starts a local Ray on this machine (``num_cpus``: its CPUs, default all) when there is none; a Ray
this process already initialized is used as it is. It checks that the cluster has GPUs when the
work asks for them, and on leaving stops a local Ray it started (unless told to keep it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from fer_core.errors import FerError
from fer_core.progress import say

__all__ = ["ray_session", "trials_that_fit"]


@contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    gpus_needed: float = 0,
    no_gpus: str = "the work asks for GPUs but the Ray cluster has none",
    announce: bool = False,
    stop: bool = True,
) -> Iterator[dict]:
    """Ray for the ``with`` block; yields the cluster's resources (``ray.cluster_resources()``).

    ``gpus_needed`` > 0 and a cluster without GPUs: ``FerError(no_gpus)``. ``announce``: say the
    cluster's CPUs, GPUs and nodes first. ``stop``: shut down a local Ray started here when the block
    ends (False: it stays up for later calls in this process and stops when the process exits).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            started = True
    try:
        cluster = ray.cluster_resources()
        if announce:
            say(
                f"Ray cluster: {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs, "
                f"{len([n for n in ray.nodes() if n['Alive']])} node(s)"
            )
        if gpus_needed > 0 and cluster.get("GPU", 0) == 0:
            raise FerError(no_gpus)
        yield cluster
    finally:
        if started and stop:
            ray.shutdown()


def trials_that_fit(cluster: dict, cpus: float, gpus: float = 0) -> int:
    """How many trials (or tasks) of ``cpus`` CPUs and ``gpus`` GPUs the cluster's resources hold at once."""
    by_cpu = int(cluster.get("CPU", 1) // max(cpus, 1e-9))
    by_gpu = int(cluster.get("GPU", 0) // gpus) if gpus > 0 else by_cpu
    return min(by_cpu, by_gpu)
