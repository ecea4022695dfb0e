"""What one seed trains: its data, model and optimizer, from a `Config`.

`assemble(config, seed, ...)` loads the data and builds, reparameterizes and
compiles the model; it writes nothing, so that bad data or model settings
fail before a run has any output. Its steps are functions of their own
(`load_data`, `build_model`, `with_weight_decay`, `apply_method`,
`make_optimizer`, `compile_model`), so that a test or a notebook can run
them one at a time.
"""

import contextlib
import math
import typing

import keras

import keras_wc
import models
from keras_wc import conversion, initialization
from keras_wc import optimizers as wc_optimizers
from train import data as data_lib
from train import schedules
from train.config import DECOUPLED, ConfigError, init_path
from train.data import DataBundle
from train.devices import ModelParallelPlan

# The normalization of `models.build` that a `--method` selects.
_NORMS = {"bn": "bn", "mobn": "mobn", "wn+mobn": "mobn"}
_KERNEL_REGULARIZERS = (
    "kernel_regularizer",
    "depthwise_regularizer",
    "pointwise_regularizer",
)
_OTHER_REGULARIZERS = (
    "bias_regularizer",
    "gamma_regularizer",
    "beta_regularizer",
)
# The variables `--weight-decay-scope kernels` leaves out of a decoupled
# decay, as it leaves out their regularizers.
_OTHER_VARIABLES = ("bias", "gamma", "beta")


class Assembled(typing.NamedTuple):
    """The data of a seed, its compiled model and the steps of an epoch."""

    bundle: DataBundle
    model: keras.Model
    steps_per_epoch: int


def assemble(config, seed, *, strategy, build=models.build):
    """The data and the compiled model of `seed`, in `strategy`'s scope.

    Sets the global random seed to `seed` first, so that the model's initial
    weights depend on the seed only. Writes no file.

    Raises:
        ConfigError: bad data or model settings, e.g. no prepared data in
            `--data-dir` or `a` too small for the initial weights.
    """
    keras.utils.set_random_seed(seed)
    with _as_config_error():
        bundle = load_data(config, seed)
    steps = steps_per_epoch(config, bundle)
    policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        if isinstance(strategy, ModelParallelPlan):
            # The layout map is written for the plain network, built once
            # outside the distribution; the run's network is built again,
            # from the same seed, inside it.
            with _as_config_error():
                strategy.lay_out(
                    network(config, bundle, build, init_path(config, seed))
                )
            keras.utils.set_random_seed(seed)
        with strategy.scope(), _as_config_error():
            model = build_model(
                config, bundle, build=build, init_file=init_path(config, seed)
            )
            compile_model(
                model, config, make_optimizer(config, steps, model=model)
            )
    finally:
        keras.config.set_dtype_policy(policy)
    return Assembled(bundle, model, steps)


@contextlib.contextmanager
def _as_config_error():
    """Reports the argument errors of the data and model set-up (e.g. no
    prepared data, `a` too small for the initial weights) as `ConfigError`.
    A `TypeError` is left alone: the config's types are checked, so it is a
    bug, not a bad setting.
    """
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error)) from error


def load_data(config, seed):
    """The `train.data.DataBundle` of `config` for `seed`."""
    return data_lib.load(
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        val_split=config.val_split,
        limit_train=config.limit_train,
        seed=seed,
        augment=config.augment,
        preprocess=config.preprocess,
    )


