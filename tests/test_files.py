"""Tests for seg/files.py: strict JSON (NaN and infinities as null), atomic writes, make_folder's error."""

import json
import math
import os
import re

import numpy as np
import pytest
import torch

from seg.errors import ConfigError
from seg.files import json_text, make_folder, strict, write_json_atomic, write_text_atomic

NAN, INF = float("nan"), float("inf")


def test_strict_replaces_non_finite_floats_recursively_and_keeps_the_rest():
    value = {"a": NAN, "b": [1.0, INF, (-INF, 2)], "c": {"d": {"e": NAN}}, "n": 3, "t": True, "s": "NaN", "z": None}
    assert strict(value) == {
        "a": None,
        "b": [1.0, None, [None, 2]],  # tuples become lists
        "c": {"d": {"e": None}},
        "n": 3,
        "t": True,
        "s": "NaN",  # a string is a string
        "z": None,
    }


def test_strict_turns_arrays_and_tensors_into_lists():
    got = strict({"np": np.array([[0.5, np.nan], [np.inf, 1.0]]), "scalar": np.float32(np.nan), "i": np.int64(7)})
    assert got == {"np": [[0.5, None], [None, 1.0]], "scalar": None, "i": 7}
    assert type(got["i"]) is int
    assert strict(torch.tensor([0.25, float("nan")])) == [0.25, None]
    assert strict(torch.tensor(3)) == 3


def test_json_text_writes_null_where_a_value_is_undefined():
    assert json_text({"a": NAN, "b": [INF, 1.5]}, indent=None) == '{"a": null, "b": [null, 1.5]}'
    assert json_text([1, -INF]) == "[\n  1,\n  null\n]"  # indent 2 by default
    assert json_text(np.float64(2.0), indent=None) == "2.0"


def test_json_outputs_are_strict(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -math.inf}})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": {"d": None}}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def test_atomic_writes_replace_the_file_and_leave_no_temp_file(tmp_path):
    path = tmp_path / "report.md"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second" and os.listdir(tmp_path) == ["report.md"]

    summary = tmp_path / "summary.json"
    write_json_atomic(summary, {"a": 1}, indent=None)
    assert summary.read_text() == '{"a": 1}\n'  # one trailing newline
    write_json_atomic(summary, {"a": NAN})
    assert summary.read_text() == '{\n  "a": null\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["report.md", "summary.json"]


def test_make_folder_creates_parents_and_accepts_an_existing_folder(tmp_path):
    path = tmp_path / "a" / "b" / "c"
    assert make_folder(path, "--out") == path and path.is_dir()
    assert make_folder(path, "--out") == path  # already there: fine


def test_make_folder_under_a_file_names_the_key_the_path_and_the_file(tmp_path):
    blocking = tmp_path / "runs"
    blocking.write_text("a file where a folder should be")
    with pytest.raises(ConfigError) as err:
        make_folder(blocking / "exp" / "checkpoints", "run.out_dir")
    assert str(err.value) == (
        f"run.out_dir: cannot create {blocking / 'exp' / 'checkpoints'} ({blocking} is a file); "
        "choose a writable folder"
    )
    with pytest.raises(ConfigError, match=re.escape(f"--out: cannot create {blocking} ({blocking} is a file)")):
        make_folder(blocking, "--out")  # the path itself is the file
