"""Every WN layer class through the shared harness, plus WN numerics."""

import keras
import numpy as np
import pytest
from backend_utils import gradients
from layer_harness import randomize_variables, run_layer_test

from keras_wc.layers import wn_layers
from keras_wc.layers.layer_types import LAYER_TYPES

# (class, constructor arguments, input shape, output shape,
#  {kernel name: the axes its norm is taken over}): the test case of each
# row of the table of layer types, whose norm axes are written out by hand
# from each Keras kernel layout.
CASES = [
    (
        wn_layers.CLASSES["WN" + row.parent.__name__],
        row.case.kwargs,
        row.case.input_shape,
        row.case.output_shape,
        row.case.norm_axes,
    )
    for row in LAYER_TYPES
    if row.case is not None
]
IDS = [case[0].__name__ for case in CASES]
WN_ARGS = ("data_init", "init_scale", "log_scale")


def _numpy_wn(v, g, norm_axes):
    norm = np.sqrt(np.sum(np.square(v), axis=norm_axes, keepdims=True))
    return np.expand_dims(g, norm_axes) * v / norm


def _built(cls, kwargs, in_shape, **extra):
    layer = cls(**kwargs, data_init=False, **extra)
    layer(np.zeros(in_shape, "float32"))
    return layer


def _plain_twin(layer, x):
    """The Keras parent layer holding the WN layer's effective weights."""
    parent = type(layer).__bases__[-1]
    config = {k: v for k, v in layer.get_config().items() if k not in WN_ARGS}
    config["name"] = "plain"
    plain = parent.from_config(config)
    plain(x)
    effective = {k: np.asarray(w) for k, w in layer.effective_kernels().items()}
    plain.set_weights(
        [
            effective[w.path.split("/")[-1]]
            if w.path.split("/")[-1] in effective
            else np.asarray(layer.bias)
            for w in plain.weights
        ]
    )
    return plain


@pytest.mark.parametrize("cls,kwargs,in_shape,out_shape,norms", CASES, ids=IDS)
def test_layer_harness(cls, kwargs, in_shape, out_shape, norms):
    run_layer_test(
        cls,
        {**kwargs, "data_init": False},
        in_shape,
        out_shape,
        expected_num_trainable_weights=2 * len(norms) + 1,
        expected_num_non_trainable_weights=1,
    )


@pytest.mark.parametrize(
    "cls,kwargs,in_shape,out_shape,norms",
    [CASES[0], CASES[-1]],
    ids=[IDS[0], IDS[-1]],
)
def test_layer_harness_log_scale(cls, kwargs, in_shape, out_shape, norms):
    run_layer_test(
        cls,
        {**kwargs, "data_init": False, "log_scale": True, "init_scale": 0.5},
        in_shape,
        out_shape,
        expected_num_trainable_weights=2 * len(norms) + 1,
        expected_num_non_trainable_weights=1,
    )


