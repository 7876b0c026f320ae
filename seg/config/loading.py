"""Loading a config: YAML files, ``--set`` overrides, validation into :class:`Config`, paths.

Loading order (later wins): the packaged defaults ``seg/config/base.yaml`` (every default, with
comments; ``configs/base.yaml`` in the repository links to it), the user's config file (only what
differs), then ``--set key=value`` overrides. Unknown keys and wrong types raise :class:`ConfigError`,
which the apps turn into one line and exit code 2.

Relative paths (the config file, ``data.root``, ``run.out_dir``, ...) are resolved against the current
working directory (:func:`expand_path`), never against where seg is installed.
"""

from __future__ import annotations

import copy
import importlib.resources
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from seg.config.schema import Config
from seg.errors import ConfigError

# The defaults, shipped inside the package (package data); a plain file in every install seg supports
# (a wheel or an editable install, not a zip), so that a path names it in messages.
BASE_CONFIG = Path(str(importlib.resources.files("seg.config") / "base.yaml"))


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping; a missing file or bad YAML is a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML config is expected)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (run:, data:, ...), got {type(data).__name__}")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    """Return ``base`` updated recursively by ``update`` (neither is modified)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=2"`` -> (["train", "epochs"], 2). Values are YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str], defaults: dict) -> dict:
    """Apply ``key=value`` overrides; a key that is not in the defaults is refused."""
    result = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node, known = result, defaults
        for part in path[:-1]:
            if not isinstance(known, dict) or part not in known:
                raise ConfigError(f"override {text!r}: unknown key '{'.'.join(path)}'")
            known = known[part]
            node = node.setdefault(part, {})
        if not isinstance(known, dict) or path[-1] not in known:
            raise ConfigError(f"override {text!r}: unknown key '{'.'.join(path)}'")
        node[path[-1]] = value
    return result


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = f"unknown key (see {BASE_CONFIG} for the keys)"
    elif first["type"] == "missing":
        msg = "missing key"
    elif "input" in first and first["type"] != "value_error":
        msg = f"{msg} (got {first['input']!r})"
    where = f"key '{key}': " if key else ""
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {where}{msg}{more}"


def _coerce_numbers(raw: Any) -> Any:
    """YAML reads ``1e-3`` as a string and ``2`` where a float is meant: fix those only."""
    if isinstance(raw, dict):
        return {k: _coerce_numbers(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_coerce_numbers(v) for v in raw]
    if isinstance(raw, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", raw):
        return float(raw)
    return raw


_FLOAT_KEYS = {
    ("train", "lr"),
    ("train", "weight_decay"),
    ("data", "val_fraction"),
    ("data", "test_fraction"),
    ("data", "foreground_fraction"),
    ("loss", "ema"),
    ("loss", "border", "w0"),
    ("loss", "border", "sigma"),
}


def _ints_to_floats(raw: dict) -> dict:
    """Strict validation refuses ``lr: 1``; accept integers where floats are meant."""
    raw = copy.deepcopy(raw)
    for path in _FLOAT_KEYS:
        node: Any = raw
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), int) and not isinstance(node[path[-1]], bool):
            node[path[-1]] = float(node[path[-1]])
    terms = raw.get("loss", {}).get("terms") if isinstance(raw.get("loss"), dict) else None
    for term in terms if isinstance(terms, list) else []:
        for key in ("weight", "gamma", "alpha", "beta", "smooth"):
            if isinstance(term, dict) and isinstance(term.get(key), int) and not isinstance(term[key], bool):
                term[key] = float(term[key])
    clamp = raw.get("loss", {}).get("clamp") if isinstance(raw.get("loss"), dict) else None
    if isinstance(clamp, list):
        raw["loss"]["clamp"] = tuple(
            float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in clamp
        )
    return raw


def validate(raw: dict, source: str) -> Config:
    """Validate a merged raw dict into a Config, or raise ConfigError naming ``source``."""
    try:
        return Config.model_validate(_ints_to_floats(_coerce_numbers(raw)))
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def read_run_config(path: str | Path) -> Config:
    """A run's saved config.yaml; keys added to seg since the run was written take their defaults
    (:data:`BASE_CONFIG`), so older runs still resume and evaluate."""
    return validate(deep_merge(read_yaml(BASE_CONFIG), read_yaml(Path(path))), str(path))


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (relative: to the working directory) over :data:`BASE_CONFIG`, apply ``overrides``, validate.
    ``logging.wandb.group`` left null becomes the config file's name (``configs/isbi2012.yaml``: isbi2012)."""
    path = Path(path)
    defaults = read_yaml(BASE_CONFIG)
    user = read_yaml(path)
    merged = apply_overrides(deep_merge(defaults, user), overrides or [], defaults)
    wandb = merged.get("logging", {}).get("wandb") if isinstance(merged.get("logging"), dict) else None
    if isinstance(wandb, dict) and wandb.get("group") is None:
        wandb["group"] = path.stem  # the W&B group of a plain run: the config's name
    source = f"{path}" + (" (with --set)" if overrides else "")
    return validate(merged, source)


def config_to_dict(cfg: Config) -> dict:
    """Plain dict (lists, not tuples) ready for YAML or W&B."""
    return cfg.model_dump(mode="json")


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def replace(cfg: Config, **sections: dict) -> Config:
    """A copy of ``cfg`` with some keys changed, e.g. ``replace(cfg, data={"val_stems": [...]})``."""
    return validate(deep_merge(config_to_dict(cfg), sections), "config")


def config_diff(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{prefix}.{key}" if prefix else key)
        elif x != y and prefix not in ignore:
            out.append(prefix)

    walk(config_to_dict(a), config_to_dict(b), "")
    return out


_ENV = re.compile(r"\$\{(\w+)\}")


def expand_path(text: str) -> Path:
    """Expand ``${VAR}`` and ``~``; a relative path is resolved against the current working directory.

    ``${SEG_SHARED_DATA}`` defaults to ``../shared/data`` relative to the working directory (the shared data
    beside the repository, run from its root). Returns an absolute path, fixed when it is expanded.
    """

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name == "SEG_SHARED_DATA":
            return os.environ.get(name, str(Path.cwd().parent / "shared" / "data"))
        if name not in os.environ:
            raise ConfigError(f"path {text!r}: environment variable {name} is not set")
        return os.environ[name]

    return Path(_ENV.sub(sub, text)).expanduser().absolute()
