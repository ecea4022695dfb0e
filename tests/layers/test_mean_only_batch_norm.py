"""MeanOnlyBatchNorm against numpy, through the harness, and distributed."""

import keras
import numpy as np
import pytest
from backend_utils import data_parallel, gradients
from layer_harness import mirrored_strategy, run_layer_test

from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.wn_base import init_pass


def _x(shape, seed=0, offset=2.0):
    rng = np.random.default_rng(seed)
    return (offset + rng.standard_normal(shape)).astype("float32")


@pytest.mark.parametrize(
    "kwargs,shape",
    [({"momentum": 0.8}, (2, 3, 4)), ({"axis": 1}, (2, 3, 4))],
    ids=["channels-last", "axis-1"],
)
def test_layer_harness(kwargs, shape):
    run_layer_test(
        MeanOnlyBatchNorm,
        kwargs,
        shape,
        shape,
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=1,
    )


@pytest.mark.parametrize(
    "axis,shape", [(-1, (6, 5, 3)), (1, (6, 3, 4, 4))], ids=["last", "axis-1"]
)
def test_training_and_inference_match_numpy(axis, shape):
    layer = MeanOnlyBatchNorm(
        axis=axis,
        momentum=0.7,
        beta_initializer=keras.initializers.Constant(0.25),
    )
    reduce = tuple(a for a in range(len(shape)) if a != axis % len(shape))
    channel_shape = [1] * len(shape)
    channel_shape[axis] = shape[axis]
    moving = np.zeros(shape[axis])
    for step in range(3):
        x = _x(shape, seed=step, offset=step - 1.0)
        mean = x.mean(axis=reduce)
        y = np.asarray(layer(x, training=True))
        np.testing.assert_allclose(
            y, x - mean.reshape(channel_shape) + 0.25, atol=1e-5
        )
        moving = 0.7 * moving + 0.3 * mean
        np.testing.assert_allclose(
            np.asarray(layer.moving_mean), moving, atol=1e-6
        )
    x = _x(shape, seed=9)
    np.testing.assert_allclose(
        np.asarray(layer(x, training=False)),
        x - moving.reshape(channel_shape) + 0.25,
        atol=1e-5,
    )
    np.testing.assert_allclose(np.asarray(layer.moving_mean), moving, atol=1e-6)


def test_gradients_are_centered():
    x = _x((5, 4, 3))
    c = np.random.default_rng(1).standard_normal(x.shape).astype("float32")
    layer = MeanOnlyBatchNorm()
    layer.build(x.shape)
    x_t = keras.Variable(x)
    grad_x, grad_beta = gradients(
        lambda: keras.ops.sum(
            keras.ops.multiply(layer(x_t.value, training=True), c)
        ),
        [x_t, layer.beta],
    )
    # ∇_t L = ∇_t̃ L − mean(∇_t̃ L) (Salimans & Kingma, §4).
    np.testing.assert_allclose(
        np.asarray(grad_x), c - c.mean(axis=(0, 1)), atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(grad_beta), c.sum(axis=(0, 1)), rtol=1e-5
    )
    assert layer.trainable_weights == [layer.beta]


def test_without_center_and_when_frozen():
    x = _x((8, 3))
    layer = MeanOnlyBatchNorm(center=False)
    np.testing.assert_allclose(
        np.asarray(layer(x, training=True)), x - x.mean(axis=0), atol=1e-6
    )
    assert layer.beta is None and layer.trainable_weights == []
    layer.trainable = False  # frozen: inference behaviour, no update
    moving = np.array(layer.moving_mean)
    np.testing.assert_allclose(
        np.asarray(layer(x, training=True)), x - moving, atol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(layer.moving_mean), moving)


def test_init_pass_uses_the_batch_mean_without_updating():
    x = _x((8, 3))
    layer = MeanOnlyBatchNorm()
    layer.build(x.shape)
    with init_pass():
        y = layer(x, training=False)
    np.testing.assert_allclose(np.asarray(y), x - x.mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer.moving_mean), 0.0)


