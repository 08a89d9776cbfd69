"""One pack of trials on one device (``--pack K``): a Ray actor holding a ``PackedTrainer`` whose K slots are
Tune trials.

A trial (``sweeps.packed_trainable``) joins a pack, then asks for its next epoch. The pack trains one epoch
of all its trials at once (one batched network, ``fer_core.train.packed``) when every trial in it has asked,
that is when Tune has taken each one's last result and let it go on, and answers each with its own metrics,
checkpoint and place (pack, slot, device). A trial Tune stops (ASHA, the collapse rule, the time budget)
never asks again: the driver's ``PackLeaver`` callback, and the trial's own ``finally``, take it out, and
its slot is free for the next trial. Trials join and leave only between epochs.

Which trials may share a pack: the ones with the same ``PACK_KEYS`` (architecture, batch size, device,
precision). A pack holds one such group at a time; a trial whose group no pack holds *claims* a pack, which
then takes no other group's trials until its last one has left (so a rare group is not starved by a common
one).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fer_core.train import TrainConfig, TrainData
from fer_core.train.packed import PACK_KEYS

from .results import PACK_FIELDS

__all__ = ["PackActor", "pack_key", "pack_name", "read_folder", "write_folder", "TRIAL_CPUS", "CLAIM_TTL_S"]

#: CPUs Tune reserves for a packed trial's own actor (it only waits on its pack): Tune needs a non-empty
#: resource request, and the pack's actor takes the rest of the pack's ``--cpus-per-trial``.
TRIAL_CPUS = 0.01
#: A claim lapses when the trial that made it has not renewed it for this long (it ended while waiting).
CLAIM_TTL_S = 10.0


def pack_name(experiment: str, index: int) -> str:
    """The Ray actor name of an experiment's pack ``index`` (named: trials and the driver's callback find it)."""
    return f"fer-pack-{experiment}-{index}"


def pack_key(cfg: TrainConfig) -> str:
    """What trials must share to be packed together (``PACK_KEYS``), as a comparable string."""
    return json.dumps({k: getattr(cfg, k) for k in PACK_KEYS}, sort_keys=True, default=str)


def read_folder(folder: str | Path | None) -> dict[str, bytes] | None:
    """A (checkpoint) folder's files by relative path, to send through Ray; None for no folder."""
    if folder is None:
        return None
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_folder(files: dict[str, bytes], folder: str | Path) -> Path:
    """Write ``read_folder``'s files under ``folder``; a name that would leave it is refused."""
    from fer_core.errors import FerError

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    base = root.resolve()
    for name, data in files.items():
        parts = name.split("/")
        path = root.joinpath(*parts)
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or base not in path.resolve().parents:
            raise FerError(f"checkpoint file {name!r}: not a plain path inside {root}; refusing to write it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@dataclass
class _Member:
    slot: int
    folder: Path  # its files on this node (run folder, checkpoint to resume from): removed when it leaves
    outbox: list[dict] = field(default_factory=list)  # the epoch results its report callback got
    waiter: asyncio.Future | None = None  # its pending next_epoch
    joined_epoch: int = 0  # the pack's epoch count when it joined


class PackActor:
    """One pack (run as a Ray actor by ``sweeps.packed_trainable.start_packs``).

    Args:
        data: the data set every trial trains on (from the object store: read once per pack).
        capacity: K, the trials it trains at once.
        pack_id: its index in the sweep (shown with each trial's results).
    """

    def __init__(self, data: TrainData, capacity: int, pack_id: int):
        from fer_core.train.packed import PackedTrainer

        self.data, self.capacity, self.pack_id = data, capacity, pack_id
        self.pack = PackedTrainer(data, capacity=capacity)
        self.members: dict[str, _Member] = {}
        self.key: str | None = None  # the group of the trials in it (None: empty)
        self.claimed_by: tuple[str, float] | None = None  # (group, when) waiting for it to empty
        self.epochs = 0  # packed epochs trained so far
        self.lock = asyncio.Lock()  # the PackedTrainer changes only under it: joins, leaves and epochs
        self.wake = asyncio.Event()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="fer-pack")
        self.device = _device()
        self.loop_task: asyncio.Task | None = None

    # --- what trials ask -----------------------------------------------------------------------------

    async def describe(self) -> dict:
        """Its group, trials, capacity and claim (for a trial choosing a pack)."""
        return {
            "pack_id": self.pack_id,
            "key": self.key,
            "members": len(self.members),
            "capacity": self.capacity,
            "claim": self._claimed(),
            "device": self.device,
        }

    async def claim(self, key: str) -> bool:
        """Reserve this pack for group ``key`` once it empties (renewed by the waiting trial); False when
        another group's claim stands."""
        current = self._claimed()
        if current not in (None, key):
            return False
        self.claimed_by = (key, time.monotonic())
        return True

    async def join(self, trial_id: str, config: TrainConfig, key: str, resume: dict[str, bytes] | None) -> dict | None:
        """Add the trial (from its checkpoint files ``resume``) to a free slot; its place, or None when the
        pack is full or holds (or is claimed by) another group."""
        if trial_id in self.members:  # a trial Tune restarted: its earlier attempt leaves first
            await self.leave(trial_id)
        async with self.lock:
            if not self._accepts(key):
                return None
            self._start_loop()
            member = _Member(slot=-1, folder=Path(tempfile.mkdtemp(prefix="fer-pack-trial-")), joined_epoch=self.epochs)
            run_dir = member.folder / "run"

            def report(metrics: dict, checkpoint_dir: str | None) -> None:
                member.outbox.append({"metrics": metrics, "checkpoint": read_folder(checkpoint_dir)})

            loop = asyncio.get_running_loop()
            try:
                resume_dir = write_folder(resume, member.folder / "resume") if resume else None
                member.slot = await loop.run_in_executor(
                    self.pool, lambda: self.pack.add(config, report, run_dir=run_dir, resume=resume_dir)
                )
            except BaseException:
                shutil.rmtree(member.folder, ignore_errors=True)
                raise
            finally:
                shutil.rmtree(member.folder / "resume", ignore_errors=True)
            self.members[trial_id] = member
            self.key = key
            if self.claimed_by is not None and self.claimed_by[0] == key:
                self.claimed_by = None
            return self._place(member)

    async def next_epoch(self, trial_id: str) -> dict:
        """Wait for the pack's next epoch (it starts once every trial in it has asked) and return this
        trial's part: ``result`` (its metrics and checkpoint files; None when it diverged), ``ended`` (when it
        left the pack in that epoch: completed, early_stopped or diverged, with the trainer's summary) and
        ``place``."""
        member = self.members.get(trial_id)
        if member is None:
            raise RuntimeError(f"pack {self.pack_id}: trial {trial_id} is not in it (it left or never joined)")
        member.waiter = asyncio.get_running_loop().create_future()
        self.wake.set()
        return await member.waiter

    async def leave(self, trial_id: str) -> bool:
        """Take the trial out (Tune stopped it, or it errored); False when it is not in the pack."""
        if trial_id not in self.members:
            return False
        async with self.lock:
            member = self.members.pop(trial_id, None)
            if member is None:
                return False
            if member.slot in self.pack.trials:
                await asyncio.get_running_loop().run_in_executor(self.pool, self.pack.remove, member.slot)
            self._release(member)
            if not self.members:
                self.key = None
        self.wake.set()
        return True

    async def close(self, wait_s: float = 10.0) -> int:
        """Remove the files of the trials still in the pack (the sweep has ended: Ray kills the actor next,
        which cleans up nothing); how many trials it held. A ``leave`` under way finishes first; an epoch still
        training after ``wait_s`` seconds does not hold it up (the kill ends it)."""
        try:
            await asyncio.wait_for(self.lock.acquire(), wait_s)
        except TimeoutError:
            locked = False
        else:
            locked = True
        try:
            members = list(self.members.values())
            self.members.clear()
            self.key = None
            for member in members:
                self._release(member)
            return len(members)
        finally:
            if locked:
                self.lock.release()

    # --- the epoch loop ------------------------------------------------------------------------------

    def _start_loop(self) -> None:
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            async with self.lock:
                if not self._all_waiting():
                    continue
                await self._epoch()

    def _all_waiting(self) -> bool:
        return bool(self.members) and all(m.waiter is not None and not m.waiter.done() for m in self.members.values())

    async def _epoch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            ended = await loop.run_in_executor(self.pool, self.pack.step_epoch)
        except BaseException as exc:  # the pack is broken: every trial in it errors (Tune may retry them)
            from fer_core.train.packed import PackedTrainer

            for member in self.members.values():
                assert member.waiter is not None
                member.waiter.set_exception(RuntimeError(f"pack {self.pack_id}: {type(exc).__name__}: {exc}"))
                shutil.rmtree(member.folder, ignore_errors=True)
            self.members.clear()
            self.key = None
            self.pack = PackedTrainer(self.data, capacity=self.capacity)
            return
        self.epochs += 1
        for trial_id, member in list(self.members.items()):
            reply: dict = {"result": member.outbox.pop() if member.outbox else None, "place": self._place(member)}
            member.outbox.clear()
            if member.slot in ended:
                result = ended[member.slot]
                final = {k: v for k, v in result.final.items() if k != "val_confusion"}
                reply["ended"] = {
                    "status": result.status,
                    "message": result.message,
                    "final": final,
                    "epochs": len(result.history),
                }
                del self.members[trial_id]
                shutil.rmtree(member.folder, ignore_errors=True)
            assert member.waiter is not None
            member.waiter.set_result(reply)
        if not self.members:
            self.key = None

    def _release(self, member: _Member) -> None:
        """A trial out of the pack: its pending ``next_epoch`` answers "stopped"; its files on this node go."""
        if member.waiter is not None and not member.waiter.done():
            member.waiter.set_result({"result": None, "ended": {"status": "stopped"}, "place": self._place(member)})
        shutil.rmtree(member.folder, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------------------------------

    def _claimed(self) -> str | None:
        if self.claimed_by is not None and time.monotonic() - self.claimed_by[1] > CLAIM_TTL_S:
            self.claimed_by = None
        return self.claimed_by[0] if self.claimed_by is not None else None

    def _accepts(self, key: str) -> bool:
        if len(self.members) >= self.capacity:
            return False
        if self.members:
            return self.key == key and self._claimed() in (None, key)
        return self._claimed() in (None, key)

    def _place(self, member: _Member) -> dict:
        return dict(zip(PACK_FIELDS, (self.pack_id, member.slot, self.device), strict=True))


def _device() -> str:
    """Where this pack trains, as the dashboard shows it: ``GPU <id> on <node ip>`` or ``CPU on <node ip>``."""
    import ray

    ip = ray.util.get_node_ip_address()
    gpus = ray.get_gpu_ids()
    return f"GPU {','.join(str(g) for g in gpus)} on {ip}" if gpus else f"CPU on {ip}"
