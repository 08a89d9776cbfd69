"""``--pack K``: Tune trials trained K at a time as one batched network, on one actor per GPU (or CPU share).

The driver starts the packs (``start_packs``: one ``sweeps.pack_actor.PackActor`` per ``--gpus-per-trial``
and ``--cpus-per-trial`` share the cluster holds) before Tune runs. Each trial stays a Tune trial for the
searcher, ASHA, the collapse rule and the time budget: ``packed_trainable`` builds its config exactly as
``fer_trainable`` does, joins a pack, and reports each epoch the pack trains for it, with the same score,
peak and collapse fields plus where it ran (``pack_id``, ``pack_slot``, ``pack_device``: which trials shared
a GPU, as the dashboard shows). Checkpoints go through Tune as usual, so ``--resume`` and a retried trial
continue from their last one inside a pack. ``PackLeaver`` (a driver callback) takes a trial out of its
pack when Tune ends it.
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Any

from ray.tune import Callback

from fer_core.errors import FerError
from fer_core.train import TrainData

from .pack_actor import CLAIM_TTL_S, TRIAL_CPUS, PackActor, pack_key, pack_name, read_folder, write_folder
from .trainable import annotate, diverged_result, trial_start

__all__ = ["packed_trainable", "start_packs", "stop_packs", "PackLeaver", "pack_resources", "PACK_START_TIMEOUT_S"]

#: How long the driver waits for the packs' actors to be placed on the cluster.
PACK_START_TIMEOUT_S = 120.0
#: How long the driver waits for the packs to remove their trials' files (``PackActor.close``) before it kills them.
PACK_CLOSE_TIMEOUT_S = 20.0


def pack_resources(cpus_per_trial: float, gpus_per_trial: float, capacity: int) -> dict:
    """A pack's actor resources: a trial's GPUs, and its CPUs less what its K trials' own actors reserve."""
    cpus = cpus_per_trial - capacity * TRIAL_CPUS
    if cpus <= 0:
        raise FerError(
            f"--pack {capacity}: --cpus-per-trial {cpus_per_trial:g} leaves the pack no CPU (each packed trial "
            f"reserves {TRIAL_CPUS}); give --cpus-per-trial at least {capacity * TRIAL_CPUS + 0.1:g}"
        )
    return {"num_cpus": round(cpus, 4), "num_gpus": gpus_per_trial}


def start_packs(experiment: str, count: int, capacity: int, data: TrainData, resources: dict) -> dict:
    """Start ``count`` packs of ``capacity`` slots, once every one is placed: their actor handles by name (the
    caller keeps them: Ray ends an actor whose creator's handles are gone)."""
    import ray

    actor: Any = ray.remote(PackActor)
    names = [pack_name(experiment, i) for i in range(count)]
    ref = ray.put(data)
    handles = [actor.options(name=n, max_restarts=0, **resources).remote(ref, capacity, i) for i, n in enumerate(names)]
    ready, pending = ray.wait([h.describe.remote() for h in handles], num_returns=count, timeout=PACK_START_TIMEOUT_S)
    packs = dict(zip(names, handles, strict=True))
    if pending:
        stop_packs(packs, close=False)  # some were never placed; none has trained a trial
        raise FerError(
            f"--pack: {len(pending)} of {count} packs ({resources}) found no room on the cluster in "
            f"{PACK_START_TIMEOUT_S:g} s; lower --concurrency or --cpus-per-trial/--gpus-per-trial"
        )
    ray.get(ready)
    return packs


