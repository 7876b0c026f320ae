"""Tests for seg/experiments/manifest.py: every committed experiment.json round-trips byte for byte; a missing
key is refused naming the file and the key; an older manifest (top-level jobs and machine) loads."""

import json

import pytest
from conftest import REPO

from seg.config import ConfigError
from seg.experiments.manifest import MANIFEST, Manifest, TrainedWith
from seg.files import json_text

COMMITTED = sorted((REPO / "experiments" / "results").glob(f"*/{MANIFEST}"))


def test_there_are_committed_manifests():
    assert len(COMMITTED) >= 2


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_manifest_round_trips_byte_for_byte(path, tmp_path):
    data = json.loads(path.read_text())
    manifest = Manifest.read(path)
    written = manifest.to_dict()
    assert written == data and list(written) == list(data)  # key order included
    assert list(written["budget"]) == list(data["budget"]) and list(written["runs"][0]) == list(data["runs"][0])
    manifest.write(tmp_path / "copy")
    assert (tmp_path / "copy" / MANIFEST).read_bytes() == path.read_bytes()
    assert json_text(written) + "\n" == path.read_text()


def committed_dict() -> dict:
    return json.loads(COMMITTED[0].read_text())


def test_typed_fields_by_hand():
    manifest = Manifest.from_dict(committed_dict())
    run = manifest.runs[0]
    assert run.name.endswith("-s0") and run.seed == 0 and run.strategy in manifest.strategies
    assert manifest.budget.epochs >= 1 and manifest.budget.encoder == "resnet18"
    assert manifest.data.split_seed == 0 and manifest.wandb.project == "seg"
    assert manifest.title_text == manifest.title


def test_a_missing_key_is_refused_naming_the_file_and_the_key(tmp_path):
    data = committed_dict()
    del data["budget"]["lr"]
    path = tmp_path / MANIFEST
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"{path}: missing key 'budget\.lr' \(Budget\)"):
        Manifest.read(path)
    data = committed_dict()
    del data["classes"]
    with pytest.raises(ConfigError, match=r"^x\.json: missing key 'classes' \(Manifest\)"):
        Manifest.from_dict(data, "x.json")


def test_an_unknown_key_and_an_unreadable_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'runs\[1\]\.color'"):
        data = committed_dict()
        data["runs"][1]["color"] = "red"
        Manifest.from_dict(data, "x.json")
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON file"):
        Manifest.read(tmp_path / MANIFEST)


def test_an_old_manifest_with_jobs_and_machine_loads_and_round_trips():
    data = {k: v for k, v in committed_dict().items() if k != "trained_with"} | {"jobs": 3, "machine": "a laptop"}
    manifest = Manifest.from_dict(data)
    assert manifest.trained_with is None and (manifest.jobs, manifest.machine) == (3, "a laptop")
    assert manifest.training_records() == [TrainedWith(jobs=3, machine="a laptop")]
    assert list(manifest.to_dict().items()) == list(data.items())  # no trained_with written


def test_per_run_records_are_one_record_each():
    data = committed_dict() | {"trained_with": {"a": {"jobs": 1, "machine": None}, "b": {"jobs": 2, "machine": "m"}}}
    manifest = Manifest.from_dict(data)
    assert manifest.training_records() == [TrainedWith(jobs=1, machine=None), TrainedWith(jobs=2, machine="m")]
    assert manifest.to_dict()["trained_with"]["a"] == {"jobs": 1, "machine": None}  # null kept: always written
    empty = Manifest.from_dict({k: v for k, v in data.items() if k != "trained_with"})
    assert empty.training_records() == []
