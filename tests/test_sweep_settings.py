"""``SweepConfig``: the sweep's settings as parsed, as ``sweep.json`` records them, and what a resume inherits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fer_core.errors import FerError
from sweeps.driver import get_parser
from sweeps.ray_session import trials_that_fit
from sweeps.settings import DEFAULT_SAMPLES, SMOKE, SweepConfig


def _config(*argv: str) -> SweepConfig:
    return SweepConfig.from_args(get_parser().parse_args(list(argv)), argv)


def test_one_setting_per_flag_recorded_in_the_flags_order_overrides_last():
    args = vars(get_parser().parse_args(["--set", "lr=0.1"]))
    recorded = _config("--set", "lr=0.1").to_dict()
    assert list(recorded) == [k for k in args if k != "overrides"] + ["overrides"]
    assert args["samples"] is None  # the flag's default: decided with --time-budget-s (below)
    assert recorded == {**args, "samples": DEFAULT_SAMPLES, "overrides": ["lr=0.1"]}


def test_smoke_presets_only_the_flags_not_given():
    cfg = _config("--smoke", "--samples", "9", "--concurrency=1")
    assert (cfg.samples, cfg.concurrency) == (9, 1)
    assert all(getattr(cfg, k) == v for k, v in SMOKE.items() if k not in ("samples", "concurrency"))


def test_credentials_are_redacted_in_the_record_and_a_record_reads_back():
    cfg = _config("--data", "s3://bucket/fer?secret_key=topsecret", "--set", "lr=0.1")
    recorded = cfg.to_dict()
    assert "topsecret" not in str(recorded) and "***" in recorded["data"]
    plain = _config("--set", "lr=0.1", "--smoke")
    assert SweepConfig.from_dict(plain.to_dict()) == plain
    assert SweepConfig.from_dict({"samples": 5, "retired": 1}) == replace(SweepConfig.defaults(), samples=5)


def test_a_resume_takes_the_launch_settings_and_inherits_runtime_ones_unless_given():
    launch = _config(
        "--samples", "5", "--max-epochs", "3", "--concurrency", "4", "--wandb-mode", "disabled", "--set", "lr=0.1"
    ).to_dict()
    argv = ["--name", "x", "--resume", "--concurrency", "2"]
    cfg = _config(*argv).resumed(launch, argv)
    assert (cfg.samples, cfg.max_epochs, cfg.overrides) == (5, 3, ("lr=0.1",))  # the launch's
    assert (cfg.concurrency, cfg.wandb_mode) == (2, "disabled")  # given again; inherited
    assert (cfg.resume, cfg.name) == (True, "x")  # runtime: this command's
    again = ["--name", "x", "--resume", "--samples", "5", "--set", "lr=0.1"]
    assert _config(*again).resumed(launch, again).samples == 5  # given again with the same value: fine
    with pytest.raises(FerError, match=r"--set: \['lr=0.2'\] differs from this experiment's launch \(\['lr=0.1'\]\)"):
        changed = ["--name", "x", "--resume", "--set", "lr=0.2"]
        _config(*changed).resumed(launch, changed)


def test_a_resume_needs_a_redacted_location_again_and_keeps_what_an_older_record_lacks():
    launch = _config("--data", "s3://bucket/fer?secret_key=topsecret").to_dict()
    with pytest.raises(FerError, match="pass --data again to resume"):
        _config("--name", "x", "--resume").resumed(launch, ["--name", "x", "--resume"])
    argv = ["--name", "x", "--resume", "--data", "s3://bucket/fer?secret_key=topsecret"]
    assert _config(*argv).resumed(launch, argv).data == "s3://bucket/fer?secret_key=topsecret"
    older = {k: v for k, v in _config().to_dict().items() if k != "search"}
    argv = ["--name", "x", "--resume", "--search", "random"]
    assert _config(*argv).resumed(older, argv).search == "random"


def test_flag_checks_and_derived_values():
    with pytest.raises(FerError, match="--resume needs --name"):
        _config("--resume").check_flags()
    with pytest.raises(FerError, match="exceeds --max-epochs"):
        _config("--grace-period", "9", "--max-epochs", "4").check_values()
    for bad in ("0", "-5", "nan", "inf"):
        with pytest.raises(FerError, match=f"--time-budget-s must be a number of seconds > 0; got {bad}"):
            _config("--time-budget-s", bad).check_values()
    assert _config("--time-budget-s", "90").time_budget_s == 90.0 and _config().time_budget_s is None
    for bad in ("-1", str(2**32), str(2**63)):  # Optuna's samplers take a 32-bit seed: it failed after Ray started
        with pytest.raises(FerError, match=f"--seed must be a whole number from 0 to 2147483647; got {bad}"):
            _config("--seed", bad).check_values()
    _config("--seed", str(2**31 - 1)).check_values()
    cfg = _config(
        "--samples", "40", "--cpus-per-trial", "2.5", "--gpus-per-trial", "0.5", "--name", "x", "--extend", "3"
    )
    assert (cfg.trials_to_run, cfg.tpe_startup_trials, cfg.threads, cfg.device) == (3, 10, 2, "cuda")
    assert trials_that_fit({"CPU": 8, "GPU": 1}, 2.5, 0.5) == 2 and trials_that_fit({"CPU": 8}, 2.5) == 3


def test_a_time_budget_without_samples_runs_as_many_trials_as_it_holds():
    assert _config().samples == DEFAULT_SAMPLES == 12  # no budget: a fixed number of trials
    cfg = _config("--time-budget-s", "600")
    assert cfg.samples is None and cfg.trials_to_run is None  # Tune's num_samples=-1
    assert cfg.tpe_startup_trials == 10  # Optuna's default start-up when the number of trials is open
    cfg.check_values()
    assert _config("--time-budget-s", "600", "--samples", "5").samples == 5  # given: a cap, as before
    assert _config("--time-budget-s", "600", "--smoke").samples == SMOKE["samples"]
    assert _config("--time-budget-s", "600", "--extend", "3", "--name", "x").trials_to_run == 3
    # recorded as null; a resume keeps the launch's open count (and its budget) without repeating them
    launch = _config("--time-budget-s", "600").to_dict()
    assert launch["samples"] is None
    argv = ["--name", "x", "--resume"]
    resumed = _config(*argv).resumed(launch, argv)
    assert (resumed.samples, resumed.time_budget_s) == (None, 600)
    # an open count without a budget (a hand-edited record) is refused with what to do
    with pytest.raises(FerError, match=r"--samples: without --time-budget-s a sweep needs a number of trials"):
        replace(_config(), samples=None).check_values()
    with pytest.raises(FerError, match=r"--samples must be >= 1; got 0"):
        _config("--time-budget-s", "600", "--samples", "0").check_values()