def stop_packs(packs: dict, *, close: bool = True) -> None:
    """End the packs' actors (when the sweep ends), once each has removed its trials' files from its node
    (``close``; a pack that does not answer within ``PACK_CLOSE_TIMEOUT_S`` is killed all the same)."""
    import ray

    if close:
        try:
            ray.get([handle.close.remote() for handle in packs.values()], timeout=PACK_CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a pack that died or hangs: the kill below is what matters now
            pass
    for handle in packs.values():
        ray.kill(handle)


def _join(names: list[str], trial_id: str, cfg, resume: dict[str, bytes] | None, poll_s: float = 0.2):
    """Join a pack that holds this trial's group and has a free slot (the fullest such pack first: a pack
    costs the same per epoch however many of its slots train), else an empty one; when none can take it,
    claim the emptiest pack and wait. The pack's handle and the trial's place in it."""
    import ray

    handles = [ray.get_actor(n) for n in names]
    key = pack_key(cfg)
    while True:
        views: Any = ray.get([h.describe.remote() for h in handles])
        open_ = [
            i
            for i, v in enumerate(views)
            if v["members"] < v["capacity"] and v["claim"] in (None, key) and (v["key"] == key or not v["members"])
        ]
        for i in sorted(open_, key=lambda i: (views[i]["key"] != key, -views[i]["members"])):
            joined: Any = ray.get(handles[i].join.remote(trial_id, cfg, key, resume))
            if joined is not None:
                return handles[i], joined
        mine = [i for i, v in enumerate(views) if v["claim"] == key]
        free = [i for i, v in enumerate(views) if v["claim"] is None]
        target = (mine or sorted(free, key=lambda i: views[i]["members"]))[:1]
        if target:
            ray.get(handles[target[0]].claim.remote(key))
        time.sleep(min(poll_s, CLAIM_TTL_S / 4))


def packed_trainable(params: dict, *, packs: list[str], base: dict, fixed: dict, rules: dict) -> None:
    """Tune function trainable: train one sampled configuration in a pack and report every epoch."""
    from ray import tune

    with trial_start(params, base, fixed) as (cfg, folder, history):
        resume = read_folder(folder)
    trial_id = tune.get_context().get_trial_id()
    pack, place = _join(packs, trial_id, cfg, resume)
    try:
        while True:
            import ray

            reply = ray.get(pack.next_epoch.remote(trial_id))
            place = reply["place"]
            got = reply.get("result")
            if got is not None:
                history.append(got["metrics"]["val_acc"])
                result = {**annotate(got["metrics"], history, cfg.epochs, rules), **place}
                with tempfile.TemporaryDirectory(prefix="fer-packed-") as tmp:
                    files = got["checkpoint"]
                    ckpt = tune.Checkpoint.from_directory(str(write_folder(files, tmp))) if files else None
                    tune.report(result, checkpoint=ckpt)  # returns once Tune lets the trial go on
            ended = reply.get("ended")
            if ended is not None:
                if ended["status"] == "diverged":
                    tune.report({**diverged_result(ended["final"], ended["epochs"], ended["message"]), **place})
                return
    finally:
        pack.leave.remote(trial_id)  # a stopped trial's thread ends here; the driver's PackLeaver says it too


class PackLeaver(Callback):
    """Driver callback: a trial Tune ended (stopped, completed, errored, or about to be retried) leaves its
    pack, so the others' next epoch does not wait for it and its slot is free."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self._handles: list | None = None

    def _leave(self, trial) -> None:
        import ray

        if self._handles is None:
            self._handles = []
            for n in self.names:
                try:
                    self._handles.append(ray.get_actor(n))
                except ValueError:
                    pass
        for h in self._handles:
            h.leave.remote(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._leave(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._leave(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._leave(trial)

    def __getstate__(self):  # pickled with the run config: handles belong to this run's cluster
        return {"names": self.names, "_handles": None}


def packs_for(cluster_fits: int, samples: int, capacity: int, concurrency: int | None) -> tuple[int, int]:
    """(packs, concurrent trials): as many packs as the cluster holds trial shares, no more than the trials
    (or ``--concurrency``) fill, K trials each."""
    packs = min(cluster_fits, math.ceil(samples / capacity))
    if concurrency is not None:
        packs = min(packs, math.ceil(concurrency / capacity))
    packs = max(1, packs)
    trials = min(packs * capacity, samples, concurrency if concurrency is not None else samples)
    return packs, max(1, trials)
