"""The config schema: one pydantic model per section, every range and cross-check.

Loading (YAML, overrides, error messages) is in :mod:`seg.config.loading`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The threshold policies of metrics.threshold (seg.scoring.policies describes them)
POLICIES = ("0.5", "prior_corrected", "tuned")

# The loss terms of loss.terms and the parameters each takes, with their defaults (seg.losses has the formulas)
LOSS_TERMS: dict[str, dict[str, Any]] = {
    "bce": {},
    "focal": {"gamma": 2.0, "alpha": None},
    "dice": {"form": "batch", "smooth": 1.0},
    "tversky": {"alpha": 0.3, "beta": 0.7, "gamma": 1.0, "form": "batch", "smooth": 1.0},
    "lovasz": {"form": "batch"},
}
WEIGHTED_TERMS = ("bce", "focal")  # the terms loss.weighting applies to
TERM_PARAMETERS = tuple(dict.fromkeys(key for takes in LOSS_TERMS.values() for key in takes))

# Ranges, checked when the config is loaded (before anything is created)
Count = Annotated[int, Field(ge=0)]  # 0 allowed: workers, seeds, images to log
Positive = Annotated[int, Field(ge=1)]  # epochs, batch size, steps, samples
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
MaskValue = Annotated[int, Field(ge=0, le=65535)]  # 8- or 16-bit PNG
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


def _listed_once(value: list[str], what: str) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError(f"lists {what} twice: {value}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RunConfig(_Section):
    name: str
    out_dir: str
    seed: Count

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _PLAIN_NAME.fullmatch(value) or ".." in value:
            raise ValueError(
                "must be a plain name (letters, digits and _ . + = -; no path separators, no '..'), "
                f"got {value!r}: runs are written to run.out_dir/run.name"
            )
        return value


class DataConfig(_Section):
    root: str
    mask_format: Literal["binary", "index", "multilabel", "instance"]
    classes: list[str]
    positive_values: list[MaskValue] | None
    ignore_index: MaskValue | None
    image_size: int
    num_workers: Count
    keep_decoded: bool
    val_fraction: float
    split_seed: Count
    val_stems: list[str] | None
    test_fraction: float
    test_folder: str | None
    test_stems: list[str] | None
    samples_per_epoch: Positive | None
    max_val_images: Positive | None
    synthetic: bool
    sampling: Literal["uniform", "foreground"]
    foreground_fraction: float
    foreground_channel: Literal["uniform", "rarest"]

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value <= 0 or value % 32:
            raise ValueError(f"must be a positive multiple of 32 (U-Net downsamples 5 times), got {value}")
        return value

    @field_validator("val_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"must be between 0 and 1, got {value}")
        return value

    @field_validator("foreground_fraction")
    @classmethod
    def _probability(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"must be a probability in [0, 1] (the share of crops forced onto foreground), got {value}"
            )
        return value

    @field_validator("test_fraction")
    @classmethod
    def _test_fraction(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"must be at least 0 and below 1 (0: no test split carved), got {value}")
        return value

    @field_validator("test_folder")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        if value is not None and (not _PLAIN_NAME.fullmatch(value) or ".." in value or value == "train"):
            raise ValueError(f"must name a labelled split folder under data.root, e.g. val or test; got {value!r}")
        return value

    @model_validator(mode="after")
    def _format_keys(self) -> DataConfig:
        if self.test_fraction > 0 and self.test_folder is not None:
            raise ValueError(
                f"data.test_fraction ({self.test_fraction}) and data.test_folder ({self.test_folder}) both set: "
                "use one test split"
            )
        if not self.classes:
            raise ValueError("data.classes must name at least one channel")
        if any(not name.strip() or "/" in name for name in self.classes):
            raise ValueError(f"data.classes: channel names must be non-empty and without '/', got {self.classes}")
        if self.positive_values is not None and not self.positive_values:
            raise ValueError("data.positive_values must list at least one mask value (or be null)")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"data.classes has duplicate names: {self.classes}")
        if self.mask_format in ("binary", "instance") and len(self.classes) != 1:
            raise ValueError(f"data.mask_format {self.mask_format} has one channel; data.classes must list one name")
        return self


class ModelConfig(_Section):
    arch: str
    encoder: str
    encoder_weights: str | None


class TrainConfig(_Section):
    epochs: Positive
    batch_size: Positive
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    device: Literal["auto", "cpu", "cuda"]
    dist_backend: Literal["auto", "gloo", "nccl"]
    sync_batchnorm: bool
    amp: bool
    amp_cpu: bool
    channels_last: bool
    compile: list[Literal["model", "loss"]]
    max_steps_per_epoch: Positive | None
    val_every: Positive

    _distinct = field_validator("compile")(lambda value: _listed_once(value, "a part"))


class BorderConfig(_Section):
    instances_from: Literal["instance", "positive", "negative"]
    connectivity: Literal[4, 8]
    w0: NonNegativeFloat
    sigma: PositiveFloat


class LossTerm(_Section):
    """One term of loss.terms: its name, its weight in the sum and the parameters it takes (LOSS_TERMS)."""

    name: Literal["bce", "focal", "dice", "tversky", "lovasz"]
    weight: PositiveFloat = 1.0
    gamma: NonNegativeFloat | None = None
    alpha: NonNegativeFloat | None = None
    beta: NonNegativeFloat | None = None
    form: Literal["batch", "per_image"] | None = None
    smooth: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _parameters(self) -> LossTerm:
        takes = LOSS_TERMS[self.name]
        given = [key for key in TERM_PARAMETERS if getattr(self, key) is not None]
        wrong = [key for key in given if key not in takes]
        if wrong:
            accepted = ", ".join(takes) or "no parameter but weight"
            raise ValueError(f"{self.name} takes {accepted}; {', '.join(wrong)} does not apply")
        if self.name == "focal" and self.alpha is not None and not 0.0 < self.alpha < 1.0:
            raise ValueError(
                f"focal alpha must be in (0, 1) (the weight of positives; 1 - alpha on negatives), got {self.alpha}"
            )
        return self

    def parameters(self) -> dict[str, Any]:
        """The term's parameters, defaults filled in."""
        return {
            key: default if getattr(self, key) is None else getattr(self, key)
            for key, default in LOSS_TERMS[self.name].items()
        }


