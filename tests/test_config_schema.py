"""Tests for seg/config/schema.py: every key of base.yaml is in the schema, the shipped configs validate,
cross-checks refuse impossible combinations, and metrics.threshold accepts exactly the policies."""

import pytest
from conftest import REPO

from seg.config import BASE_CONFIG, ConfigError, load_config, read_yaml
from seg.scoring.policies import POLICIES


def test_base_config_validates_and_every_key_is_documented():
    cfg = load_config(BASE_CONFIG)
    raw = read_yaml(BASE_CONFIG)

    def keys(d, prefix=""):
        for k, v in d.items():
            yield from keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    schema = set(keys(cfg.model_dump(mode="json")))
    assert set(keys(raw)) == schema


@pytest.mark.parametrize("name", ["synthetic", "isbi2012", "camvid"])
def test_shipped_configs_validate(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.run.name == name


def test_cross_checks():
    with pytest.raises(ConfigError, match="all_zero applies to multilabel masks only"):
        load_config(REPO / "configs" / "camvid.yaml", ["loss.negatives=all_zero"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(BASE_CONFIG, ["data.image_size=100"])


@pytest.mark.parametrize("policy", POLICIES)
def test_metrics_threshold_accepts_every_policy(policy):
    assert load_config(BASE_CONFIG, [f"metrics.threshold={policy}"]).metrics.threshold == policy


def test_metrics_threshold_refuses_other_names_and_reads_a_number_as_0_5():
    with pytest.raises(ConfigError, match="metrics.threshold': must be one of 0.5, prior_corrected, tuned, got 'best'"):
        load_config(BASE_CONFIG, ["metrics.threshold=best"])
    assert load_config(BASE_CONFIG, ["metrics.threshold=0.5"]).metrics.threshold == "0.5"


def test_structure_keys_match_the_scoring_names():
    """The schema cannot import seg.scoring; its Literals must name exactly what the structure module computes."""
    import typing

    from seg.config.schema import MetricsConfig
    from seg.scoring.structure import CONNECTIVITIES, OBJECTS_FROM, STRUCTURE_METRICS

    fields = MetricsConfig.model_fields
    (item,) = typing.get_args(fields["structure"].annotation)
    assert typing.get_args(item) == STRUCTURE_METRICS
    assert typing.get_args(fields["objects_from"].annotation) == OBJECTS_FROM
    assert typing.get_args(fields["connectivity"].annotation) == CONNECTIVITIES


def test_wandb_name_is_a_template_of_config_keys_and_the_group_falls_back_to_the_run():
    synthetic = REPO / "configs" / "synthetic.yaml"
    cfg = load_config(synthetic, ["logging.wandb.name={loss.weighting}-s{run.seed}", "loss.weighting=global"])
    assert cfg.wandb_name == "global-s0" and cfg.wandb_group == "synthetic"  # no group: run.name
    assert load_config(synthetic, ["logging.wandb.name={run.seed}"]).wandb_name == "0"  # YAML read it as a mapping
    assert load_config(synthetic, ["logging.wandb.group=g"]).wandb_group == "g"
    assert load_config(synthetic).wandb_name == "synthetic"  # null: run.name
    with pytest.raises(ConfigError, match=r"logging.wandb.name: \{loss.nope\} is not a config key"):
        load_config(synthetic, ["logging.wandb.name=x-{loss.nope}"])
