"""Search-space YAML: validation before any trial starts, define-by-run sampling, trial configs."""

from __future__ import annotations

import optuna
import pytest

from sweeps.space import SpaceError, load_space, parse_space

DEFAULT = "sweeps/spaces/regularization.yaml"


def test_shipped_spaces_parse_and_sample_valid_configs():
    for path in (DEFAULT, "sweeps/spaces/regularization-gpu.yaml"):
        space = load_space(path)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
        for _ in range(20):
            trial = study.ask()
            values = space.sample(trial)
            cfg = space.config(values)
            assert cfg.model == values.get("model", space.fixed.get("model")) and cfg.l2 == values["l2"]
            assert ("focal_gamma" in values) == (values["loss"] == "focal")  # conditional
            study.tell(trial, 0.5)


def test_conditional_parameters_exist_only_when_their_condition_holds():
    space = parse_space(
        {
            "params": {
                "loss": {"type": "categorical", "choices": ["ce", "focal"]},
                "focal_gamma": {"type": "float", "low": 0.5, "high": 4.0, "when": {"loss": "focal"}},
            }
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        t = study.ask()
        v = space.sample(t)
        seen.add(v["loss"])
        assert set(t.params) == set(v)
        assert ("focal_gamma" in v) == (v["loss"] == "focal")
        study.tell(t, 0.0)
    assert seen == {"ce", "focal"}


def test_log_and_int_ranges():
    space = parse_space(
        {
            "params": {
                "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
                "batch_size": {"type": "int", "low": 16, "high": 128, "log": True},
            }
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    vals = [space.sample(study.ask()) for _ in range(50)]
    assert all(1e-6 <= v["l2"] <= 1e-2 for v in vals)
    assert sum(v["l2"] < 1e-4 for v in vals) > 15  # log scale: half the decades below 1e-4
    assert all(isinstance(v["batch_size"], int) and 16 <= v["batch_size"] <= 128 for v in vals)


@pytest.mark.parametrize(
    "raw, match",
    [
        (
            {"params": {"lerning_rate": {"type": "float", "low": 0.1, "high": 1}}},
            r"params\.lerning_rate: not a trainer config key",
        ),
        ({"params": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}}, r"params\.lr: needs low < high"),
        (
            {"params": {"l2": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
            r"params\.l2: a log scale needs low > 0",
        ),
        (
            {"params": {"lr": {"type": "float", "low": -1, "high": 0.1}}},
            r"params\.lr: value -1.0 is not valid.*lr: must be > 0",
        ),
        (
            {"params": {"model": {"type": "categorical", "choices": ["fer_cnn_tiny", "resnet35"]}}},
            r"params\.model: value 'resnet35' is not valid",
        ),
        ({"params": {"loss": {"type": "categorical", "choices": []}}}, r"params\.loss: categorical needs a non-empty"),
        ({"params": {"lr": {"type": "uniform", "low": 0.1, "high": 1}}}, r"params\.lr: type must be one of"),
        (
            {"params": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "scale": "log"}}},
            r"params\.lr: unknown field",
        ),
        (
            {"params": {"focal_gamma": {"type": "float", "low": 1, "high": 2, "when": {"loss": "focal"}}}},
            r"'when' refers to 'loss', which is not a parameter listed before it",
        ),
        (
            {
                "params": {
                    "loss": {"type": "categorical", "choices": ["ce"]},
                    "focal_gamma": {"type": "float", "low": 1, "high": 2, "when": {"loss": "focl"}},
                }
            },
            r"'when' loss value\(s\) \['focl'\] are not among its choices",
        ),
        (
            {"fixed": {"optimizer": "adamax"}, "params": {"lr": {"type": "float", "low": 0.001, "high": 0.1}}},
            r"optimizer: must be one of",
        ),
        (
            {"fixed": {"lr": 0.1}, "params": {"lr": {"type": "float", "low": 0.001, "high": 0.1}}},
            r"also set in 'fixed'",
        ),
        ({"params": {}}, r"'params' must map at least one"),
        ({"space": {}}, r"unknown top-level key"),
    ],
)
def test_bad_spaces_fail_naming_the_key(raw, match):
    with pytest.raises(SpaceError, match=match):
        parse_space(raw, source="s.yaml")


def test_file_errors(tmp_path):
    with pytest.raises(SpaceError, match="cannot read"):
        load_space(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {lr: [\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(bad)


START = {
    "params": {
        "loss": {"type": "categorical", "choices": ["ce", "focal"]},
        "focal_gamma": {"type": "float", "low": 0.5, "high": 4.0, "when": {"loss": "focal"}},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "batch_size": {"type": "int", "low": 16, "high": 128},
    },
    "start": [{"loss": "focal", "focal_gamma": 2.0, "lr": 1e-3}, {"loss": "ce", "batch_size": 64}],
}


def test_start_points_are_the_first_trials_and_the_rest_is_sampled():
    space = parse_space(START, source="s.yaml")
    assert space.start == [{"loss": "focal", "focal_gamma": 2.0, "lr": 1e-3}, {"loss": "ce", "batch_size": 64}]
    assert any(line.startswith("first trial: loss='focal'") for line in space.describe())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in space.start:
        study.enqueue_trial(point)  # what Ray's OptunaSearch does with points_to_evaluate
    first, second = (space.sample(study.ask()) for _ in range(2))
    assert {k: first[k] for k in ("loss", "focal_gamma", "lr")} == {"loss": "focal", "focal_gamma": 2.0, "lr": 1e-3}
    assert 16 <= first["batch_size"] <= 128  # not given: sampled
    assert second["loss"] == "ce" and second["batch_size"] == 64 and "focal_gamma" not in second
    # sweep.json keeps them
    assert parse_space(START).to_dict()["start"] == space.start
    from sweeps.space import SearchSpace

    assert SearchSpace.from_dict(space.to_dict()).start == space.start


@pytest.mark.parametrize(
    "start, match",
    [
        ({"loss": "ce"}, r"s\.yaml: 'start' must be a list"),
        ([{"dropout": 0.5}], r"s\.yaml: start\[0\]\.dropout: not a searched parameter"),
        ([{"loss": "mse"}], r"start\[0\]\.loss: 'mse' is not among its choices"),
        ([{"lr": 1.0}], r"start\[0\]\.lr: 1\.0 is outside its range \[0\.0001, 0\.01\]"),
        ([{"batch_size": 32.5}], r"start\[0\]\.batch_size: an int parameter"),
        ([{"loss": "ce", "focal_gamma": 2.0}], r"start\[0\]\.focal_gamma: set, but it exists only when loss in"),
        ([{"lr": 1e-3}, {}], r"'start' must be a list of \{parameter: value\}"),
    ],
)
def test_bad_start_points_fail_naming_the_point_and_key(start, match):
    with pytest.raises(SpaceError, match=match):
        parse_space({**START, "start": start}, source="s.yaml")


def test_default_cpu_space_starts_from_the_plain_cnn_recipe_with_its_stated_augmentation():
    """The first trial of the default CPU sweep is the hand-written plain CNN's recipe (the baseline every
    sweep is measured against): every recipe key as the preset has it, but the augmentation the space fixes
    (strong: chosen on real faces, README "On real data"), its half-epoch warmup and the l2 floor of the
    searched range."""
    from fer_core.models import PRESET_DEFAULTS
    from fer_core.train.config import resolve_config

    space = load_space(DEFAULT)
    (start,) = space.start
    cfg = space.config(start).to_dict()
    trainer_default = resolve_config({}, where="defaults").to_dict()
    recipe = {**trainer_default, **PRESET_DEFAULTS["fer_cnn_plain"], "model": "fer_cnn_plain", "dropout_scale": 1.0}
    keys = set(space.fixed) | set(start)  # what the space decides; the rest is the trainer's default
    differ = {k: (recipe[k], cfg[k]) for k in sorted(keys) if cfg[k] != recipe[k]}
    assert differ == {"augment": ("flip", "strong"), "l2": (0.0, 1e-6), "warmup_epochs": (0.0, 0.5)}
    assert "augment = 'strong' (fixed)" in space.describe()


@pytest.mark.parametrize(
    "spec, match",
    [
        # a trial ran with batch_size=5.5e22 and writing the results failed with OverflowError, after the sweep
        ({"type": "int", "low": 1, "high": 99999999999999999999999}, r"params\.batch_size: value .* batch_size: must"),
        ({"type": "int", "low": 1, "high": 1.0e30}, r"params\.batch_size: value .* batch_size: must"),
        ({"type": "int", "low": 1, "high": 10**400}, r"params\.batch_size: high must be a finite number"),
        ({"type": "int", "low": -(10**400), "high": 8}, r"params\.batch_size: low must be a finite number"),
        ({"type": "int", "low": 1, "high": 64, "step": 10**400}, r"params\.batch_size: step must be a finite number"),
        ({"type": "int", "low": 1, "high": 64, "step": 2.5}, r"params\.batch_size: an int parameter's step must be an"),
    ],
)
def test_int_bounds_the_trainer_cannot_take_are_refused_when_the_space_is_loaded(spec, match):
    with pytest.raises(SpaceError, match=match) as err:
        parse_space({"params": {"batch_size": spec}}, source="s.yaml")
    assert "\n" not in str(err.value)


def test_float_bounds_the_trainer_cannot_take_are_refused_when_the_space_is_loaded():
    with pytest.raises(SpaceError, match=r"params\.lr: high must be a finite number"):
        parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 10**400}}}, source="s.yaml")
    with pytest.raises(SpaceError, match=r"params\.lr: value .* lr: must be > 0"):
        parse_space({"params": {"lr": {"type": "float", "low": 0, "high": 1}}}, source="s.yaml")


def test_a_huge_int_bound_in_a_space_file_is_refused(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params: {batch_size: {type: int, low: 1, high: 99999999999999999999999}}\n")
    with pytest.raises(SpaceError, match=r"space\.yaml: params\.batch_size: value 99999999999999999999999"):
        load_space(path)


def test_a_float_parameter_on_a_whole_number_key_is_refused_when_the_space_is_loaded():
    """``batch_size: {type: float}`` passed loading (its bounds are whole), then every sampled 38.4 failed in its
    trial; a float key keeps its float parameter, and whole steps on a whole key stay allowed."""
    with pytest.raises(
        SpaceError, match=r"params\.batch_size: type float samples values such as 40\.5 .* use type: int"
    ):
        parse_space({"params": {"batch_size": {"type": "float", "low": 16, "high": 64}}}, source="s.yaml")
    with pytest.raises(SpaceError, match=r"params\.epochs: type float samples values such as 1\.5"):
        parse_space({"params": {"epochs": {"type": "float", "low": 1, "high": 2, "step": 0.5}}}, source="s.yaml")
    parse_space({"params": {"batch_size": {"type": "float", "low": 16, "high": 64, "step": 16}}}, source="s.yaml")
    parse_space({"params": {"lr": {"type": "float", "low": 1, "high": 3}}}, source="s.yaml")  # 2.5: a float key