class LossConfig(_Section):
    terms: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="bce")])  # base.yaml sets it too
    weighting: Annotated[str, Field(min_length=1)]  # a strategy name: seg.weighting.registry checks it
    apply_as: Literal["pos_weight", "weight"]
    negatives: Literal["pixels", "all_zero"]
    clamp: tuple[PositiveFloat, PositiveFloat]
    normalize: bool
    stats_file: str | None
    ema: float | None
    border: BorderConfig

    @field_validator("terms")
    @classmethod
    def _terms(cls, value: list[LossTerm]) -> list[LossTerm]:
        names = [term.name for term in value]
        if not names:
            raise ValueError("must list at least one term, e.g. [{name: bce, weight: 1}]")
        if len(set(names)) != len(names):
            raise ValueError(f"lists a term twice: {names} (give one term its summed weight instead)")
        return value

    @field_validator("clamp")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] <= value[1]:
            raise ValueError(f"must be [min, max] with 0 < min <= max, got {list(value)}")
        return value

    @field_validator("ema")
    @classmethod
    def _momentum(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"must be in [0, 1) (weight of the previous value), got {value}")
        return value


class MetricsConfig(_Section):
    threshold: str  # one of POLICIES
    empty: Literal["nan", "one", "zero"]
    structure: list[Literal["rand", "vi", "object_ap"]]  # seg.scoring.structure.STRUCTURE_METRICS
    objects_from: Literal["positive", "negative", "instance"]
    connectivity: Literal[4, 8]
    calibration_pixels: Count  # pixels per validation image sampled to fit Platt scaling (0: off)

    _distinct = field_validator("structure")(lambda value: _listed_once(value, "a metric"))

    @field_validator("threshold", mode="before")
    @classmethod
    def _number_to_name(cls, value: Any) -> Any:
        return "0.5" if value == 0.5 else value

    @field_validator("threshold")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"must be one of {', '.join(POLICIES)}, got {value!r}")
        return value


