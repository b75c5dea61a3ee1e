"""The config schema, checked by every stage before any work.

A pydantic model per config group gives types and ranges; a few checks that span
groups (enough samples on each side of a split, a batch no larger than the
training set) follow. A bad value stops the program with one line naming the
key, the value and what is allowed.
"""

import math
from typing import Annotated, Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backprop_lab.activations import ACTIVATIONS
from backprop_lab.network import INITS
from backprop_lab.training import ENGINES

# The groups that decide what a job computes. The others (paths, tracking, sweep,
# checkpoint) say where and how it runs and is recorded, never what it computes.
RESULT_GROUPS = ("data", "split", "model", "optim")
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql")

# strict: YAML's true is not the number 1, nor "0.1" the number 0.1.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Seed = Annotated[int, Field(strict=True, ge=0)]
Share = Annotated[float, Field(strict=True, gt=0, lt=1)]


class ConfigError(ValueError):
    """A config value is out of its allowed range; the message is one line."""


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Data(Group):
    n_samples: PositiveInt
    n_features: PositiveInt
    amplitude: Number
    noise: Annotated[Number, Field(ge=0)]
    seed: Seed


class Split(Group):
    test_size: Share
    val_size: Share
    seed: Seed


class Model(Group):
    hidden: list[PositiveInt]
    activation: Literal[tuple(ACTIVATIONS)]
    init: Literal[INITS]
    seed: Seed


class Optim(Group):
    lr: Annotated[Number, Field(gt=0)]
    epochs: PositiveInt
    batch_size: PositiveInt
    shuffle: bool = Field(strict=True)
    seed: Seed
    engine: Literal[ENGINES]
    max_loss: Annotated[float, Field(strict=True, gt=0)]


class Tracking(Group):
    uri: str
    experiment: str = Field(min_length=1)
    enabled: bool = Field(strict=True)

    @field_validator("uri")
    @classmethod
    def known_scheme(cls, uri):
        scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(TRACKING_SCHEMES)}")
        return uri


class Paths(Group):
    raw: str
    processed: str
    models: str | None
    reports: str


class Sweep(Group):
    grid: dict[str, str]
    launcher: Literal["basic", "joblib"]


class Checkpoint(Group):
    every: Annotated[int, Field(strict=True, ge=0)]
    dir: str


class Config(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: Data
    split: Split
    model: Model
    optim: Optim
    tracking: Tracking
    paths: Paths
    sweep: Sweep
    checkpoint: Checkpoint


def result_config(cfg):
    """The groups of ``cfg`` that decide a job's result, resolved, as a dict."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return {group: container[group] for group in RESULT_GROUPS}


def split_sizes(n_samples, test_size, val_size):
    """Rows in ``(train, val, test)`` as scikit-learn's ``train_test_split`` counts."""
    n_test = math.ceil(test_size * n_samples)
    n_val = math.ceil(val_size * (n_samples - n_test))
    return n_samples - n_test - n_val, n_val, n_test


def check(cfg):
    """Check a composed config; raise :class:`ConfigError` with one line if bad."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    try:
        Config.model_validate(container)
    except ValidationError as err:
        first = err.errors()[0]
        key = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}"
            for part in first["loc"]
        ).lstrip(".")
        value = first.get("input")
        if first["type"] == "missing":
            raise ConfigError(f"config key {key} is missing") from None
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"config key {key} is not known") from None
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{key}={value!r} is not allowed: {message}") from None
    data, split, optim = cfg.data, cfg.split, cfg.optim
    train, val, test = split_sizes(data.n_samples, split.test_size, split.val_size)
    if min(train, val, test) < 1:
        raise ConfigError(
            f"split.test_size={split.test_size} and split.val_size={split.val_size} "
            f"leave (train, val, test) = ({train}, {val}, {test}) of "
            f"data.n_samples={data.n_samples}; each needs at least 1 sample"
        )
    if optim.batch_size > train:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} is not allowed: it must be at most "
            f"the {train} training samples"
        )


def validate(cfg, stage):
    """Check ``cfg`` for ``stage``; on a bad value exit with one line on stderr."""
    try:
        check(cfg)
        if stage == "evaluate" and cfg.paths.models is None:
            raise ConfigError(
                "paths.models=None is not allowed: evaluate needs the folder that "
                "holds best/ (the DVC stage passes paths.models=models)"
            )
    except ConfigError as err:
        raise SystemExit(f"{stage}: config error: {err}") from None
    return cfg
