"""Tests for seg/config/loading.py: overrides, refusal of unknown keys and wrong types naming file and key,
bad YAML, config diff/replace, environment variables in paths, relative paths against the working directory,
the defaults as package data."""

import re
from pathlib import Path

import pytest
from conftest import REPO, write_config

import seg.config
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
    monkeypatch.chdir(REPO)
    assert expand_path("${SEG_SHARED_DATA}/camvid") == REPO.parent / "shared" / "data" / "camvid"  # ../shared/data
    monkeypatch.delenv("SEG_NOT_SET_HERE", raising=False)
    with pytest.raises(ConfigError, match=r"environment variable SEG_NOT_SET_HERE is not set"):
        expand_path("${SEG_NOT_SET_HERE}/a")


def test_relative_paths_are_resolved_against_the_working_directory(monkeypatch, tmp_path):
    """The rule of the README: relative paths in a config and on the command line are the working directory's."""
    monkeypatch.delenv("SEG_SHARED_DATA", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert expand_path("runs") == work / "runs" and expand_path("runs").is_absolute()
    assert expand_path("data/../other") == work / "data" / ".." / "other"  # as written, made absolute
    assert expand_path("${SEG_SHARED_DATA}/isbi") == tmp_path / "shared" / "data" / "isbi"
    assert expand_path(str(REPO / "runs")) == REPO / "runs"  # absolute paths stay
    assert expand_path("~/runs") == Path.home() / "runs"
    write_config(work / "my.yaml", "run: {out_dir: out, name: here}\n")
    cfg = load_config("my.yaml")  # --config relative to the working directory too
    assert cfg.run.name == "here" and expand_path(cfg.run.out_dir) == work / "out"


def test_the_defaults_are_package_data_and_configs_base_yaml_links_to_them():
    assert BASE_CONFIG == Path(seg.config.__file__).parent / "base.yaml" and BASE_CONFIG.is_file()
    link = REPO / "configs" / "base.yaml"
    assert link.is_symlink() and link.readlink() == Path("../seg/config/base.yaml") and link.resolve() == BASE_CONFIG


def test_an_unknown_key_names_the_file_of_the_defaults(tmp_path):
    path = write_config(tmp_path / "x.yaml", "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"unknown key (see {BASE_CONFIG} for the keys)")):
        load_config(path)
