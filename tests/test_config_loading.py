"""Tests for seg/config/loading.py: overrides, refusal of unknown keys and wrong types naming file and key,
bad YAML, config diff/replace, environment variables in paths."""

import pytest
from conftest import REPO, write_config

from seg.config import (
    BASE_CONFIG,
    ConfigError,
    config_diff,
    expand_path,
    load_config,
    parse_override,
    replace,
)


def test_set_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(
        BASE_CONFIG,
        [
            "train.epochs=2",
            "loss.clamp=[0.01, 50]",
            "loss.weighting=per_channel",
            "metrics.threshold=0.5",
            "train.lr=3e-4",
            "model.encoder_weights=null",
        ],
    )
    assert cfg.train.epochs == 2 and cfg.loss.clamp == (0.01, 50.0)
    assert cfg.loss.weighting == "per_channel" and cfg.metrics.threshold == "0.5"
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.model.encoder_weights is None
    assert parse_override("--data.classes=[a, b]") == (["data", "classes"], ["a", "b"])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = write_config(tmp_path / "x.yaml", "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: key 'train\.epochz': unknown key"):
        load_config(path)


def test_unknown_key_in_override_is_refused():
    with pytest.raises(ConfigError, match="unknown key 'loss.weigting'"):
        load_config(BASE_CONFIG, ["loss.weigting=global"])


def test_wrong_type_names_key_and_value(tmp_path):
    path = write_config(tmp_path / "x.yaml", "train:\n  epochs: three\n")
    with pytest.raises(ConfigError, match=r"key 'train\.epochs'.*'three'"):
        load_config(path)
    # an unknown loss.weighting name is the registry's to refuse: tests/test_weighting_registry.py


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write_config(tmp_path / "bad.yaml", "train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_diff_and_replace():
    a = load_config(BASE_CONFIG)
    b = replace(a, train={"epochs": 9, "lr": 0.5})
    assert config_diff(a, b) == ["train.epochs", "train.lr"]
    assert config_diff(a, b, ignore=("train.epochs",)) == ["train.lr"]


def test_env_var_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("SEG_SHARED_DATA", str(tmp_path))
    assert expand_path("${SEG_SHARED_DATA}/camvid") == tmp_path / "camvid"
    monkeypatch.delenv("SEG_SHARED_DATA")
    assert expand_path("${SEG_SHARED_DATA}/camvid") == REPO.parent / "shared" / "data" / "camvid"
    assert expand_path("runs") == REPO / "runs"
