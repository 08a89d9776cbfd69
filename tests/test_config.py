"""TrainConfig: defaults, YAML + --set precedence, presets, validation errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from fer_core.train.config import (
    ConfigError,
    TrainConfig,
    config_from_preset,
    dump_config,
    load_config,
    parse_overrides,
    resolve_config,
)


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    cfg = TrainConfig().check()
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert list(yaml.safe_load(dump_config(cfg))) == TrainConfig.keys()


def test_precedence_defaults_preset_yaml_set(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("preset: fer_cnn_bplusplus\nlr: 1e-3\nepochs: 12\n")
    cfg = load_config(path, overrides=["epochs=3", "focal_gamma=1.5"])
    assert cfg.model == "fer_cnn_bplusplus"
    assert (cfg.loss, cfg.focal_alpha, cfg.label_smoothing, cfg.l2_scope) == ("focal", 0.25, 0.1, "all_but_classifier")
    assert cfg.lr == 1e-3  # YAML beats the preset's 5e-4 (and "1e-3" is a float, not YAML 1.1's string)
    assert cfg.epochs == 3  # --set beats YAML
    assert cfg.focal_gamma == 1.5
    assert cfg.early_stopping_monitor == "val_acc"  # the notebook's val_accuracy, renamed to our metric


def test_unknown_key_names_the_valid_keys_and_the_closest(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'lerning_rate'" in msg
    assert "valid keys:" in msg and "label_smoothing" in msg and "weight_decay" in msg
    with pytest.raises(ConfigError, match=r"unknown key 'dropuot_scale' \(did you mean 'dropout_scale'\?\)"):
        load_config(overrides=["dropuot_scale=2"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("lr=0", "lr"),
        ("lr=-1", "lr"),
        ("label_smoothing=1.0", "label_smoothing"),
        ("batch_size=0", "batch_size"),
        ("batch_size=2.5", "batch_size"),
        ("epochs=abc", "epochs"),
        ("loss=hinge", "loss"),
        ("augment=heavy", "augment"),
        ("optimizer=rmsprop", "optimizer"),
        ("lr_schedule=linear", "lr_schedule"),
        ("focal_alpha=[0.5,-1]", "focal_alpha"),
        ("device=tpu", "device"),
        ("model=resnet35", "model"),
        ("dropout_scale=nan", "dropout_scale"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert str(err.value).startswith(f"{key}:"), str(err.value)


def test_model_error_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'fer_cnn_small'"):
        load_config(overrides=["model=fer_cnn_smal"])


def test_set_parses_yaml_values_and_dotted_model_args():
    out = parse_overrides(
        [
            "lr=1e-3",
            "freeze_base=true",
            "focal_alpha=[0.25, 0.5, 0.5, 0.25]",
            "model_args.filters=[8,16]",
            "model_args.dense=[16]",
            "data_version=",
        ]
    )
    assert out == {
        "lr": 1e-3,
        "freeze_base": True,
        "focal_alpha": [0.25, 0.5, 0.5, 0.25],
        "model_args": {"filters": [8, 16], "dense": [16]},
        "data_version": None,
    }
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="only model_args"):
        parse_overrides(["optimizer.lr=1"])


def test_adam_refuses_weight_decay_and_points_to_the_two_l2s():
    with pytest.raises(ConfigError, match="adamw.*l2"):
        load_config(overrides=["optimizer=adam", "weight_decay=1e-4"])
    assert load_config(overrides=["optimizer=adamw", "weight_decay=1e-4"]).weight_decay == 1e-4
    assert load_config(overrides=["l2=1e-4", "l2_scope=dense"]).l2 == 1e-4


def test_early_stopping_keys_go_together():
    with pytest.raises(ConfigError, match="go together"):
        load_config(overrides=["early_stopping_monitor=val_acc"])


def test_every_ladder_preset_resolves():
    from fer_core.models import PRESET_DEFAULTS

    for name in PRESET_DEFAULTS:
        cfg = config_from_preset(name, epochs=2)
        assert cfg.model == name and cfg.epochs == 2
    assert config_from_preset("fer_cnn_c").l2 == 1e-3
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config({"preset": "fer_cnn_z"})


def test_unreadable_or_malformed_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_a_provenance_block_is_accepted_and_ignored(tmp_path):
    cfg = TrainConfig(lr=3e-4, epochs=7).check()
    path = tmp_path / "best.yaml"
    provenance = {"experiment": "reg1", "trial_id": "abc123", "metrics": {"score": 0.61, "epochs": 7}}
    path.write_text(dump_config(cfg) + yaml.safe_dump({"provenance": provenance}, sort_keys=False))
    assert load_config(path) == cfg
    assert load_config(path, overrides=["lr=1e-3"]).lr == 1e-3
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.001\nprovenance: from the sweep\n")
    with pytest.raises(ConfigError, match=r"provenance: must be a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown key 'provenance'"):  # not a trainer key anywhere else
        load_config(overrides=["provenance=x"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("seed=99999999999999999999", "seed"),  # ValueError: Overflow in torch.manual_seed before
        ("seed=-1", "seed"),
        ("batch_size=99999999999999999999999", "batch_size"),  # 1e23 images per batch: OverflowError later
        ("batch_size=1e30", "batch_size"),
        ("eval_batch_size=1000001", "eval_batch_size"),
        ("epochs=100000000000", "epochs"),
        ("step_size=99999999999999999999", "step_size"),
        ("plateau_patience=99999999999999999999", "plateau_patience"),
        ("checkpoint_every=99999999999999999999", "checkpoint_every"),
        ("diverge_patience=99999999999999999999", "diverge_patience"),
        ("threads=99999999999999999999", "threads"),
        ("lr=1" + "0" * 400, "lr"),  # an int too large for a float: OverflowError before
    ],
)
def test_out_of_range_integers_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    message = str(err.value)
    assert message.startswith(f"{key}:") and "\n" not in message, message


def test_integer_limits_keep_every_usable_value():
    cfg = load_config(overrides=["seed=9223372036854775807", "batch_size=1000000", "epochs=1000000", "threads=64"])
    assert (cfg.seed, cfg.batch_size, cfg.epochs, cfg.threads) == (2**63 - 1, 1_000_000, 1_000_000, 64)
    with pytest.raises(ConfigError, match=r"^seed: .*9223372036854775808"):
        load_config(overrides=["seed=9223372036854775808"])
    with pytest.raises(ConfigError, match=r"^--set seed=\.\.\.: value cannot be read \(Exceeds the limit"):
        load_config(overrides=["seed=" + "9" * 5000])  # more digits than Python converts: a ValueError before


@pytest.mark.parametrize("value", ["[1]", "{a: 1}", "3", "true"])
def test_a_preset_that_is_not_a_name_is_a_config_error_naming_the_presets(value, tmp_path):
    with pytest.raises(ConfigError, match=r"^preset: .*presets: fer_cnn") as err:
        load_config(overrides=[f"preset={value}"])  # TypeError: unhashable type: 'list' before
    assert "\n" not in str(err.value)
    path = tmp_path / "cfg.yaml"
    path.write_text(f"preset: {value}\n")
    with pytest.raises(ConfigError, match=r"^preset: .*presets: fer_cnn"):
        load_config(path)


@pytest.mark.parametrize(
    "device", ["cuda:abc", "cuda:", "cuda:-1", "cuda:+1", "cuda:01", "cuda: 1", "cuda:0:1", "cuda:128"]
)
def test_a_device_the_trainer_cannot_use_is_refused(device):
    with pytest.raises(ConfigError, match=r"^device: must be auto, cpu, cuda or cuda:N"):
        load_config(overrides=[f"device={device}"])  # cuda:abc: a RuntimeError in the trainer before


def test_every_device_form_the_config_accepts():
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:7", "cuda:127"):
        assert load_config(overrides=[f"device={device}"]).device == device
