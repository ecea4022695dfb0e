"""The resolved configuration of a run and its checks.

`Config` holds every setting of `python -m train`, with the same names as
the flags (`--weight-decay` is `weight_decay`). It is built in layers, later
ones overriding earlier ones: the defaults, then `--preset`, then the JSON
`--config` file, then the flags given on the command line. `Config.resolve`
fills the method's defaults and checks the combination; the result is saved
as `config.json` beside the results.
"""

import dataclasses
import json
import math
import os
import typing

from train import presets

METHODS = ("none", "wc", "pp", "wn", "bn", "mobn", "wn+mobn")
OPTIMIZERS = ("sgd", "adam", "modified-adam", "adamw", "modified-adamw")
# Optimizers whose --weight-decay is their own decoupled weight decay
# (AdamW's λ, as PyTorch's AdamW), not an L2 penalty in the loss.
DECOUPLED = ("adamw", "modified-adamw")
SCHEDULES = ("step", "wn-linear", "constant")
COMPANDERS = ("arctan", "arsinh", "erf")
STRATEGIES = ("default", "mirrored", "multiworker")
DISTRIBUTIONS = ("none", "data", "model")
WEIGHT_DECAY_SCOPES = ("all", "kernels")
PREPROCESSING = ("standard", "zca")
VERBOSITY = ("auto", "0", "1", "2")
# Datasets whose files are never found without `--data-dir`.
NEEDS_DATA_DIR = ("imagenet2012", "tiny_imagenet")
# What --init-from may name, and the placeholder for the seed in its path.
INIT_SUFFIXES = (".keras", ".weights.h5")
SEED_FIELD = "{seed}"
# --a/--b: a number, or this word (keras_wc.convert's per-layer rule).
AUTO = "auto"
# Companders with a bound, which `--a auto` needs.
BOUNDED_COMPANDERS = ("arctan", "erf")
# Method-specific options, their defaults and the methods they belong to.
METHOD_OPTIONS = {
    "a": (1.0, ("wc",)),
    "b": (1.0, ("wc",)),
    "compander": ("arctan", ("wc",)),
    "alpha": (2.0, ("pp",)),
    "init_scale": (1.0, ("wn", "wn+mobn")),
    "init_examples": (500, ("wn", "wn+mobn")),
}
# Fields that do not change the result of a run: a run can be resumed with
# different values.
NOT_AFFECTING_RESULTS = ("out", "verbose", "preset", "run_eagerly")


