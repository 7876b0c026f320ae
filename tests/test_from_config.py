"""Tests for seg/from_config.py: train_from_config trains the run of a config file (relative paths against the
working directory) and returns summary.json's content; a Config takes overrides as --set does."""

import json

import pytest
from conftest import REPO, TINY_TRAIN

import seg
from seg.config import ConfigError, load_config
from seg.from_config import resolve_config, train_from_config

TINY = [o for o in TINY_TRAIN if not o.startswith("--")]  # the keys only (no --no-progress)


def test_public_name_is_this_function():
    assert seg.train_from_config is train_from_config


def test_a_config_file_trains_under_the_working_directory(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(f"run: {{name: mine, out_dir: out}}\ndata: {{root: {synthetic_root}}}\n")
    summary = train_from_config("mine.yaml", ["train.epochs=1", *TINY], progress=False)
    run = tmp_path / "out" / "mine"  # run.out_dir relative to the working directory
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["weighting"] == "none"


def test_a_config_object_takes_overrides_like_set():
    cfg = load_config(REPO / "configs" / "synthetic.yaml")
    assert resolve_config(cfg) is cfg
    changed = resolve_config(cfg, ["train.epochs=7", "loss.weighting=per_channel"])
    assert changed.train.epochs == 7 and changed.loss.weighting == "per_channel" and cfg.train.epochs != 7
    assert resolve_config(REPO / "configs" / "synthetic.yaml", ["train.epochs=7"]) == load_config(
        REPO / "configs" / "synthetic.yaml", ["train.epochs=7"]
    )
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        resolve_config(cfg, ["train.nope=1"])
    with pytest.raises(ConfigError, match=r"config \(with overrides\): key 'train.epochs'"):
        resolve_config(cfg, ["train.epochs=0"])
