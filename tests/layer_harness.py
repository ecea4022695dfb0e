"""The one layer-test harness, used for every keras_wc layer class.

Modelled on Keras's `run_layer_test` (keras/src/testing/test_case.py) without
importing `keras.src`. `run_layer_test` checks, in order:

1. `get_config` → `from_config` and `serialize_keras_object` round trips;
2. the weight counts after `build`;
3. the symbolic (`KerasTensor`) and eager call shapes;
4. every trainable weight gets a non-`None`, finite gradient;
5. one `fit` step changes every trainable weight, with `jit_compile=True`
   (XLA) on TensorFlow and JAX, eagerly on PyTorch (see `check_fit_step`);
6. `mixed_float16`: float16 output, float32 variables;
7. `.keras` and `.weights.h5` round trips after randomising every variable:
   identical outputs and identical raw variables;
8. one step distributed over 2 devices equals the same step on one device:
   TensorFlow's `MirroredStrategy` (replicas stay in sync) or JAX's
   `keras.distribution.DataParallel` (PyTorch runs on one device here).

Everything but 8 runs on every backend (`KERAS_BACKEND`).
"""

import contextlib
import json
import os
import tempfile

import keras
import numpy as np
from backend_utils import BACKEND, data_parallel, gradients, total_loss

POSITIVE = ("a", "b", "g")
_STRATEGY = []


def mirrored_strategy():
    """The suite's one 2-replica `MirroredStrategy` over the 2 logical CPUs.

    One instance for the whole process: several instances with collective
    all-reduce collide on their collective keys.
    """
    import tensorflow as tf

    if not _STRATEGY:
        _STRATEGY.append(
            tf.distribute.MirroredStrategy(
                ["/cpu:0", "/cpu:1"],
                cross_device_ops=tf.distribute.ReductionToOneDevice(),
            )
        )
    return _STRATEGY[0]


def randomize_variables(layer, seed=0):
    """Assigns non-default random values to every float variable of `layer`.

    Variables named `a`, `b` or `g` get values in (0.5, 1.5); others get
    N(0, 0.1²) values (not the initializer's, so that a variable silently
    dropped or re-initialized by a round trip is detected).
    """
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        if "float" not in str(variable.dtype):
            continue
        leaf = variable.path.split("/")[-1]
        shape = tuple(variable.shape)
        if leaf in POSITIVE:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = 0.1 * rng.standard_normal(shape)
        variable.assign(value.astype(variable.dtype))


def _model(layer_cls, init_kwargs, input_shape, name="layer"):
    inputs = keras.Input(input_shape[1:], batch_size=None)
    layer = layer_cls(**init_kwargs, name=name)
    return keras.Model(inputs, layer(inputs)), layer


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    randomize=randomize_variables,
    run_mixed_precision=True,
    run_distributed=True,
):
    """Runs every generic check on one layer class. See the module docstring.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments (without `name`).
        input_shape: a full input shape with a batch size, e.g. `(2, 8)`.
        expected_output_shape: the full output shape.
        expected_num_trainable_weights: trainable variables after build.
        expected_num_non_trainable_weights: non-trainable variables.
        randomize: `fn(layer)` that assigns non-default values to the
            layer's variables before the save/load round trips.
        run_mixed_precision: whether to run the `mixed_float16` check.
        run_distributed: whether to run the `MirroredStrategy` check.
    """
    _check_config(layer_cls, init_kwargs)
    model, layer = _model(layer_cls, init_kwargs, input_shape)
    if len(layer.trainable_weights) != expected_num_trainable_weights:
        paths = [w.path for w in layer.trainable_weights]
        raise AssertionError(
            f"{layer_cls.__name__}: expected {expected_num_trainable_weights} "
            f"trainable weights, got {paths}"
        )
    if len(layer.non_trainable_weights) != expected_num_non_trainable_weights:
        raise AssertionError(
            f"{layer_cls.__name__}: expected "
            f"{expected_num_non_trainable_weights} non-trainable weights, got "
            f"{[w.path for w in layer.non_trainable_weights]}"
        )
    symbolic = layer_cls(**init_kwargs)(keras.KerasTensor(input_shape))
    _equal(tuple(symbolic.shape), tuple(expected_output_shape), "symbolic")
    x = _random(input_shape, 1)
    _equal(tuple(model(x).shape), tuple(expected_output_shape), "eager")
    _check_gradients(model, x)
    check_fit_step(model, x)
    if run_mixed_precision:
        _check_mixed_precision(layer_cls, init_kwargs, input_shape)
    _check_saving(model, layer, randomize, x)
    if run_distributed and BACKEND in _DISTRIBUTIONS:
        _check_distributed(layer_cls, init_kwargs, input_shape, randomize)


def _equal(got, expected, what):
    if got != expected:
        raise AssertionError(f"{what} output shape {got} != {expected}")


def _check_config(layer_cls, init_kwargs):
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    revived = layer_cls.from_config(config)
    if revived.get_config() != config:
        raise AssertionError(
            f"from_config(get_config()) changed the config:\n{config}\n"
            f"{revived.get_config()}"
        )
    serialized = json.loads(
        json.dumps(keras.saving.serialize_keras_object(layer))
    )
    revived = keras.saving.deserialize_keras_object(serialized)
    if type(revived) is not layer_cls or revived.get_config() != config:
        raise AssertionError("serialize_keras_object round trip failed")


