"""Tests for seg/checkpoint.py: atomic saves, weights_only loads, one-line errors naming the file.

The end-to-end cases (a pickle payload, a truncated best.pt and a foreign architecture refused by
evaluate; a broken last.pt on resume) are in tests/test_training.py; here the functions by hand.
"""

import os

import pytest
import torch

from seg import checkpoint
from seg.checkpoint import CheckpointError
from seg.errors import ConfigError


class _Payload:
    """Unpickling it would run ``touch marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_save_atomic_creates_the_folder_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "last.pt"  # folders created on the way
    checkpoint.save_atomic({"model": {"w": torch.tensor([1.0, 2.0])}, "epoch": 1}, path)
    checkpoint.save_atomic({"model": {"w": torch.tensor([3.0])}, "epoch": 2}, path)  # replaces it
    assert os.listdir(path.parent) == ["last.pt"]  # no last.pt.tmp left behind
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.tensor([3.0]))


def test_a_save_that_fails_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"model": {}, "epoch": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        checkpoint.save_atomic({"model": {}, "epoch": lambda: 2}, path)
    assert path.read_bytes() == before


def test_load_round_trips_tensors_and_plain_values(tmp_path):
    path = tmp_path / "best.pt"
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 3, "config": {"lr": 1e-3, "names": ["a", "b"]}, "x": None}
    checkpoint.save_atomic(state, path)
    got = checkpoint.load(path)
    assert got["epoch"] == 3 and got["config"] == {"lr": 1e-3, "names": ["a", "b"]} and got["x"] is None
    assert torch.equal(got["model"]["w"], torch.tensor([0.0, 1.0, 2.0]))


def test_load_refuses_a_pickled_object_without_running_it(tmp_path):
    path, marker = tmp_path / "best.pt", tmp_path / "pwned"
    torch.save({"model": {}, "epoch": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert one_line(err).startswith(f"{path}: it holds Python objects other than tensors and plain values")
    assert "refused without running it" in str(err.value)
    assert not marker.exists()  # its code never ran
    assert isinstance(err.value, ConfigError)  # a user error: exit 2


def test_load_of_a_truncated_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"model": {"w": torch.zeros(1000)}, "epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert one_line(err).startswith(f"{path}: not a readable checkpoint (truncated or not a torch file: ")


def test_load_of_a_missing_file_and_of_other_contents(tmp_path):
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp_path / "nope.pt")
    assert one_line(err) == f"{tmp_path / 'nope.pt'}: checkpoint not found"

    (tmp_path / "text.pt").write_text("not a checkpoint")  # not a torch file: refused, one line naming it
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp_path / "text.pt")
    assert one_line(err).startswith(f"{tmp_path / 'text.pt'}: ")

    others = {"list.pt": [1, 2], "nomodel.pt": {"epoch": 1}, "tensor.pt": {"model": torch.zeros(2)}}
    for name, content in others.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(CheckpointError) as err:
            checkpoint.load(tmp_path / name)
        assert one_line(err) == (f"{tmp_path / name}: not a seg checkpoint (expected a dict with a 'model' state_dict)")


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 3))  # keys 0.weight [3, 2] and 0.bias [3]


def test_load_model_state_loads_a_matching_state():
    model, state = _model(), {"0.weight": torch.ones(3, 2), "0.bias": torch.tensor([1.0, 2.0, 3.0])}
    checkpoint.load_model_state(model, state, "x.pt")
    assert torch.equal(model[0].bias.detach(), torch.tensor([1.0, 2.0, 3.0]))


def test_load_model_state_names_the_file_and_a_missing_or_unexpected_key():
    weight, bias = torch.ones(3, 2), torch.zeros(3)
    cases = {
        "1 missing and 0 unexpected keys, e.g. 0.bias": {"0.weight": weight},
        "0 missing and 1 unexpected keys, e.g. 1.weight": {"0.weight": weight, "0.bias": bias, "1.weight": weight},
        "1 missing and 1 unexpected keys, e.g. 0.bias": {"0.weight": weight, "0.b": bias},  # the missing one first
        "tensor shapes differ (another encoder or number of classes?)": {"0.weight": weight, "0.bias": torch.zeros(5)},
    }
    for detail, state in cases.items():
        with pytest.raises(CheckpointError) as err:
            checkpoint.load_model_state(_model(), state, "runs/a/checkpoints/best.pt")
        assert one_line(err) == (
            "runs/a/checkpoints/best.pt: the checkpoint does not fit the model of the run's config "
            f"(model.arch/encoder, data.classes): {detail}"
        )