def parse_mesh(text):
    """`"BATCHxMODEL"` -> (batch, model), both ≥ 1."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ConfigError(
            f"--mesh must be BATCHxMODEL with positive integers, e.g. 2x2; "
            f"got {text!r}"
        )
    return int(parts[0]), int(parts[1])


class ConfigError(ValueError):
    """A bad setting or an impossible combination (a one-line message)."""


@dataclasses.dataclass
class Config:
    """Every setting of a training run (see `python -m train --help`)."""

    # Experiment.
    model: str = "small_cnn"
    dataset: str = "fashion_mnist"
    preset: str | None = None
    # A trained model to start from (fine-tuning).
    init_from: str | None = None
    # Method.
    method: str = "none"
    # A number, or "auto" (`keras_wc.convert`'s per-layer rule).
    a: float | str | None = None
    b: float | str | None = None
    compander: str | None = None
    # "none", "fine", "coarse", or true/false (`resolve` makes them strings).
    learnable: str | bool = "none"
    alpha: float | None = None
    init_scale: float | None = None
    init_examples: int | None = None
    # Optimization.
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    schedule: str = "step"
    milestones: list = dataclasses.field(default_factory=list)
    gamma: float = 0.1
    weight_decay: float = 0.0
    weight_decay_scope: str = "all"
    epochs: int = 10
    batch_size: int = 128
    steps_per_epoch: int | None = None
    # Data and seeds.
    data_dir: str | None = None
    val_split: float = 0.1
    limit_train: int | None = None
    augment: bool = True
    preprocess: str = "standard"
    seeds: int = 1
    # Execution.
    out: str | None = None
    strategy: str = "default"
    # JAX: keras.distribution's "data" (DataParallel) or "model"
    # (ModelParallel) over a mesh "BATCHxMODEL" (default: every device on
    # the batch axis; for "model", 2 on the model axis).
    distribution: str = "none"
    mesh: str | None = None
    logical_cpus: int | None = None
    mixed_precision: bool = False
    # None: Keras's own choice for the backend (`jit_compile="auto"`): XLA
    # on JAX, graph mode on TensorFlow's CPU, eager on PyTorch.
    jit: bool | None = None
    deterministic: bool = True
    run_eagerly: bool = False
    verbose: str = "auto"
    # Fold and export each seed's tested model (`keras_wc.export`).
    export: bool = False

    @classmethod
    def fields(cls):
        """The names of all fields."""
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes):
        """A copy with `changes` applied (unknown names raise)."""
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown}; valid keys: "
                f"{', '.join(self.fields())}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def resolve(self):
        """Checks the settings and fills the method's defaults.

        Reads no file: the paths are checked by `train.paths.check_config`.

        Returns:
            A new, fully specified `Config`.

        Raises:
            ConfigError: a bad value or an impossible combination.
        """
        for field in dataclasses.fields(self):
            _check_type(
                _flag(field.name), getattr(self, field.name), field.type
            )
        _check_choice("method", self.method, METHODS)
        if self.compander is not None:
            _check_choice("compander", self.compander, COMPANDERS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("distribution", self.distribution, DISTRIBUTIONS)
        _check_choice(
            "weight-decay-scope", self.weight_decay_scope, WEIGHT_DECAY_SCOPES
        )
        _check_choice("preprocess", self.preprocess, PREPROCESSING)
        _check_choice("verbose", self.verbose, VERBOSITY)
        if self.preset is not None:
            try:
                presets.get(self.preset)
            except ValueError as error:
                raise ConfigError(str(error)) from error
        _check_number("lr", self.lr, 0, open_low=True)
        _check_number("momentum", self.momentum, 0, 1)
        _check_number("gamma", self.gamma, 0, open_low=True)
        _check_number("weight-decay", self.weight_decay, 0)
        _check_number("val-split", self.val_split, 0, 1, open_high=True)
        for name in ("epochs", "batch_size", "seeds"):
            _check_int(name, getattr(self, name))
        for name in ("steps_per_epoch", "limit_train", "logical_cpus"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name))
        milestones = list(self.milestones)
        for m in milestones:
            _check_int("milestones", m)
        if milestones != sorted(set(milestones)):
            raise ConfigError(
                "--milestones must be strictly increasing epochs, got "
                f"{milestones}"
            )
        if self.schedule != "step" and milestones:
            raise ConfigError(
                f"--milestones only applies to --schedule step, not "
                f"{self.schedule}"
            )
        resolved = {}
        for name, (default, methods) in METHOD_OPTIONS.items():
            value = getattr(self, name)
            if self.method in methods:
                resolved[name] = default if value is None else value
            elif value is not None:
                raise ConfigError(
                    f"{_flag(name)} applies to --method "
                    f"{' or '.join(methods)}, not {self.method}"
                )
        for name in ("a", "b"):
            if resolved.get(name) == AUTO:
                continue
            if isinstance(resolved.get(name), str):
                raise ConfigError(
                    f"--{name} must be a number > 0 or {AUTO}, got "
                    f"{resolved[name]!r}"
                )
        for name in ("a", "b", "alpha", "init_scale"):
            if name in resolved and resolved[name] != AUTO:
                _check_number(name, resolved[name], 0, open_low=True)
        if (
            resolved.get("a") == AUTO
            and resolved["compander"] not in BOUNDED_COMPANDERS
        ):
            raise ConfigError(
                f"--a {AUTO} needs a bounded compander "
                f"({', '.join(BOUNDED_COMPANDERS)}), not "
                f"{resolved['compander']}"
            )
        if self.init_from is not None:
            check_init_from(self.init_from)
        if "init_examples" in resolved:
            _check_int("init_examples", resolved["init_examples"])
        if self.dataset in NEEDS_DATA_DIR and not self.data_dir:
            raise ConfigError(
                f"--dataset {self.dataset} needs --data-dir (this program "
                "never downloads data)"
            )
        if self.strategy == "multiworker" and not os.environ.get("TF_CONFIG"):
            raise ConfigError(
                "--strategy multiworker needs the TF_CONFIG environment "
                "variable (cluster and task of this process)"
            )
        if self.logical_cpus is not None and self.strategy == "multiworker":
            raise ConfigError(
                "--logical-cpus applies to --strategy default or mirrored"
            )
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        if self.strategy != "default" and backend != "tensorflow":
            raise ConfigError(
                f"--strategy {self.strategy} is TensorFlow's tf.distribute "
                f"and needs KERAS_BACKEND=tensorflow (running: {backend}); "
                "use --strategy default"
            )
        if self.logical_cpus is not None and backend == "torch":
            raise ConfigError(
                "--logical-cpus splits the CPU of TensorFlow or JAX, not "
                "PyTorch's (running: torch)"
            )
        if self.distribution != "none" and backend != "jax":
            raise ConfigError(
                f"--distribution {self.distribution} is keras.distribution, "
                f"which lays out on JAX only (running: {backend}); with "
                "TensorFlow use --strategy mirrored or multiworker"
            )
        if self.mesh is not None:
            if self.distribution == "none":
                raise ConfigError(
                    "--mesh applies to --distribution data or model"
                )
            parse_mesh(self.mesh)
        # Last: it loads Keras, so that the errors above come without
        # TensorFlow's start-up log.
        learnable = learnable_mode(self.learnable)
        if learnable != "none" and self.method != "wc":
            raise ConfigError(
                f"--learnable {self.learnable} needs --method wc, not "
                f"{self.method}"
            )
        return dataclasses.replace(
            self, learnable=learnable, milestones=milestones, **resolved
        )

    def output_dir(self):
        """`out` when set, else `runs/<run_name()>`."""
        if self.out is not None:
            return self.out
        return os.path.join("runs", self.run_name())

    def run_name(self):
        """A directory name for the run: the preset, else model-data-method."""
        if self.preset:
            return self.preset
        method = self.method.replace("+", "-")
        tuned = "-finetuned" if self.init_from else ""
        return f"{self.model}-{self.dataset}-{method}{tuned}"


def check_init_from(path):
    """`--init-from` names a `.keras` model or a `.weights.h5` file, with
    at most the `{seed}` placeholder (the files are checked by
    `train.paths.check_config`).

    Raises:
        ConfigError: otherwise.
    """
    if not path:
        raise ConfigError(f"--init-from must be a non-empty path, got {path!r}")
    if not path.endswith(INIT_SUFFIXES):
        raise ConfigError(
            "--init-from must name a .keras model or a .weights.h5 file, "
            f"got {path}"
        )
    try:
        formatted = path.format(seed=0)
    except (KeyError, IndexError, ValueError):
        formatted = None
    if formatted is None or "{" in path.replace(SEED_FIELD, ""):
        raise ConfigError(
            f"--init-from may hold {SEED_FIELD} (the seed number) and no "
            f"other braces, got {path}"
        )


def init_path(config, seed):
    """The `--init-from` file of `seed` (`{seed}` replaced), or None."""
    if config.init_from is None:
        return None
    return config.init_from.replace(SEED_FIELD, str(seed))


def learnable_mode(value):
    """`"none"`, `"fine"` or `"coarse"`: `--learnable` in the vocabulary of
    the layers and `keras_wc.convert` (`keras_wc.validation.learnable_mode`),
    which also takes `false`/`true` (any case; true = fine).

    Raises:
        ConfigError: any other value.
    """
    # Imported here: keras_wc loads Keras, which the rest of this module and
    # `python -m train --help` do without.
    from keras_wc.validation import learnable_mode as normalize

    if isinstance(value, str) and value.lower() in ("false", "true"):
        value = value.lower() == "true"
    try:
        return normalize(value)
    except ValueError as error:
        raise ConfigError(
            "--learnable must be none, fine, coarse, false or true, got "
            f"{value!r}"
        ) from error


def _flag(name):
    return f"--{name.replace('_', '-')}"


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(
            f"{_flag(name)} must be one of {', '.join(choices)}, got "
            f"{value!r}"
        )


def _check_number(name, value, low, high=math.inf, *, open_low=False,
                  open_high=False):
    """`value` is a finite number in the interval from `low` to `high`."""
    flag = _flag(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{flag} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")
    if (
        value < low
        or (open_low and value == low)
        or value > high
        or (open_high and value == high)
    ):
        if high == math.inf:
            interval = f"{'>' if open_low else '>='} {low}"
        else:
            interval = (
                f"in {'(' if open_low else '['}{low}, "
                f"{high}{')' if open_high else ']'}"
            )
        raise ConfigError(f"{flag} must be {interval}, got {value}")


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{_flag(name)} must be a positive integer, got {value!r}"
        )


_TYPE_NAMES = {
    str: "a string",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    list: "a list",
    type(None): "null",
}


def _check_type(name, value, annotation):
    """`value` has a type of the field annotation `annotation` (an int is a
    float; a bool is no number)."""
    kinds = typing.get_args(annotation) or (annotation,)
    expected = " or ".join(_TYPE_NAMES[kind] for kind in kinds)
    if list in kinds:
        kinds += (tuple,)
    if type(value) in kinds or (float in kinds and type(value) is int):
        return
    raise ConfigError(f"{name} must be {expected}, got {value!r}")


def load_file(path):
    """Reads a JSON `--config` file into a dict of `Config` fields.

    The file holds one object whose keys are `Config` field names (the flag
    names with `_` for `-`, e.g. `"weight_decay"`); a saved `config.json`
    is such a file.

    Raises:
        ConfigError: the file is missing, not JSON, not an object, or has
            unknown keys or values of the wrong type (checked here, to name
            the file; `Config.resolve` checks the ranges).
    """
    try:
        with open(path) as file:
            data = json.load(file)
    except OSError as error:
        raise ConfigError(
            f"cannot read --config {path}: {error.strerror}"
        ) from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(
            f"--config {path} is not valid JSON: {error}"
        ) from error
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config {path} must hold a JSON object, got "
            f"{type(data).__name__} {_short(data)}"
        )
    unknown = sorted(set(data) - set(Config.fields()))
    if unknown:
        raise ConfigError(
            f"--config {path} has unknown key(s) {unknown}; valid keys: "
            f"{', '.join(Config.fields())}"
        )
    for field in dataclasses.fields(Config):
        if field.name in data:
            _check_type(
                f"--config {path}: {field.name!r}",
                data[field.name],
                field.type,
            )
    return data


def _short(value, limit=40):
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