def test_mixed_precision_mean_is_computed_in_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = MeanOnlyBatchNorm()
        x = _x((64, 4), offset=1000.0).astype("float16")
        y = layer(x, training=True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert (
        layer.moving_mean.dtype == "float32" and layer.beta.dtype == "float32"
    )
    x32 = x.astype("float32")
    # A float16 mean of values near 1000 would be off by up to 0.5.
    np.testing.assert_allclose(
        np.asarray(y, "float32"), x32 - x32.mean(axis=0), atol=2e-3
    )
    np.testing.assert_allclose(
        np.asarray(layer.moving_mean), 0.1 * x32.mean(axis=0), rtol=1e-6
    )


@pytest.mark.backends(
    "tensorflow", reason="tf.distribute.MirroredStrategy replicas"
)
def test_mirrored_batch_mean_is_synchronized():
    import tensorflow as tf

    strategy = mirrored_strategy()
    per_replica = [
        _x((4, 3), seed=0, offset=-3.0),
        _x((4, 3), seed=1, offset=5.0),
    ]
    with strategy.scope():
        layer = MeanOnlyBatchNorm(momentum=0.5)
        layer.build((None, 3))
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(
            per_replica[context.replica_id_in_sync_group]
        )
    )

    @tf.function
    def step(x):
        return strategy.run(lambda t: layer(t, training=True), args=(x,))

    outputs = strategy.experimental_local_results(step(inputs))
    global_mean = np.concatenate(per_replica).mean(axis=0)
    for x, y in zip(per_replica, outputs, strict=True):
        np.testing.assert_allclose(np.asarray(y), x - global_mean, atol=1e-5)
    replicas = [np.asarray(t) for t in layer.moving_mean.value.values]
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    np.testing.assert_allclose(replicas[0], 0.5 * global_mean, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"momentum": float("nan")}, ValueError, "momentum"),
        ({"momentum": "0.9"}, TypeError, "momentum"),
        ({"axis": "x"}, TypeError, "axis"),
        ({"axis": 1.0}, TypeError, "axis"),
        ({"center": "yes"}, TypeError, "center"),
        (
            {"beta_initializer": "nope"},
            ValueError,
            r"`beta_initializer` must be a Keras initializer .*='nope'",
        ),
        (
            {"moving_mean_initializer": 3},
            ValueError,
            r"`moving_mean_initializer` .*Received: moving_mean_initializer=3",
        ),
        (
            {"beta_regularizer": "l3"},
            ValueError,
            r"`beta_regularizer` must be a Keras regularizer",
        ),
        (
            {"beta_constraint": "positive"},
            ValueError,
            r"`beta_constraint` must be a Keras constraint",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MeanOnlyBatchNorm(**kwargs)


@pytest.mark.parametrize(
    "axis,shape,match",
    [
        (0, (None, 3), "batch axis"),
        (3, (None, 4, 3), "axis=3"),
        (-4, (None, 4, 3), "axis=-4"),
        (-1, (None, None), "known size"),
    ],
)
def test_bad_axis_at_build(axis, shape, match):
    layer = MeanOnlyBatchNorm(axis=axis)
    with pytest.raises(ValueError, match=match):
        layer.build(shape)


@pytest.mark.backends("jax", reason="keras.distribution.DataParallel")
def test_data_parallel_batch_mean_is_the_global_one():
    x = np.concatenate(
        [_x((4, 3), seed=0, offset=-3.0), _x((4, 3), seed=1, offset=5.0)]
    )

    def fitted():
        model = keras.Sequential(
            [keras.Input((3,)), MeanOnlyBatchNorm(momentum=0.5)]
        )
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, np.zeros_like(x), batch_size=8, epochs=1, verbose=0)
        return model

    single = fitted()
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(data_parallel())
    try:
        parallel = fitted()
    finally:
        keras.distribution.set_distribution(previous)
    # Each device holds half the batch, of very different means.
    np.testing.assert_allclose(
        np.asarray(parallel.layers[0].moving_mean),
        0.5 * x.mean(axis=0),
        atol=1e-5,
    )
    for a, b in zip(single.weights, parallel.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