def _check_gradients(model, x):
    variables = model.trainable_variables
    grads = gradients(
        lambda: total_loss(model(x, training=True), model), variables
    )
    for variable, grad in zip(variables, grads, strict=True):
        if not np.any(grad):
            raise AssertionError(f"{variable.path} gets no gradient")
        if not np.all(np.isfinite(grad)):
            raise AssertionError(f"{variable.path} gets a non-finite gradient")


def check_fit_step(model, x, jit_compile=None):
    """One `fit` step changes every trainable weight. Compiled (XLA) on
    TensorFlow and JAX; on PyTorch `torch.compile` takes 30-60 s per model
    on this CPU, so the harness fits eagerly there and `test_backends`
    compiles a model of each method (`check_fit_step(..., True)`)."""
    if jit_compile is None:
        jit_compile = BACKEND != "torch"
    if BACKEND == "torch" and jit_compile:
        import torch

        # torch.compile re-traces Keras's shared step function for every
        # model and then switches to dynamic shapes, with which Inductor
        # (torch 2.13, CPU) fails on 3D convolutions of a reparameterized
        # kernel; one model per process, as here after a reset, compiles.
        torch._dynamo.reset()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    y = _random(tuple(model(x).shape), 2)
    clone.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile=jit_compile,
    )
    before = [np.array(w) for w in clone.trainable_weights]
    history = clone.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    if not np.isfinite(history.history["loss"][0]):
        raise AssertionError("jit-compiled fit gave a non-finite loss")
    for variable, old in zip(clone.trainable_weights, before, strict=True):
        if np.array_equal(np.asarray(variable), old):
            raise AssertionError(f"{variable.path} did not change in fit")


def _check_mixed_precision(layer_cls, init_kwargs, input_shape):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = layer_cls(**init_kwargs)
        y = layer(_random(input_shape, 3))
        if keras.backend.standardize_dtype(y.dtype) != "float16":
            raise AssertionError(f"mixed_float16 output dtype is {y.dtype}")
        for variable in layer.weights:
            if "float" in str(variable.dtype) and variable.dtype != "float32":
                raise AssertionError(
                    f"{variable.path} is {variable.dtype} under mixed_float16"
                )
        if not np.all(np.isfinite(np.asarray(y, dtype="float32"))):
            raise AssertionError("mixed_float16 output is not finite")
    finally:
        keras.config.set_dtype_policy(previous)


def _check_saving(model, layer, randomize, x):
    randomize(layer)
    expected = np.asarray(model(x))
    raw = {v.path: np.array(v) for v in model.weights}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        _same(loaded, raw, expected, x, ".keras")
        weights_path = os.path.join(tmp, "model.weights.h5")
        model.save_weights(weights_path)
        fresh = keras.models.clone_model(model)
        fresh.load_weights(weights_path)
        _same(fresh, raw, expected, x, ".weights.h5")


def _same(model, raw, expected, x, what):
    got = {v.path: np.array(v) for v in model.weights}
    if sorted(got) != sorted(raw):
        raise AssertionError(
            f"{what}: variables {sorted(got)} != {sorted(raw)}"
        )
    for path, value in raw.items():
        if not np.array_equal(got[path], value):
            raise AssertionError(f"{what}: variable {path} changed on reload")
    np.testing.assert_array_equal(np.asarray(model(x)), expected, what)


@contextlib.contextmanager
def _jax_data_parallel():
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(data_parallel())
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def _mirrored_value(variable):
    """The value of a MirroredStrategy variable, after checking that every
    replica holds the same one."""
    replicas = [np.asarray(t) for t in variable.value.values]
    for value in replicas[1:]:
        np.testing.assert_array_equal(value, replicas[0], variable.path)
    return replicas[0]


# Backend → (name, scope of the distributed model, value of its variable).
_DISTRIBUTIONS = {
    "jax": ("DataParallel", _jax_data_parallel, np.asarray),
    "tensorflow": (
        "MirroredStrategy",
        lambda: mirrored_strategy().scope(),
        _mirrored_value,
    ),
}


def _check_distributed(layer_cls, init_kwargs, input_shape, randomize):
    """One `fit` step with the batch split over 2 devices (JAX's
    DataParallel, TensorFlow's MirroredStrategy) equals it on one device."""
    name, scope, value_of = _DISTRIBUTIONS[BACKEND]
    x = _random((4,) + tuple(input_shape[1:]), 4)
    reference, layer = _model(layer_cls, init_kwargs, x.shape)
    randomize(layer)
    y = _random(tuple(reference(x).shape), 5)
    weights = reference.get_weights()

    def step(model):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)

    step(reference)
    with scope():
        distributed, _ = _model(layer_cls, init_kwargs, x.shape)
        distributed.set_weights(weights)
        step(distributed)
    for expected, variable in zip(
        reference.weights, distributed.weights, strict=True
    ):
        np.testing.assert_allclose(
            value_of(variable),
            np.asarray(expected),
            rtol=1e-4,
            atol=1e-5,
            err_msg=f"{name} step differs: {variable.path}",
        )
