"""`keras_wc.initialization.initialize`: data-dependent init of WN layers."""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf  # tf.data feeds every Keras backend
from backend_utils import BACKEND, data_parallel
from layer_harness import mirrored_strategy

from keras_wc.initialization import initialize
from keras_wc.layers import wn_layers
from keras_wc.layers.layer_types import LAYER_TYPES
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.wn_base import WeightNormMixin

# Float32 error of per-channel moments over a few hundred values.
ATOL = 1e-5


def _data(shape, seed=0):
    """Non-standardized inputs: per-feature offsets and scales."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-2, 2, shape[1:])
    scale = rng.uniform(0.5, 3, shape[1:])
    return (offset + scale * rng.standard_normal(shape)).astype("float32")


def _stack(inputs, blocks, mobn, init_scale, data_init=True):
    """WN blocks; returns (model, probe outputs = every pre-activation)."""
    h = inputs
    pre_activations = []
    for i, make in enumerate(blocks):
        if i == len(blocks) - 1:
            h = make(use_bias=True, init_scale=init_scale, data_init=data_init)(
                h
            )
            pre_activations.append(h)
            break
        h = make(use_bias=not mobn, init_scale=init_scale, data_init=data_init)(
            h
        )
        if mobn:
            h = MeanOnlyBatchNorm()(h)
        pre_activations.append(h)
        h = keras.layers.LeakyReLU(0.1)(h)
        if len(h.shape) == 4 and i == len(blocks) - 2:
            h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, h), keras.Model(inputs, pre_activations)


def _dense_model(mobn, init_scale, data_init=True):
    blocks = [
        lambda **kw: wn_layers.WNDense(16, **kw),
        lambda **kw: wn_layers.WNDense(12, **kw),
        lambda **kw: wn_layers.WNDense(6, **kw),
    ]
    return _stack(keras.Input((10,)), blocks, mobn, init_scale, data_init)


def _conv_model(mobn, init_scale, data_init=True):
    blocks = [
        lambda **kw: wn_layers.WNConv2D(8, 3, padding="same", **kw),
        lambda **kw: wn_layers.WNConv2D(8, 3, **kw),
        lambda **kw: wn_layers.WNDense(5, **kw),
    ]
    return _stack(keras.Input((6, 6, 3)), blocks, mobn, init_scale, data_init)


def _channel_stats(t, unit_axes):
    t = np.asarray(t, "float64")
    axes = tuple(a for a in range(t.ndim) if a not in unit_axes)
    return t.mean(axis=axes), t.std(axis=axes)


def _wn_layers(model):
    return [
        layer for layer in model.layers if isinstance(layer, WeightNormMixin)
    ]


@pytest.mark.parametrize("init_scale", [1.0, 0.5])
@pytest.mark.parametrize("mobn", [False, True], ids=["wn", "wn+mobn"])
@pytest.mark.parametrize("builder", [_dense_model, _conv_model])
def test_pre_activations_are_standardized(builder, mobn, init_scale):
    model, probe = builder(mobn, init_scale)
    x = _data((128,) + tuple(model.input_shape[1:]))
    names = initialize(model, x)
    assert names == [layer.name for layer in _wn_layers(model)]
    # MOBN subtracts the batch mean, as during the init pass.
    outputs = probe(x, training=mobn)
    assert len(outputs) == 3
    for t in outputs:
        mean, std = _channel_stats(t, (t.ndim - 1,))
        np.testing.assert_allclose(mean, 0.0, atol=ATOL)
        np.testing.assert_allclose(std, init_scale, atol=ATOL)


def test_mean_only_batch_norm_model_keeps_moving_means_and_has_no_bias():
    model, _ = _conv_model(mobn=True, init_scale=1.0)
    initialize(model, _data((32, 6, 6, 3)))
    mobns = [
        layer for layer in model.layers if isinstance(layer, MeanOnlyBatchNorm)
    ]
    assert len(mobns) == 2
    for layer in mobns:
        np.testing.assert_array_equal(np.asarray(layer.moving_mean), 0.0)
    for layer in _wn_layers(model)[:2]:
        assert layer.bias is None
        assert not np.allclose(np.asarray(layer.g), 1.0)


# (class, kwargs, input shape, output axes indexing units): the test case
# of each row of the table of layer types with data init (a batch of 32,
# the units on the last output axis), and einsum equations with several or
# implicit unit axes.
LAYER_CASES = [
    (
        wn_layers.CLASSES["WN" + row.parent.__name__],
        row.case.kwargs,
        (32, *row.case.input_shape[1:]),
        (len(row.case.output_shape) - 1,),
    )
    for row in LAYER_TYPES
    if row.data_init is not None
] + [
    (
        wn_layers.WNEinsumDense,
        {"equation": "abc,bcd->abd", "output_shape": (4, 5), "bias_axes": "bd"},
        (64, 4, 3),
        (1, 2),
    ),
    (
        wn_layers.WNEinsumDense,
        {"equation": "...c,cd->...d", "output_shape": 5, "bias_axes": "d"},
        (32, 3, 3),
        (2,),
    ),
]
LAYER_IDS = [case[0].__name__[2:] for case in LAYER_CASES[:-2]] + [
    "Einsum-2-unit-axes",
    "Einsum-ellipsis",
]


@pytest.mark.parametrize(
    "cls,kwargs,in_shape,unit_axes", LAYER_CASES, ids=LAYER_IDS
)
def test_every_layer_type_is_standardized(cls, kwargs, in_shape, unit_axes):
    layer = cls(**kwargs, activation="relu", init_scale=0.5)
    x = _data(in_shape, seed=1)
    layer(x)
    separable = "Separable" in cls.__name__
    depthwise_g = np.asarray(layer.depthwise_g) if separable else None
    assert initialize(layer, x) == [layer.name]
    assert layer.is_initialized()
    # The pre-activation: the layer's output without its activation.
    layer.activation = None
    mean, std = _channel_stats(layer(x), unit_axes)
    np.testing.assert_allclose(mean, 0.0, atol=ATOL)
    np.testing.assert_allclose(std, 0.5, atol=ATOL)
    if separable:  # only the pointwise gain is data-initialized
        np.testing.assert_array_equal(
            np.asarray(layer.depthwise_g), depthwise_g
        )


def test_channels_first_statistics_are_per_channel():
    # Without bias: channels-first convolutions are broken on CPU upstream
    # (keras-team/keras#23650); with Keras 3.15 / TF 2.21 a plain Conv2D or
    # Conv3D adds bias[0] to every channel.
    layer = wn_layers.WNConv3D(
        3, 2, data_format="channels_first", use_bias=False, init_scale=0.5
    )
    x = _data((16, 2, 4, 4, 4))
    layer(x)
    initialize(layer, x)
    _, std = _channel_stats(layer(x), (1,))
    np.testing.assert_allclose(std, 0.5, atol=ATOL)


def test_uses_the_normalized_direction_not_v():
    """tfa computed the statistics with v instead of v/‖v‖ (std 1/‖v‖)."""
    x = _data((256, 8))
    layer = wn_layers.WNDense(
        4, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0)
    )
    layer(x)
    v_norm = np.sqrt(np.sum(np.asarray(layer.v) ** 2, axis=0))
    assert np.all(v_norm > 3.0)
    initialize(layer, x)
    mean, std = _channel_stats(layer(x), (1,))
    np.testing.assert_allclose(std, 1.0, atol=ATOL)
    np.testing.assert_allclose(mean, 0.0, atol=ATOL)
    assert np.all(np.abs(std - 1.0 / v_norm) > 0.5)


def test_log_scale_initialization_sets_s():
    x = _data((128, 6))
    layer = wn_layers.WNDense(3, log_scale=True, init_scale=0.5)
    layer(x)
    initialize(layer, x)
    t = np.asarray(x @ (np.asarray(layer.v) / np.linalg.norm(layer.v, axis=0)))
    np.testing.assert_allclose(
        np.asarray(layer.raw_gains["kernel"]),
        np.log(0.5 / np.sqrt(t.var(axis=0) + 1e-10)),
        rtol=1e-4,
    )


def test_second_call_is_a_no_op():
    model, _ = _dense_model(mobn=False, init_scale=1.0)
    x = _data((64, 10))
    assert len(initialize(model, x)) == 3
    before = [np.array(w) for w in model.weights]
    assert initialize(model, _data((64, 10), seed=9)) == []
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


@pytest.mark.parametrize("fmt", ["keras", "weights.h5"])
def test_init_never_reruns_after_loading(fmt):
    model, _ = _conv_model(mobn=True, init_scale=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = _data((32, 6, 6, 3))
    y = np.zeros((32, 5), "float32")
    initialize(model, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"model.{fmt}")
        if fmt == "keras":
            model.save(path)
            loaded = keras.saving.load_model(path)
        else:
            model.save_weights(path)
            loaded, _ = _conv_model(mobn=True, init_scale=1.0)
            loaded.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
            assert not any(
                layer.is_initialized() for layer in _wn_layers(loaded)
            )
            loaded.load_weights(path)
    assert all(layer.is_initialized() for layer in _wn_layers(loaded))
    saved = [np.array(w) for w in model.weights]
    assert initialize(loaded, _data((32, 6, 6, 3), seed=5)) == []
    # Resumed training (zero learning rate): nothing is re-initialized.
    loaded.fit(x, y, batch_size=16, epochs=2, verbose=0)
    wn_paths = {w.path for layer in _wn_layers(loaded) for w in layer.weights}
    for old, new in zip(saved, loaded.weights, strict=True):
        if new.path in wn_paths:
            np.testing.assert_array_equal(old, np.asarray(new), new.path)


def test_training_an_uninitialized_data_init_model_fails_loudly():
    model, _ = _dense_model(mobn=False, init_scale=1.0)
    x, y = _data((16, 10)), np.zeros((16, 6), "float32")
    model.predict(x, verbose=0)  # inference is allowed
    with pytest.raises(RuntimeError, match="data_init=True"):
        model(x, training=True)
    weights = model.get_weights()
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    with pytest.raises(RuntimeError, match=r"keras_wc\.initialize\(model, x\)"):
        model.fit(x, y, epochs=1, verbose=0)
    if BACKEND == "jax":
        # Keras's JAX trainer left the variables detached: said, and the
        # model is built again.
        with pytest.raises(RuntimeError, match=r"hold no value.*JAX"):
            initialize(model, x)
        model, _ = _dense_model(mobn=False, init_scale=1.0)
        model.set_weights(weights)
    initialize(model, x)
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_data_init_false_trains_without_initialize():
    model, _ = _dense_model(mobn=False, init_scale=1.0, data_init=False)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(_data((16, 10)), np.zeros((16, 6)), epochs=1, verbose=0)
    assert not any(layer.is_initialized() for layer in _wn_layers(model))
    assert len(initialize(model, _data((16, 10)))) == 3


def test_jit_compiled_training_after_initialize():
    model, _ = _conv_model(mobn=True, init_scale=1.0)
    x = _data((32, 6, 6, 3))
    y = np.random.default_rng(0).standard_normal((32, 5)).astype("float32")
    initialize(model, x)
    before = [np.array(w) for w in model.trainable_weights]
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=True
    )
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    for old, new in zip(before, model.trainable_weights, strict=True):
        assert not np.array_equal(old, np.asarray(new)), new.path
    assert all(layer.is_initialized() for layer in _wn_layers(model))


def test_mixed_precision_initialization():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model, probe = _conv_model(mobn=False, init_scale=1.0)
        x = _data((64, 6, 6, 3))
        assert len(initialize(model, x)) == 3
        outputs = probe(x)
    finally:
        keras.config.set_dtype_policy(previous)
    for layer in _wn_layers(model):
        for variable in layer.weights:
            assert variable.dtype in ("float32", "bool"), variable.path
    for t in outputs:
        assert keras.backend.standardize_dtype(t.dtype) == "float16"
        mean, std = _channel_stats(t, (t.ndim - 1,))
        np.testing.assert_allclose(mean, 0.0, atol=1e-2)
        np.testing.assert_allclose(std, 1.0, atol=1e-2)


@pytest.mark.backends("tensorflow", reason="tf.distribute.MirroredStrategy")
def test_mirrored_initialization_equals_single_device():
    x = _data((32, 6, 6, 3))
    reference, _ = _conv_model(mobn=True, init_scale=0.5)
    weights = reference.get_weights()
    y = np.zeros((32, 5), "float32")
    with mirrored_strategy().scope():
        mirrored, _ = _conv_model(mobn=True, init_scale=0.5)
        mirrored.set_weights(weights)
        mirrored.compile(optimizer="sgd", loss="mse")
    with pytest.raises(RuntimeError, match="keras_wc.initialize"):
        mirrored.fit(x, y, batch_size=8, verbose=0)
    with mirrored_strategy().scope():
        names = initialize(mirrored, x)
    assert len(names) == len(initialize(reference, x)) == 3
    for expected, variable in zip(
        reference.weights, mirrored.weights, strict=True
    ):
        replicas = [np.asarray(t) for t in variable.value.values]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[1], replicas[0], variable.path)
        np.testing.assert_allclose(
            replicas[0],
            np.asarray(expected),
            rtol=1e-6,
            atol=1e-7,
            err_msg=variable.path,
        )
    with mirrored_strategy().scope():
        mirrored.compile(optimizer="sgd", loss="mse")
    history = mirrored.fit(x, y, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.backends("tensorflow", reason="tf.distribute replica context")
def test_initialize_inside_a_replica_context_raises():
    strategy = mirrored_strategy()
    with strategy.scope():
        model, _ = _dense_model(mobn=False, init_scale=1.0)
    x = _data((8, 10))
    with pytest.raises(RuntimeError, match="cross-replica"):
        strategy.run(lambda: initialize(model, x))


@pytest.mark.backends("jax", reason="keras.distribution.DataParallel")
def test_data_parallel_initialization_equals_single_device():
    x = _data((32, 6, 6, 3))
    y = np.zeros((32, 5), "float32")
    reference, _ = _conv_model(mobn=True, init_scale=0.5)
    weights = reference.get_weights()
    assert len(initialize(reference, x)) == 3
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(data_parallel())
    try:
        parallel, _ = _conv_model(mobn=True, init_scale=0.5)
        parallel.set_weights(weights)
        with pytest.raises(RuntimeError, match="keras_wc.initialize"):
            parallel(x, training=True)
        assert len(initialize(parallel, x)) == 3
        for expected, variable in zip(
            reference.weights, parallel.weights, strict=True
        ):
            np.testing.assert_allclose(
                np.asarray(variable),
                np.asarray(expected),
                rtol=1e-6,
                atol=1e-7,
                err_msg=variable.path,
            )
        parallel.compile(optimizer="sgd", loss="mse")
        history = parallel.fit(x, y, batch_size=8, verbose=0)
    finally:
        keras.distribution.set_distribution(previous)
    assert np.isfinite(history.history["loss"][0])


def test_dead_units_get_a_finite_documented_init():
    x = _data((64, 4))
    layer = wn_layers.WNDense(3, init_scale=0.5)
    layer(x)
    v = np.array(layer.v)
    v[:, 0] = 0.0  # unit 0 outputs t = 0 for every sample
    layer.v.assign(v)
    initialize(layer, x)
    g, b = np.asarray(layer.g), np.asarray(layer.bias)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(b))
    assert g[0] == 0.5 and b[0] == 0.0
    y = np.asarray(layer(x))
    np.testing.assert_array_equal(y[:, 0], 0.0)
    np.testing.assert_allclose(y[:, 1:].std(axis=0), 0.5, atol=ATOL)
    # Constant inputs: every unit is dead, outputs 0 and stays finite.
    constant = np.tile(x[:1], (16, 1))
    layer = wn_layers.WNDense(3, init_scale=0.5)
    layer(constant)
    initialize(layer, constant)
    np.testing.assert_allclose(np.asarray(layer.g), 0.5)
    np.testing.assert_allclose(np.asarray(layer(constant)), 0.0, atol=1e-6)


@pytest.mark.parametrize("form", ["dataset", "generator", "tuple"])
def test_data_forms_use_the_first_num_samples(form):
    x = _data((64, 10))
    y = np.zeros((64, 6), "float32")
    model, _ = _dense_model(mobn=False, init_scale=1.0)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    initialize(twin, x[:40])
    if form == "dataset":
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    elif form == "generator":
        data = (x[i : i + 16] for i in range(0, 64, 16))
    else:
        data = (x, y)
    initialize(model, data, num_samples=40)
    for expected, got in zip(twin.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(got))


def test_dataset_without_num_samples_uses_the_first_batch():
    x = _data((64, 10))
    model, _ = _dense_model(mobn=False, init_scale=1.0)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    initialize(model, tf.data.Dataset.from_tensor_slices(x).batch(24))
    initialize(twin, x[:24])
    for expected, got in zip(twin.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(got))


def test_nested_shared_and_subclassed_models():
    x = _data((64, 10))
    inner = keras.Sequential(
        [
            keras.Input((10,)),
            wn_layers.WNDense(10, name="inner"),
            keras.layers.ReLU(),
        ]
    )
    shared = wn_layers.WNDense(8, name="shared")
    a, b = keras.Input((10,)), keras.Input((10,))
    merged = keras.layers.Concatenate()([shared(a), shared(inner(b))])
    model = keras.Model([a, b], wn_layers.WNDense(3, name="head")(merged))
    names = initialize(model, [x, x[::-1].copy()])
    assert sorted(names) == ["head", "inner", "shared"]

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.first = wn_layers.WNConv1D(4, 3, activation="relu")
            self.second = wn_layers.WNDense(2)

        def call(self, inputs):
            return self.second(self.first(inputs))

    subclassed = Subclassed()  # not built: initialize builds it
    x = _data((16, 8, 3))
    assert len(initialize(subclassed, x)) == 2
    mean, std = _channel_stats(subclassed(x), (2,))
    np.testing.assert_allclose(mean, 0.0, atol=ATOL)
    np.testing.assert_allclose(std, 1.0, atol=ATOL)


def test_unbuilt_sequential_model():
    model = keras.Sequential(
        [wn_layers.WNConv1D(4, 3, activation="relu"), wn_layers.WNConv1D(2, 3)]
    )
    x = _data((16, 9, 2))
    assert len(initialize(model, x)) == 2
    mean, std = _channel_stats(model(x), (2,))
    np.testing.assert_allclose(mean, 0.0, atol=ATOL)
    np.testing.assert_allclose(std, 1.0, atol=ATOL)


def test_a_failed_pass_restores_every_variable():
    class Failing(keras.Model):
        def __init__(self):
            super().__init__()
            self.first = wn_layers.WNDense(4)

        def call(self, inputs):
            self.first(inputs)
            raise ValueError("boom")

    model = Failing()
    x = _data((8, 3))
    model.first(x)
    before = [np.array(w) for w in model.first.weights]
    with pytest.raises(ValueError, match="boom"):
        initialize(model, x)
    assert not model.first.is_initialized()
    for old, new in zip(before, model.first.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


@pytest.mark.parametrize(
    "data,kwargs,error,match",
    [
        (np.zeros((8, 5), "float32"), {}, ValueError, "input shape"),
        (np.zeros((0, 10), "float32"), {}, ValueError, "at least 2"),
        (np.zeros((1, 10), "float32"), {}, ValueError, "at least 2"),
        (
            tf.data.Dataset.from_tensor_slices(np.zeros((0, 10))).batch(2),
            {},
            ValueError,
            "empty",
        ),
        (iter([]), {}, ValueError, "empty"),
        ((), {}, ValueError, "empty"),
        (np.zeros((8, 10)), {"num_samples": 0}, ValueError, "num_samples"),
        (np.zeros((8, 10)), {"num_samples": 2.5}, TypeError, "num_samples"),
        (42, {}, TypeError, "data"),
        ("abc", {}, TypeError, "data"),
    ],
    ids=[
        "wrong-shape",
        "empty-array",
        "one-sample",
        "empty-dataset",
        "empty-iterator",
        "empty-tuple",
        "num-samples-0",
        "num-samples-float",
        "int",
        "str",
    ],
)
def test_bad_inputs(data, kwargs, error, match):
    model, _ = _dense_model(mobn=False, init_scale=1.0)
    with pytest.raises(error, match=match):
        initialize(model, data, **kwargs)
    assert not any(layer.is_initialized() for layer in _wn_layers(model))


def test_bad_model():
    with pytest.raises(TypeError, match="model"):
        initialize("model", np.zeros((4, 3)))


@pytest.mark.backends("tensorflow", reason="a tf.function trace")
def test_initialize_inside_a_tf_function_raises():
    
    model, _ = _dense_model(mobn=False, init_scale=1.0)

    @tf.function
    def traced():
        initialize(model, np.zeros((4, 10), "float32"))

    with pytest.raises(RuntimeError, match="eagerly"):
        traced()



def _weights(model):
    return [np.array(w) for w in model.weights]


def _with_one(x, value):
    x = x.copy()
    x[3, 5] = value
    return x


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda x: _with_one(x, np.nan), "1 NaN"),
        (lambda x: _with_one(x, np.inf), "1 infinite"),
        (lambda x: x * 1e30, "non-finite pre-activation mean or variance"),
    ],
    ids=["nan", "inf", "float32-overflow"],
)
def test_a_bad_batch_never_poisons_the_model(bad, match):
    """A NaN batch used to write NaN into g and b and set `initialized`, so
    that a later call with good data did nothing."""
    model, probe = _dense_model(mobn=False, init_scale=1.0)
    x = _data((64, 10))
    before = _weights(model)
    with pytest.raises(ValueError, match=match):
        initialize(model, bad(x))
    assert not any(layer.is_initialized() for layer in _wn_layers(model))
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))
    names = initialize(model, x)
    assert names == [layer.name for layer in _wn_layers(model)]
    for t in probe(x):
        mean, std = _channel_stats(t, (1,))
        np.testing.assert_allclose(mean, 0.0, atol=ATOL)
        np.testing.assert_allclose(std, 1.0, atol=ATOL)


@pytest.mark.parametrize("use_bias", [True, False])
def test_a_pass_that_turns_non_finite_inside_is_undone(use_bias):
    """Finite data, but a layer between two WN layers overflows: the second
    layer's statistics (or, without its bias, the model's output) are not
    finite, and the first layer, already initialized, is restored too."""
    model = keras.Sequential(
        [
            keras.Input((10,)),
            wn_layers.WNDense(8, name="first"),
            keras.layers.Lambda(lambda t: t * 1e38, name="overflow"),
            wn_layers.WNDense(4, use_bias=use_bias, name="second"),
        ]
    )
    before = _weights(model)
    with pytest.raises(ValueError, match="non-finite") as raised:
        initialize(model, _data((32, 10)))
    assert "Received: data with max |value|" in str(raised.value)
    assert not any(layer.is_initialized() for layer in _wn_layers(model))
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


@pytest.mark.parametrize(
    "data, match",
    [
        (lambda x: {"a": x[:, :3], "c": x[:, 3:]}, r"input names \['a', 'b'"),
        (lambda x: [x[:, :3], x[:5, 3:]], r"batch sizes \[5, 16\]"),
        (lambda x: [x[:, :3]], r"must hold 2 input array"),
        (lambda x: [x[:, :3], x[:, 3:5]], r"input shape \(None, 7\)"),
    ],
    ids=["dict-keys", "batch-sizes", "count", "shape-of-the-second"],
)
def test_multi_input_batches_are_checked_before_the_pass(data, match):
    a = keras.Input((3,), name="a")
    b = keras.Input((7,), name="b")
    merged = keras.layers.Concatenate()([wn_layers.WNDense(2)(a), b])
    model = keras.Model([a, b], wn_layers.WNDense(2)(merged))
    x = {"a": _data((16, 10))[:, :3], "b": _data((16, 10))[:, 3:]}
    with pytest.raises(ValueError, match=match):
        initialize(model, data(_data((16, 10))))
    assert not any(layer.is_initialized() for layer in _wn_layers(model))
    assert len(initialize(model, x)) == 2
