"""WC layers: numerics against numpy, init, weight decay, learnable a/b,
the shared (coarse) compander, and bad inputs."""

import os

import keras
import numpy as np
import pytest
from backend_utils import gradients

import keras_wc


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _np_arctan(v, a, b):
    return a * np.arctan(np.asarray(v, "float64") / b)


def test_dense_forward_matches_numpy():
    layer = keras_wc.WCDense(4, a=0.9, b=0.6, activation="tanh")
    x = _x((5, 3))
    y = np.asarray(layer(x))
    w = _np_arctan(layer.v, 0.9, 0.6)
    np.testing.assert_allclose(
        y, np.tanh(x @ w + np.asarray(layer.bias)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(layer.kernel), w, rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    "wc_cls,plain_cls,kwargs,shape",
    [
        (
            keras_wc.WCConv2D,
            keras.layers.Conv2D,
            {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"},
            (2, 7, 7, 3),
        ),
        (
            keras_wc.WCConv1DTranspose,
            keras.layers.Conv1DTranspose,
            {"filters": 3, "kernel_size": 3, "strides": 2},
            (2, 5, 2),
        ),
        (
            keras_wc.WCDepthwiseConv2D,
            keras.layers.DepthwiseConv2D,
            {"kernel_size": 3, "depth_multiplier": 2},
            (2, 6, 6, 3),
        ),
        (
            keras_wc.WCSeparableConv2D,
            keras.layers.SeparableConv2D,
            {"filters": 4, "kernel_size": 3},
            (2, 6, 6, 3),
        ),
        (
            keras_wc.WCEinsumDense,
            keras.layers.EinsumDense,
            {"equation": "ab,bc->ac", "output_shape": 4},
            (2, 3),
        ),
    ],
)
@pytest.mark.parametrize("compander", ["arctan", "arsinh", "erf"])
def test_layer_equals_plain_layer_with_psi_kernel(
    wc_cls, plain_cls, kwargs, shape, compander
):
    wc = wc_cls(
        **kwargs,
        a=1.2,
        b=0.7,
        compander=compander,
        bias_initializer="random_normal",
    )
    x = _x(shape)
    y = np.asarray(wc(x))
    plain = plain_cls(**kwargs)
    plain.build(shape)
    fn = {"arctan": np.arctan, "arsinh": np.arcsinh}.get(compander)
    if fn is None:
        from scipy.special import erf as fn
    weights = []
    for variable in plain.weights:
        leaf = variable.path.split("/")[-1]
        if "kernel" in leaf:
            raw = wc.raw_kernels[leaf]
            weights.append(1.2 * fn(np.asarray(raw, "float64") / 0.7))
        else:
            weights.append(np.asarray(getattr(wc, leaf)))
    plain.set_weights(weights)
    np.testing.assert_allclose(y, np.asarray(plain(x)), rtol=1e-5, atol=1e-5)


def test_init_keeps_the_initializer_values():
    for a, b, comp in [
        (1.0, 0.6, "arctan"),
        (0.7, 1.0, "erf"),
        (0.8, 0.5, "arsinh"),
    ]:
        init = keras.initializers.GlorotUniform(seed=3)
        plain = keras.layers.Dense(64, kernel_initializer=init)
        wc = keras_wc.WCDense(
            64, kernel_initializer=init, a=a, b=b, compander=comp
        )
        plain.build((None, 32))
        wc.build((None, 32))
        # Eq. 4: v₀ = Ψ⁻¹(w₀), so Ψ(v₀) is the initializer's draw.
        np.testing.assert_allclose(
            np.asarray(wc.kernel),
            np.asarray(plain.kernel),
            rtol=1e-5,
            atol=1e-6,
        )
        assert not np.allclose(np.asarray(wc.v), np.asarray(plain.kernel))


def test_gradient_is_eq3():
    a, b = 0.8, 0.5
    layer = keras_wc.WCDense(3, a=a, b=b, use_bias=False)
    x = _x((4, 5))
    target = _x((4, 3), 1)
    layer.build(x.shape)
    v = np.asarray(layer.v, "float64")
    w = _np_arctan(v, a, b)
    (grad_v,) = gradients(
        lambda: keras.ops.sum(
            keras.ops.square(keras.ops.subtract(layer(x), target))
        ),
        [layer.v],
    )
    grad_w = 2 * x.T.astype("float64") @ (x @ w - target)
    expected = grad_w * a / (b * (1 + v**2 / b**2))  # Eq. 2-3
    np.testing.assert_allclose(grad_v, expected, rtol=1e-4, atol=1e-5)


def test_learnable_gradients_for_a_and_b():
    layer = keras_wc.WCDense(3, a=0.8, b=0.5, learnable=True, use_bias=False)
    x = _x((4, 5))
    layer.build(x.shape)
    v = np.asarray(layer.v, "float64")
    grad_a, grad_b = gradients(
        lambda: keras.ops.sum(layer(x)), [layer._a, layer._b]
    )
    grad_w = x.sum(axis=0)[:, None] * np.ones((1, 3))
    terms_a = grad_w * np.arctan(v / 0.5)
    terms_b = grad_w * -0.8 * v / (0.25 + v**2)
    # Each is a float32 sum of terms that may cancel: its round-off is
    # relative to Σ|terms|, not to the (possibly tiny) sum itself.
    for grad, terms in ((grad_a, terms_a), (grad_b, terms_b)):
        np.testing.assert_allclose(
            grad,
            np.sum(terms),
            rtol=1e-4,
            atol=1e-6 * np.sum(np.abs(terms)),
        )


def test_weight_decay_on_psi_when_fixed_and_on_v_when_learnable():
    reg = keras.regularizers.L2(0.01)
    fixed = keras_wc.WCDense(4, a=0.9, b=0.6, kernel_regularizer=reg)
    fixed(_x((2, 3)))
    expected = 0.01 * np.sum(_np_arctan(fixed.v, 0.9, 0.6) ** 2)  # Eq. 5
    # Computed on the forward pass's Ψ(v), so it is there after a call.
    np.testing.assert_allclose(float(sum(fixed.losses)), expected, rtol=1e-5)
    assert fixed.v.regularizer is None
    # ... and it reaches `fit`'s loss and the gradient of v (through Ψ').
    model = keras.Sequential([keras.Input((3,)), fixed])
    model.compile(optimizer="sgd", loss=lambda y, p: 0.0 * keras.ops.sum(p))
    x = _x((2, 3))
    loss = model.evaluate(x, np.zeros((2, 4)), verbose=0)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)

    def penalty():
        model(x, training=True)
        return keras.ops.sum(keras.ops.stack(model.losses))

    (grad_v,) = gradients(penalty, [fixed.v])
    v = np.asarray(fixed.v, "float64")
    np.testing.assert_allclose(
        grad_v,
        0.02 * _np_arctan(v, 0.9, 0.6) * 0.9 * 0.6 / (0.36 + v**2),
        rtol=1e-4,
    )

    learn = keras_wc.WCDense(
        4, a=0.9, b=0.6, kernel_regularizer=reg, learnable=True
    )
    learn.build((None, 3))
    expected = 0.01 * np.sum(np.asarray(learn.v, "float64") ** 2)
    np.testing.assert_allclose(float(sum(learn.losses)), expected, rtol=1e-5)
    assert learn._a.regularizer is None and learn._b.regularizer is None


def test_l2_from_pytorch():
    assert keras_wc.l2_from_pytorch(5e-4).l2 == pytest.approx(2.5e-4)
    assert keras_wc.l2_from_pytorch(0) is None
    with pytest.raises(ValueError, match="weight_decay"):
        keras_wc.l2_from_pytorch(-1e-4)
    with pytest.raises(TypeError, match="weight_decay"):
        keras_wc.l2_from_pytorch("1e-4")


def test_kernel_constraint_acts_on_effective_weight():
    layer = keras_wc.WCDense(
        4, a=1.0, b=1.0, kernel_constraint=keras.constraints.NonNeg()
    )
    layer.build((None, 3))
    layer.v.assign(layer.v.constraint(layer.v))
    w = np.asarray(layer.kernel)
    assert np.all(w >= 0) and np.any(w > 0)


def test_learnable_a_b_stay_positive():
    layer = keras_wc.WCDense(2, a=1.0, b=0.5, learnable=True)
    layer.build((None, 2))
    layer._a.assign(-3.0)
    assert float(layer.a) == pytest.approx(1e-3)
    optimizer = keras.optimizers.SGD(100.0)
    optimizer.apply(
        [keras.ops.ones(()), keras.ops.ones(())], [layer._a, layer._b]
    )
    assert float(np.asarray(layer._a)) >= 1e-3
    assert float(np.asarray(layer._b)) >= 1e-3
    assert np.all(np.isfinite(np.asarray(layer(_x((1, 2))))))


def _coarse_model(shared):
    inputs = keras.Input((6,))
    h = keras_wc.WCDense(8, activation="relu", shared=shared, name="d1")(inputs)
    h = keras_wc.WCDense(8, activation="relu", shared=shared, name="d2")(h)
    return keras.Model(inputs, keras_wc.WCDense(2, shared=shared, name="d3")(h))


def test_shared_compander_is_one_pair(tmp_path):
    shared = keras_wc.SharedCompander(a=0.9, b=1.0)
    model = _coarse_model(shared)
    paths = [v.path for v in model.trainable_variables]
    assert len(paths) == 6 + 2, paths
    assert sum(p.endswith("/a") for p in paths) == 1
    x = _x((16, 6))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, _x((16, 2), 1), epochs=2, verbose=0)
    assert float(shared.a) != pytest.approx(0.9)
    for name in ("d1", "d2", "d3"):
        assert model.get_layer(name).shared is shared
    path = os.path.join(tmp_path, "coarse.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layers = [loaded.get_layer(n) for n in ("d1", "d2", "d3")]
    assert layers[0].shared is layers[1].shared is layers[2].shared
    assert len(loaded.trainable_variables) == 8
    np.testing.assert_array_equal(float(layers[2].a), float(shared.a))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"a": 0.0}, ValueError, "`a` must be a finite number > 0"),
        ({"a": -1.0}, ValueError, "`a` must be a finite number > 0"),
        ({"b": 0}, ValueError, "`b` must be a finite number > 0"),
        ({"b": float("nan")}, ValueError, "`b` must be a finite number > 0"),
        ({"a": "1"}, TypeError, "`a` must be a positive number"),
        ({"b": None}, TypeError, "`b` must be a positive number"),
        ({"compander": "tanh"}, ValueError, "Valid names: arctan"),
        ({"compander": 3}, TypeError, "`compander` must be"),
        ({"learnable": "yes"}, ValueError, "`learnable` must be False/'none'"),
        ({"learnable": 1}, ValueError, "Received: learnable=1"),
        ({"learnable": "coarse"}, ValueError, "pass the same `shared="),
        ({"shared": "coarse"}, TypeError, "must be a keras_wc.SharedCompander"),
        (
            {"shared": keras_wc.SharedCompander(), "a": 0.5},
            ValueError,
            "leave `a`, `b`",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_wc.WCDense(4, **kwargs)


@pytest.mark.parametrize("cls", [keras_wc.WCDense, keras_wc.WNDense])
def test_lora_rank_in_the_constructor_builds_the_adapters(cls):
    # As `Dense(4, lora_rank=2)`: a config with LoRA (tests/test_compose.py
    # tests what it computes and trains).
    layer = cls(4, lora_rank=2)
    layer.build((None, 3))
    assert layer.lora_enabled
    assert [tuple(v.shape) for v in layer.trainable_weights][-2:] == [
        (3, 2),
        (2, 4),
    ]
    assert not any(v.trainable for v in layer._raw_variables())


def test_out_of_range_init_names_layer_and_bound():
    layer = keras_wc.WCDense(
        4,
        a=0.5,
        compander="erf",
        name="head",
        kernel_initializer=keras.initializers.Constant(0.6),
    )
    with pytest.raises(
        ValueError,
        match=r"Layer 'head'.*max \|w\| = 0\.6.*"
        r"\|w\| < 0\.5\b.*Use a >= 0\.606",
    ):
        layer.build((None, 3))


def test_kernel_is_read_only_and_v_is_trainable():
    layer = keras_wc.WCConv2D(2, 3)
    with pytest.raises(AttributeError, match="build the layer"):
        layer.kernel  # noqa: B018
    layer.build((None, 5, 5, 1))
    with pytest.raises(AttributeError, match="cannot be set"):
        layer.kernel = np.zeros((3, 3, 1, 2))
    assert layer.v.trainable
    with pytest.raises(AttributeError, match="raw kernels are"):
        layer.depthwise_v  # noqa: B018
    layer.enable_lora(2)  # LoRA: tests/test_compose.py
    assert not layer.v.trainable


def test_positional_parent_arguments_keep_their_meaning():
    layer = keras_wc.WCDense(3, "relu")
    assert layer.activation is keras.activations.relu
    assert layer.initial_a == 1.0


def test_assign_effective_kernel_is_right_inverse():
    layer = keras_wc.WCDense(3, a=0.8, b=0.6)
    layer.build((None, 2))
    w = 0.3 * _x((2, 3))
    layer.assign_effective_kernel("kernel", w)
    np.testing.assert_allclose(np.asarray(layer.kernel), w, atol=1e-6)
    with pytest.raises(ValueError, match="outside the range"):
        layer.assign_effective_kernel("kernel", np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="has shape"):
        layer.assign_effective_kernel("kernel", np.zeros((3, 3)))


def test_mixed_precision_computes_kernel_in_float32():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = keras_wc.WCDense(3, a=1.0, b=1e-3)
        layer.build((None, 2))
    finally:
        keras.config.set_dtype_policy("float32")
    layer.v.assign(np.full((2, 3), 70000.0, "float32"))
    # v/b = 7e7 overflows float16 (max 65504); Ψ(v) computed in float32 is
    # arctan(7e7) ≈ π/2.
    np.testing.assert_allclose(
        np.asarray(layer.kernel, "float32"), np.pi / 2, rtol=1e-3
    )
