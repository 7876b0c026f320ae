"""Typed configuration: load YAML, apply overrides, validate once; typed specs for the code below.

This package is the only reader of raw config dicts. Everything below it takes a validated
:class:`Config` section or a typed spec (:class:`MaskSpec`), never the dict.

- :mod:`seg.config.schema`: the pydantic models (every key, range and cross-check);
- :mod:`seg.config.loading`: YAML, ``--set`` overrides, error messages, paths;
- :mod:`seg.config.specs`: typed specs made from a config (``mask_spec``).
"""

from seg.config.loading import (
    BASE_CONFIG,
    apply_overrides,
    config_diff,
    config_to_dict,
    deep_merge,
    expand_path,
    load_config,
    parse_override,
    read_run_config,
    read_yaml,
    replace,
    save_config,
    validate,
)
from seg.config.schema import Config
from seg.config.specs import MaskSpec, mask_spec
from seg.errors import ConfigError

__all__ = [
    "BASE_CONFIG",
    "Config",
    "ConfigError",
    "MaskSpec",
    "apply_overrides",
    "config_diff",
    "config_to_dict",
    "deep_merge",
    "expand_path",
    "load_config",
    "mask_spec",
    "parse_override",
    "read_run_config",
    "read_yaml",
    "replace",
    "save_config",
    "validate",
]