def steps_per_epoch(config, bundle):
    """`--steps-per-epoch`, else one pass over the training examples."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    return max(1, math.ceil(bundle.num_train / config.batch_size))


def build_model(config, bundle, *, build=models.build, init_file=None):
    """The network of `config` for `bundle`, ready to compile.

    `models.build` with the normalization `--method` selects (or the
    trained model of `init_file`), then weight decay (`with_weight_decay`;
    not for the optimizers with a decoupled decay of their own), then the
    reparameterization and its initialization (`apply_method`).

    Args:
        config: a resolved `Config`.
        bundle: the `DataBundle` (input shape, classes, WN init images).
        build: the model builder, `models.build` (a test may pass a smaller
            stand-in with the same signature).
        init_file: a trained model to start from (`--init-from`, for this
            seed): a `.keras` file, or a `.weights.h5` file loaded into
            the model `build` makes.

    Raises:
        ConfigError: `init_file` cannot be loaded or does not fit the data.
    """
    model = network(config, bundle, build, init_file)
    if config.optimizer not in DECOUPLED:
        model = with_weight_decay(
            model, config.weight_decay, config.weight_decay_scope
        )
    return apply_method(model, config, bundle)


def network(config, bundle, build=models.build, init_file=None):
    """The plain network of `config` for `bundle`: `build` with the
    normalization `--method` selects, or the trained model of `init_file`
    (see `build_model`)."""
    if init_file is not None and init_file.endswith(".keras"):
        return load_trained(init_file, bundle)
    options = {}
    if config.method in _NORMS:
        options["norm"] = _NORMS[config.method]
    model = build(
        config.model,
        num_classes=bundle.num_classes,
        input_shape=tuple(bundle.input_shape),
        **options,
    )
    if init_file is not None:
        try:
            model.load_weights(init_file)
        except Exception as error:  # h5py, Keras: a file of the user's
            raise ConfigError(
                f"--init-from {init_file} does not hold weights of "
                f"--model {config.model} for {config.dataset}: "
                f"{_first_line(error)}"
            ) from error
    return model


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_trained(path, bundle):
    """The model saved in the `.keras` file `path`, checked against the
    data: its input shape and number of outputs (logits).

    Raises:
        ConfigError: the file cannot be loaded, or does not fit `bundle`.
    """
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # zipfile, JSON, Keras: a file of the user's
        raise ConfigError(
            f"--init-from {path} cannot be loaded as a Keras model: "
            f"{_first_line(error)}"
        ) from error
    try:
        inputs = tuple(model.input_shape[1:])
        outputs = model.output_shape[-1]
    except (AttributeError, ValueError, TypeError, IndexError) as error:
        raise ConfigError(
            f"--init-from {path}: the model needs one input and one output "
            f"({_first_line(error)})"
        ) from error
    if inputs != tuple(bundle.input_shape) or outputs != bundle.num_classes:
        raise ConfigError(
            f"--init-from {path}: the model maps {inputs} to {outputs} "
            f"outputs; the data needs {tuple(bundle.input_shape)} to "
            f"{bundle.num_classes}"
        )
    return model


def with_weight_decay(model, weight_decay, scope="all"):
    """A copy of `model` (same weights) with PyTorch-style weight decay.

    `weight_decay` is PyTorch's (the papers' 1e-4, 5e-4), turned into the
    equal Keras penalty by `keras_wc.l2_from_pytorch` (`L2(wd/2)`) and set as
    the `kernel_regularizer` of every kernel layer (`depthwise_/pointwise_`
    for separable ones). `keras_wc.convert` carries it into the
    reparameterized layers, where it acts on `w = Ψ(v)` for fixed WC (WC
    paper Eq. 5), on `v` for learnable WC (never on `a`, `b`; §III-B), on
    `w = g·v/‖v‖` for WN.

    `scope="all"` also decays biases and the normalization layers' `gamma`
    and `beta`, as PyTorch's `SGD(model.parameters(), weight_decay=...)`
    did in the papers' code; `"kernels"` decays the kernels only.

    Args:
        model: a Sequential or Functional model.
        weight_decay: PyTorch's weight decay (>= 0); 0 returns `model`.
        scope: `"all"` or `"kernels"`.
    """
    regularizer = keras_wc.l2_from_pytorch(weight_decay)
    if regularizer is None:
        return model
    keys = _KERNEL_REGULARIZERS
    if scope == "all":
        keys += _OTHER_REGULARIZERS
    serialized = keras.regularizers.serialize(regularizer)

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        for key in keys:
            if key in config:
                config[key] = serialized
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def apply_method(model, config, bundle):
    """Reparameterizes `model` as `config.method` says.

    - `wc`: `keras_wc.convert(method="wc", a, b, compander, learnable)`,
      with `learnable` False for `"none"`, else `"fine"` or `"coarse"`.
    - `pp`: `keras_wc.convert(method="pp", alpha)`.
    - `wn`, `wn+mobn`: `keras_wc.convert(method="wn", init_scale)`, then
      `keras_wc.initialize` on `bundle.init_batch(init_examples)` (the WN
      recipe's 500 training images).
    - `none`, `bn`, `mobn`: the model as built.
    """
    if config.method == "wc":
        return conversion.convert(
            model,
            "wc",
            a=config.a,
            b=config.b,
            compander=config.compander,
            learnable=False if config.learnable == "none" else config.learnable,
        )
    if config.method == "pp":
        return conversion.convert(model, "pp", alpha=config.alpha)
    if config.method in ("wn", "wn+mobn"):
        model = conversion.convert(model, "wn", init_scale=config.init_scale)
        count = min(config.init_examples, bundle.num_train)
        initialization.initialize(model, bundle.init_batch(count))
    return model


def make_optimizer(config, steps, model=None):
    """The optimizer of `config` with its learning-rate schedule.

    SGD is Keras's (`v ← μv − η·g; w ← w + v`), which equals PyTorch's form
    (`v ← μv + g; w ← w − η·v`) while η is constant. AdamW (plain or
    modified) gets `--weight-decay` as its decoupled decay; given `model`,
    it leaves out `keras_wc.optimizers.no_decay_variables(model)` (learnable
    a, b; WN directions) and, with `--weight-decay-scope kernels`, the
    biases and normalization parameters.
    """
    learning_rate = schedules.get(
        config.schedule,
        config.lr,
        epochs=config.epochs,
        steps_per_epoch=steps,
        milestones=config.milestones,
        gamma=config.gamma,
    )
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if config.optimizer == "modified-adam":
        return wc_optimizers.ModifiedAdam(learning_rate)
    cls = (
        keras.optimizers.AdamW
        if config.optimizer == "adamw"
        else wc_optimizers.ModifiedAdamW
    )
    optimizer = cls(learning_rate, weight_decay=config.weight_decay)
    if model is not None:
        optimizer.exclude_from_weight_decay(
            var_list=decay_exclusions(model, config.weight_decay_scope)
        )
    return optimizer


def decay_exclusions(model, scope="all"):
    """The variables of `model` a decoupled weight decay leaves alone:
    `keras_wc.optimizers.no_decay_variables(model)`, plus, for `scope`
    `"kernels"`, the biases and the normalization layers' gamma and beta."""
    excluded = wc_optimizers.no_decay_variables(model)
    if scope == "kernels":
        known = {id(v) for v in excluded}
        excluded += [
            v
            for v in model.trainable_variables
            if v.name in _OTHER_VARIABLES and id(v) not in known
        ]
    return excluded


def compile_model(model, config, optimizer):
    """Compiles with cross-entropy on logits and accuracy."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile="auto" if config.jit is None else config.jit,
        run_eagerly=config.run_eagerly,
    )
    return model
