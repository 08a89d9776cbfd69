"""W&B for a sweep: one run per trial, grouped by experiment, without the API key ever leaving its place.

Where the key may live: the ``WANDB_API_KEY`` variable of the process that runs a trial's logger, or
the W&B settings file ``wandb login`` writes (``~/.netrc``) on that node. It is never put in a
trial config, a runtime environment or a file of the experiment.

Why the callback is wrapped: Ray's ``WandbLoggerCallback`` copies ``WANDB_API_KEY`` into the runtime
environment of its logging actor, and Ray's runtime-env agent then writes that environment, key
included, in plain text into its log under the Ray session folder (readable by anyone on the node,
and shown by the Ray dashboard) - in offline mode too. So:

- offline and disabled runs need no key: it is removed from this process's environment before Ray
  starts (a local Ray inherits this environment), and nothing passes it on;
- online runs start the logging actor without the key in its runtime environment; the actor (on
  the driver's node) reads it from that node's own environment or settings file.

Mode: ``--wandb-mode`` when given; with ``auto``, ``WANDB_MODE`` from the environment when set
(``offline``, ``disabled``, ``online``), else online when a key is set and offline otherwise.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from fer_core.progress import say

__all__ = ["resolve_mode", "prepare_environment", "make_callback", "KEY_VAR"]

KEY_VAR = "WANDB_API_KEY"
_ENV_MODES = {"offline": "offline", "dryrun": "offline", "disabled": "disabled", "online": "online", "run": "online"}


def resolve_mode(requested: str, env: Mapping[str, str] = os.environ) -> str:
    """The W&B mode a sweep runs in: online, offline or disabled (see the module doc)."""
    if requested != "auto":
        return requested
    from_env = _ENV_MODES.get(env.get("WANDB_MODE", "").strip().lower())
    if from_env:
        return from_env
    return "online" if env.get(KEY_VAR) else "offline"


def prepare_environment(mode: str) -> None:
    """Call before Ray starts: offline/disabled runs drop the key from this process's environment."""
    if mode in ("offline", "disabled"):
        os.environ.pop(KEY_VAR, None)
        os.environ["WANDB_MODE"] = mode


@contextmanager
def _without_key() -> Iterator[None]:
    key = os.environ.pop(KEY_VAR, None)
    try:
        yield
    finally:
        if key is not None:
            os.environ[KEY_VAR] = key


def make_callback(mode: str, *, project: str, group: str, exp_dir: str):
    """The Tune callback logging every trial to W&B in ``mode``; None when disabled."""
    if mode == "disabled":
        return None
    from ray.air.integrations.wandb import WandbLoggerCallback

    class NodeCredentialsWandbLoggerCallback(WandbLoggerCallback):
        """Ray's W&B callback, except that the logging actor's runtime environment never holds the key."""

        def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
            with _without_key():
                super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    kwargs = dict(project=project, group=group, log_config=True, mode=mode, excludes=["val_confusion"])
    if "://" not in exp_dir:
        Path(exp_dir, "wandb").mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = str(Path(exp_dir, "wandb"))
    say(f"W&B: project {project}, group {group}, mode {mode}"
        + (f" (runs under {kwargs.get('dir')}; 'wandb sync' uploads them)" if mode == "offline" else
           " (the API key is read on the node from WANDB_API_KEY or 'wandb login'; it is not passed on)"))
    return NodeCredentialsWandbLoggerCallback(**kwargs)