@pytest.mark.parametrize("cls,kwargs,in_shape,out_shape,norms", CASES, ids=IDS)
def test_effective_kernel_matches_numpy(
    cls, kwargs, in_shape, out_shape, norms
):
    layer = _built(cls, kwargs, in_shape)
    randomize_variables(layer, seed=3)
    effective = layer.effective_kernels()
    assert sorted(effective) == sorted(norms)
    for name, norm_axes in norms.items():
        expected = _numpy_wn(
            np.asarray(layer.raw_kernels[name]),
            np.asarray(layer.gain(name)),
            norm_axes,
        )
        np.testing.assert_allclose(
            np.asarray(effective[name]), expected, rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("cls,kwargs,in_shape,out_shape,norms", CASES, ids=IDS)
def test_output_matches_plain_layer(cls, kwargs, in_shape, out_shape, norms):
    x = np.random.default_rng(0).standard_normal(in_shape).astype("float32")
    layer = _built(cls, kwargs, in_shape)
    randomize_variables(layer, seed=4)
    plain = _plain_twin(layer, x)
    np.testing.assert_allclose(
        np.asarray(layer(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("cls,kwargs,in_shape,out_shape,norms", CASES, ids=IDS)
def test_default_init_is_function_preserving(
    cls, kwargs, in_shape, out_shape, norms
):
    layer = _built(cls, kwargs, in_shape)
    for name, norm_axes in norms.items():
        v = np.asarray(layer.raw_kernels[name])
        assert np.std(v) > 0
        np.testing.assert_allclose(
            np.asarray(layer.gain(name)),
            np.sqrt(np.sum(v**2, axis=norm_axes)),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            np.asarray(layer.effective_kernels()[name]), v, rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize(
    "wn_cls,plain_cls,kwargs,in_shape",
    [
        (wn_layers.WNDense, keras.layers.Dense, {"units": 4}, (3, 6)),
        (
            wn_layers.WNConv2D,
            keras.layers.Conv2D,
            {"filters": 3, "kernel_size": 3},
            (2, 5, 5, 2),
        ),
    ],
)
def test_same_initializer_gives_the_plain_layer(
    wn_cls, plain_cls, kwargs, in_shape
):
    x = np.random.default_rng(1).standard_normal(in_shape).astype("float32")
    init = {
        "kernel_initializer": keras.initializers.GlorotUniform(seed=7),
        "bias_initializer": keras.initializers.RandomNormal(seed=8),
    }
    layer = wn_cls(**kwargs, **init)
    plain = plain_cls(
        **kwargs,
        kernel_initializer=keras.initializers.GlorotUniform(seed=7),
        bias_initializer=keras.initializers.RandomNormal(seed=8),
    )
    np.testing.assert_allclose(
        np.asarray(layer(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-6
    )


def test_gradients_match_the_wn_paper_formulas():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)).astype("float32")
    c = rng.standard_normal((6, 3)).astype("float32")
    layer = _built(wn_layers.WNDense, {"units": 3, "use_bias": False}, x.shape)
    randomize_variables(layer, seed=6)
    grad_v, grad_g = gradients(
        lambda: keras.ops.sum(keras.ops.multiply(layer(x), c)),
        [layer.v, layer.g],
    )
    v = np.asarray(layer.v, "float64")
    g = np.asarray(layer.g, "float64")
    norm = np.sqrt(np.sum(v**2, axis=0))
    grad_w = x.T.astype("float64") @ c  # L = Σ (x·w) ⊙ c
    expected_g = np.sum(grad_w * v, axis=0) / norm  # Eq. 3
    expected_v = (g / norm) * grad_w - (g * expected_g / norm**2) * v
    np.testing.assert_allclose(np.asarray(grad_g), expected_g, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(grad_v), expected_v, rtol=1e-4, atol=1e-6
    )
    # ∇_v L is orthogonal to v (the paper's projection M_w).
    np.testing.assert_allclose(
        np.sum(np.asarray(grad_v) * v, axis=0), 0.0, atol=1e-5
    )


def test_log_scale_parameterization():
    x = np.random.default_rng(2).standard_normal((4, 3)).astype("float32")
    layer = _built(wn_layers.WNDense, {"units": 2}, x.shape, log_scale=True)
    raw = layer.raw_gains["kernel"]
    assert raw.path.split("/")[-1] == "s"
    v = np.asarray(layer.v)
    np.testing.assert_allclose(
        np.asarray(raw), np.log(np.sqrt(np.sum(v**2, axis=0))), rtol=1e-5
    )
    raw.assign([0.5, -1.0])
    np.testing.assert_allclose(np.asarray(layer.g), np.exp([0.5, -1.0]))
    grad_s, grad_v = gradients(lambda: keras.ops.sum(layer(x)), [raw, layer.v])
    # ∂L/∂s = g·∂L/∂g with ∂L/∂g = Σ ∂L/∂w · v/‖v‖.
    grad_w = x.T @ np.ones((4, 2), "float32")
    grad_g = np.sum(grad_w * v, axis=0) / np.sqrt(np.sum(v**2, axis=0))
    np.testing.assert_allclose(
        np.asarray(grad_s), np.exp([0.5, -1.0]) * grad_g, rtol=1e-5
    )
    assert np.all(np.isfinite(np.asarray(grad_v)))


@pytest.mark.parametrize("log_scale", [False, True])
def test_zero_direction_gives_no_nan(log_scale):
    x = np.ones((2, 4, 4, 2), "float32")
    layer = wn_layers.WNConv2D(
        3,
        3,
        kernel_initializer="zeros",
        bias_initializer="ones",
        data_init=False,
        log_scale=log_scale,
    )
    y = layer(x)
    grads = gradients(
        lambda: keras.ops.sum(layer(x)), layer.trainable_variables
    )
    np.testing.assert_array_equal(np.asarray(y), 1.0)
    assert np.all(np.isfinite(np.asarray(layer.g)))
    np.testing.assert_allclose(np.asarray(layer.g), 1e-6, rtol=1e-5)
    for grad in grads:
        assert np.all(np.isfinite(np.asarray(grad)))


def test_assign_effective_kernel_is_the_right_inverse():
    layer = _built(
        wn_layers.WNConv1D, {"filters": 3, "kernel_size": 2}, (1, 4, 2)
    )
    w = np.random.default_rng(3).standard_normal((2, 2, 3)).astype("float32")
    layer.assign_effective_kernel("kernel", w)
    np.testing.assert_allclose(np.asarray(layer.v), w)
    np.testing.assert_allclose(
        np.asarray(layer.g), np.sqrt(np.sum(w**2, axis=(0, 1))), rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(layer.kernel), w, rtol=1e-5)


def test_regularizer_acts_on_the_effective_kernel():
    layer = _built(
        wn_layers.WNDense,
        {"units": 3, "kernel_regularizer": keras.regularizers.L2(0.1)},
        (2, 4),
    )
    randomize_variables(layer, seed=8)
    w = np.asarray(layer.kernel)
    layer(np.ones((2, 4), "float32"))
    (loss,) = layer.losses
    np.testing.assert_allclose(float(loss), 0.1 * np.sum(w**2), rtol=1e-5)
    np.testing.assert_allclose(
        float(loss), 0.1 * np.sum(np.asarray(layer.g) ** 2), rtol=1e-5
    )


@pytest.mark.parametrize(
    "regularizer",
    [keras.regularizers.L2(0.1), keras.regularizers.L1L2(l1=0.01, l2=0.1)],
    ids=["l2-fused", "l1l2-generic"],
)
def test_regularizer_gradient_equals_autodiff_of_the_formula(regularizer):
    layer = _built(
        wn_layers.WNDense,
        {"units": 3, "kernel_regularizer": regularizer},
        (2, 4),
    )
    randomize_variables(layer, seed=9)
    v = np.asarray(layer.v).copy()
    v[:, 1] = 0.0  # an all-zero direction: w = 0 there
    layer.v.assign(v)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype("float32")

    def penalty_of_call():
        layer(x)
        (penalty,) = layer.losses
        return penalty

    penalty = penalty_of_call()
    grads = gradients(penalty_of_call, [layer.v, layer.g])
    # Reference: autodiff of the regularizer applied to w = g·v/‖v‖ written
    # with plain ops, on copies of v and g.
    vt = keras.Variable(np.asarray(layer.v))
    gt = keras.Variable(np.asarray(layer.g))

    def formula():
        ops = keras.ops
        squares = ops.sum(ops.square(vt), axis=0, keepdims=True)
        return regularizer(gt * vt / ops.sqrt(ops.maximum(squares, 1e-12)))

    expected = formula()
    expected_grads = gradients(formula, [vt, gt])
    np.testing.assert_allclose(float(penalty), float(expected), rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6
        )


@pytest.mark.parametrize(
    "cls,kwargs,in_shape,check",
    [
        (
            wn_layers.WNDense,
            {"units": 3, "kernel_constraint": keras.constraints.NonNeg()},
            (4, 5),
            lambda w: np.all(w >= 0),
        ),
        (
            wn_layers.WNDense,
            {
                "units": 3,
                "kernel_constraint": keras.constraints.MaxNorm(0.5, axis=0),
            },
            (4, 5),
            lambda w: np.all(np.sqrt(np.sum(w**2, axis=0)) <= 0.5 + 1e-6),
        ),
        (
            wn_layers.WNConv2D,
            {
                "filters": 2,
                "kernel_size": 2,
                "kernel_constraint": keras.constraints.UnitNorm([0, 1, 2]),
            },
            (2, 3, 3, 2),
            lambda w: np.allclose(
                np.sqrt(np.sum(w**2, axis=(0, 1, 2))), 1.0, atol=1e-5
            ),
        ),
    ],
    ids=["nonneg", "maxnorm", "unitnorm"],
)
def test_supported_constraints_hold_on_the_effective_kernel(
    cls, kwargs, in_shape, check
):
    x = np.random.default_rng(0).standard_normal(in_shape).astype("float32")
    layer = _built(cls, kwargs, in_shape)
    randomize_variables(layer, seed=2)
    layer.g.assign(3.0 * np.asarray(layer.g))
    assert not check(np.asarray(layer.kernel))
    optimizer = keras.optimizers.SGD(0.01)
    grads = gradients(
        lambda: keras.ops.sum(keras.ops.square(layer(x))),
        layer.trainable_variables,
    )
    optimizer.apply(
        [keras.ops.convert_to_tensor(g) for g in grads],
        layer.trainable_variables,
    )
    assert check(np.asarray(layer.kernel))


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (
            wn_layers.WNDense,
            {"units": 2, "kernel_constraint": keras.constraints.MaxNorm(2, 1)},
            "axis=\\[0\\]",
        ),
        (
            wn_layers.WNDense,
            {"units": 2, "kernel_constraint": lambda w: w},
            "cannot be honoured",
        ),
        (
            wn_layers.WNConv1D,
            {
                "filters": 2,
                "kernel_size": 2,
                "kernel_constraint": keras.constraints.UnitNorm(0),
            },
            "axis=\\[0, 1\\]",
        ),
    ],
    ids=["wrong-axis", "custom", "conv-axis"],
)
def test_unsupported_constraints_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_separable_constraints_are_checked_per_kernel():
    with pytest.raises(ValueError, match="pointwise_kernel"):
        wn_layers.WNSeparableConv2D(
            4, 3, pointwise_constraint=keras.constraints.MaxNorm(1, axis=0)
        )
    wn_layers.WNSeparableConv2D(
        4, 3, depthwise_constraint=keras.constraints.MaxNorm(1, axis=[0, 1])
    )


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"init_scale": 0.0}, ValueError, "init_scale"),
        ({"init_scale": -1.0}, ValueError, "init_scale"),
        ({"init_scale": float("nan")}, ValueError, "init_scale"),
        ({"init_scale": "1"}, TypeError, "init_scale"),
        ({"data_init": "yes"}, TypeError, "data_init"),
        ({"log_scale": 1}, TypeError, "log_scale"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        wn_layers.WNDense(3, **kwargs)


def test_gain_of_a_missing_kernel_raises():
    layer = _built(
        wn_layers.WNSeparableConv1D, {"filters": 2, "kernel_size": 2}, (1, 4, 2)
    )
    assert tuple(layer.pointwise_g.shape) == (2,)
    with pytest.raises(AttributeError, match="depthwise_kernel"):
        layer.g  # noqa: B018