class WandbConfig(_Section):
    mode: Literal["offline", "online", "disabled"]
    project: Annotated[str, Field(min_length=1)]
    group: str | None
    name: str | None  # a template of dotted config keys in braces, e.g. "{loss.weighting}-s{run.seed}"
    log_images: Count

    @field_validator("name", mode="before")
    @classmethod
    def _braces_read_as_yaml(cls, value: Any) -> Any:
        """YAML reads an unquoted ``{run.seed}`` as a mapping {'run.seed': None}: take it back as the template."""
        if isinstance(value, dict) and len(value) == 1 and next(iter(value.values())) is None:
            return "{" + str(next(iter(value))) + "}"
        return value


class LoggingConfig(_Section):
    log_every: Count  # training steps between W&B step rows (0: none)
    wandb: WandbConfig


class Config(_Section):
    run: RunConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    loss: LossConfig
    metrics: MetricsConfig
    logging: LoggingConfig

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        fmt, loss = self.data.mask_format, self.loss
        if loss.negatives == "all_zero" and fmt != "multilabel":
            raise ValueError(
                "loss.negatives: all_zero applies to multilabel masks only "
                f"(data.mask_format is {fmt}: every valid pixel belongs to some class); use pixels"
            )
        names = [term.name for term in loss.terms]
        if loss.weighting != "none" and not set(names) & set(WEIGHTED_TERMS):
            raise ValueError(
                f"loss.weighting {loss.weighting} has no term to weight: loss.terms ({', '.join(names)}) has no "
                "bce or focal term (dice, tversky and lovasz are unweighted); add one or set loss.weighting: none"
            )
        fixed_alpha = [term for term in loss.terms if term.name == "focal" and term.alpha is not None]
        if fixed_alpha and loss.weighting != "none":
            raise ValueError(
                f"loss.terms: focal alpha {fixed_alpha[0].alpha} and loss.weighting {loss.weighting} both weight "
                "positives; use one (alpha: null takes the weighting's weight as focal's alpha)"
            )
        if fmt in ("binary", "instance") and not self.data.positive_values:
            raise ValueError(f"data.positive_values must list the mask values of the positive class for {fmt} masks")
        if self.logging.wandb.name is not None:
            run_name(self)  # every {key} of the template names a config key
        if self.metrics.structure and self.metrics.objects_from == "instance" and self.num_classes != 1:
            raise ValueError(
                "metrics.objects_from: instance needs one channel (binary or instance masks with instances/); "
                f"data.classes has {self.num_classes}: use positive or negative"
            )
        return self

    @property
    def wandb_group(self) -> str:
        """The W&B group: logging.wandb.group (load_config fills in the config file's name), else run.name."""
        return self.logging.wandb.group or self.run.name

    @property
    def wandb_name(self) -> str:
        """The W&B run name: logging.wandb.name with its {keys} filled in, else run.name."""
        return run_name(self) if self.logging.wandb.name is not None else self.run.name

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


_TEMPLATE_KEY = re.compile(r"\{([^{}]*)\}")


def run_name(cfg: Config) -> str:
    """``logging.wandb.name`` with each ``{dotted.key}`` replaced by that key's value in ``cfg``."""
    template = cfg.logging.wandb.name or ""
    values = cfg.model_dump(mode="json")

    def value(match: re.Match) -> str:
        node: Any = values
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"logging.wandb.name: {{{match.group(1)}}} is not a config key (e.g. {{run.seed}})")
            node = node[part]
        return str(node)

    return _TEMPLATE_KEY.sub(value, template)
