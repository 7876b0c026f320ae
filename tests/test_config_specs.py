"""Tests for seg/config/specs.py: the MaskSpec made from a config."""

from conftest import REPO

from seg.config import MaskSpec, load_config, mask_spec


def test_mask_spec_of_the_shipped_configs():
    camvid = mask_spec(load_config(REPO / "configs" / "camvid.yaml"))
    assert camvid.fmt == "index" and camvid.num_classes == 11 and camvid.ignore_index == 11
    assert camvid.positive_values is None
    isbi = mask_spec(load_config(REPO / "configs" / "isbi2012.yaml"))
    assert isbi == MaskSpec("binary", ("membrane",), (0,), None)


def test_mask_spec_is_hashable_and_frozen():
    spec = mask_spec(load_config(REPO / "configs" / "synthetic.yaml"))
    assert spec == MaskSpec(spec.fmt, spec.classes, spec.positive_values, spec.ignore_index)
    assert hash(spec) == hash(MaskSpec(spec.fmt, spec.classes, spec.positive_values, spec.ignore_index))
