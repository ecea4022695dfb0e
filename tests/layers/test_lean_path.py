"""The lean training step against the reference path and against numpy.

The lean path (closed-form gradients, the L2 penalty fused into the kernel's
function, the polynomial arctan inside XLA) must compute what the reference
path (`reference_path()`: plain `keras.ops` and autodiff, the penalty
evaluated separately) computes: forward, gradients, optimizer steps.
"""

import math

import keras
import numpy as np
import pytest
from backend_utils import BACKEND, gradients, total_loss
from scipy import special

import keras_wc
from keras_wc import backend, companders, lean
from keras_wc.layers.wn_base import WeightNormMixin
from keras_wc.lean import reference_path


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_polynomial_arctan_matches_numpy_to_float32_round_off():
    x = np.concatenate(
        [
            np.linspace(-60.0, 60.0, 240001),
            np.logspace(-30, 30, 3001),
            -np.logspace(-30, 30, 3001),
            [0.0, 1.0, -1.0, math.tan(math.pi / 8), np.inf, -np.inf],
        ]
    ).astype("float32")
    y = np.asarray(
        keras.ops.convert_to_numpy(companders.polynomial_arctan(x)),
        "float64",
    )
    exact = np.arctan(x.astype("float64"))
    # float32's own arctan is within ~1.2e-7 of the exact value here.
    assert np.max(np.abs(y - exact)) < 2e-7
    assert np.max(np.abs(y - exact) / np.maximum(np.abs(exact), 1e-30)) < 3e-7
    assert np.isnan(
        keras.ops.convert_to_numpy(
            companders.polynomial_arctan(np.float32([np.nan]))
        )
    ).all()


@pytest.mark.parametrize("name", ["arctan", "arsinh", "erf", "powerprop"])
def test_positive_derivative_is_set_where_eq3_never_vanishes(name):
    """The modified optimizers divide by Ψ'(v) unguarded where
    `positive_derivative` is set: Ψ'(v) > 0 there for every v whose square
    is finite; erf's underflows in its tails, powerprop's is 0 at 0."""
    comp = companders.get(name)
    magnitudes = np.logspace(-30, 18, 97)
    v = np.concatenate([-magnitudes, [0.0], magnitudes]).astype("float32")
    slope = np.asarray(
        keras.ops.convert_to_numpy(companders.derivative(comp, v, 0.9, 0.7))
    )
    assert comp.positive_derivative == bool(np.all(slope > 0))
    assert comp.positive_derivative == (name in ("arctan", "arsinh"))


def test_in_xla_step_tells_compiled_steps_apart():
    seen = {}
    if BACKEND == "jax":
        import jax

        seen["eager"] = backend.in_xla_step(np.float32(1.0))
        jax.jit(lambda t: seen.setdefault("jit", backend.in_xla_step(t)))(
            np.float32(1.0)
        )
        assert seen == {"eager": False, "jit": True}
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        def probe(key):
            def function(t):
                seen[key] = backend.in_xla_step(t)
                return t

            return function

        t = tf.constant(1.0)
        seen["eager"] = backend.in_xla_step(t)
        tf.function(probe("graph"))(t)
        tf.function(probe("xla"), jit_compile=True)(t)
        assert seen == {"eager": False, "graph": False, "xla": True}
    else:
        import torch

        assert not backend.in_xla_step(torch.ones(2))


@pytest.mark.parametrize("name,a,b", [("arctan", 1.3, 0.6), ("erf", 1, 1)])
def test_fused_penalty_and_gradient_match_numpy(name, a, b):
    comp = companders.get(name)
    v = keras.Variable(_x((6, 5)))
    weights = _x((6, 5), 1)
    l2 = 0.03

    regularizer = keras.regularizers.L2(l2)

    def loss():
        w, penalty = lean.compander_kernel(comp, v.value, a, b, regularizer)
        return keras.ops.sum(keras.ops.multiply(w, weights)) + penalty

    (grad,) = gradients(loss, [v])
    v64 = np.asarray(v, "float64")
    if name == "arctan":
        w = a * np.arctan(v64 / b)
        slope = a * b / (b * b + v64**2)
    else:
        w = special.erf(v64)
        slope = 2 / math.sqrt(math.pi) * np.exp(-(v64**2))
    w_lean, penalty = lean.compander_kernel(comp, v.value, a, b, regularizer)
    np.testing.assert_allclose(np.asarray(w_lean), w, rtol=1e-6, atol=1e-7)
    penalty = float(keras.ops.convert_to_numpy(penalty))
    np.testing.assert_allclose(penalty, l2 * np.sum(w**2), rtol=1e-6)
    # Eq. 5's penalty reaches v through Ψ' like the rest of the loss.
    np.testing.assert_allclose(
        grad, (weights + 2 * l2 * w) * slope, rtol=1e-5, atol=1e-7
    )


def _entry_variables():
    """v (two all-zero units among six: WN's dead-unit branch), g, a, b."""
    v = _x((4, 6), 2)
    v[:, 4] = 0.0
    g = (1.0 + 0.1 * np.arange(6, dtype="float32")).reshape(1, 6)
    return {
        "v": keras.Variable(v),
        "g": keras.Variable(g),
        "a": keras.Variable(np.float32(1.3)),
        "b": keras.Variable(np.float32(0.6)),
    }


_ARCTAN = companders.get("arctan")
_L2 = keras.regularizers.L2(0.05)
# Each entry point of `keras_wc.lean` with a reference, on the variables
# of `_entry_variables`: (the call, the variables it differentiates).
ENTRY_POINTS = {
    "compander": (
        lambda t: lean.compander_kernel(_ARCTAN, t["v"].value, 1.3, 0.6),
        ["v"],
    ),
    "compander-l2": (
        lambda t: lean.compander_kernel(_ARCTAN, t["v"].value, 1.3, 0.6, _L2),
        ["v"],
    ),
    "compander-l1": (
        lambda t: lean.compander_kernel(
            _ARCTAN, t["v"].value, 1.3, 0.6, keras.regularizers.L1(0.05)
        ),
        ["v"],
    ),
    "powerprop-l2": (
        lambda t: lean.compander_kernel(
            companders.Powerprop(3.0), t["v"].value, 1.0, 1.0, _L2
        ),
        ["v"],
    ),
    "learnable-compander": (
        lambda t: lean.learnable_compander_kernel(
            _ARCTAN, t["v"].value, t["a"].value, t["b"].value
        ),
        ["v", "a", "b"],
    ),
    "weight-norm": (
        lambda t: lean.weight_norm_kernel(
            t["v"].value, t["g"].value, (0,), 1e-12
        ),
        ["v", "g"],
    ),
    "weight-norm-l2": (
        lambda t: lean.weight_norm_kernel(
            t["v"].value, t["g"].value, (0,), 1e-12, _L2
        ),
        ["v", "g"],
    ),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_lean_entry_points_equal_their_reference(entry):
    """Each entry point of `keras_wc.lean`: its value (and penalty) and
    gradients on the lean path equal those inside `reference_path()`."""
    call, names = ENTRY_POINTS[entry]
    tensors = _entry_variables()
    weights = _x((4, 6), 3)

    def loss():
        out = call(tensors)
        w, penalty = out if isinstance(out, tuple) else (out, 0.0)
        return keras.ops.sum(keras.ops.multiply(w, weights)) + penalty

    variables = [tensors[name] for name in names]
    got = [float(keras.ops.convert_to_numpy(loss()))]
    got += gradients(loss, variables)
    with reference_path():
        want = [float(keras.ops.convert_to_numpy(loss()))]
        want += gradients(loss, variables)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for g, w in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


def test_lean_only_entry_points_equal_the_formulas():
    """The entry points without a reference path (the scaled-output
    path's): f(v/b) against `compander.forward(v, 1, b)`, WN's per-unit
    (1/‖v‖, ‖v‖²/max(‖v‖², ε)) against the formula, values and gradients."""
    tensors = _entry_variables()
    weights = _x((4, 6), 3)

    def direction(fast):
        def loss():
            v, b = tensors["v"].value, tensors["b"].value
            d = (
                lean.learnable_compander_direction(_ARCTAN, v, b)
                if fast
                else _ARCTAN.forward(v, 1.0, b)
            )
            return keras.ops.sum(keras.ops.multiply(d, weights))

        return gradients(loss, [tensors["v"], tensors["b"]])

    def scale(fast):
        def loss():
            v = tensors["v"].value
            if fast:
                inv, ratio = lean.weight_norm_scale(v, (0,), 1e-12)
            else:
                squares = keras.ops.sum(
                    keras.ops.square(v), axis=0, keepdims=True
                )
                inv = 1.0 / keras.ops.sqrt(keras.ops.maximum(squares, 1e-12))
                ratio = squares / keras.ops.maximum(squares, 1e-12)
            return keras.ops.sum(
                keras.ops.multiply(inv, weights[:1])
            ) + keras.ops.sum(keras.ops.multiply(ratio, weights[1:2]))

        return gradients(loss, [tensors["v"]])

    for pair in (direction, scale):
        for got, want in zip(pair(True), pair(False), strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


# method, convert options
CASES = {
    "wc": ("wc", {"a": 1.3, "b": 0.6}),
    "wc-arsinh": ("wc", {"a": 0.7, "b": 0.8, "compander": "arsinh"}),
    "wc-erf": ("wc", {"a": 1.0, "b": 0.7, "compander": "erf"}),
    "wc-fine": ("wc", {"a": 1.3, "b": 0.6, "learnable": "fine"}),
    "wc-coarse": ("wc", {"a": 1.3, "b": 0.6, "learnable": "coarse"}),
    "pp": ("pp", {"alpha": 1.5}),
    "wn": ("wn", {}),
}


def _model(case, x):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            keras.layers.Dense(
                12,
                activation="tanh",
                kernel_regularizer=keras.regularizers.L2(0.05),
            ),
            keras.layers.Dense(
                3, kernel_regularizer=keras.regularizers.L1L2(l2=0.02)
            ),
        ]
    )
    method, options = CASES[case]
    model = keras_wc.convert(model, method, **options)
    if method == "wn":
        keras_wc.initialize(model, x)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_lean_forward_penalty_and_gradients_equal_reference(case):
    x = _x((8, 5))
    model = _model(case, x)
    _assert_lean_equals_reference(
        model, lambda: total_loss(model(x, training=True), model)
    )


@pytest.mark.parametrize("case", ["wc", "wn"])
def test_a_layers_last_penalties_stay_alive(case):
    """Keras drops from a stateless scope the losses whose `id()` a layer
    added in its previous call; the layers keep those tensors alive until
    their next penalty, so that no new loss (another layer's penalty in
    the next step) can get one of those ids. Without this, eager JAX
    training dropped a penalty in about 1 of 100 runs."""
    import gc

    x = _x((8, 5))
    model = _model(case, x)
    for _ in range(2):
        mapping = [(v, v.value) for v in model.variables]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            model(x, training=True)
    gc.collect()
    layers = [layer for layer in model.layers if layer._call_regularizers]
    assert layers
    for layer in layers:
        alive = {id(p) for p in layer._penalties.values()}
        assert layer._loss_ids and layer._loss_ids <= alive, layer.name


def _jit_modes():
    return [False] if BACKEND == "torch" else [False, True]


@pytest.mark.parametrize("jit", _jit_modes())
@pytest.mark.parametrize(
    "case,optimizer",
    [
        ("wc", "sgd"),
        ("wc", "modified_adam"),
        ("wc-fine", "sgd"),
        ("wc-coarse", "sgd"),
        ("wc-arsinh", "modified_adam"),
        ("wc-erf", "modified_adam"),
        ("pp", "modified_adam"),
        ("wn", "sgd"),
    ],
)
def test_lean_training_steps_equal_reference(case, optimizer, jit):
    """`train_on_batch` with the lean path, compiled as the user compiles
    it (XLA: the polynomial arctan), against the reference path."""
    x = _x((8, 5))
    y = np.arange(8) % 3
    results = []
    for use_reference in (False, True):
        model = _model(case, x)
        model.compile(
            optimizer=(
                keras.optimizers.SGD(0.1, momentum=0.9)
                if optimizer == "sgd"
                else keras_wc.optimizers.ModifiedAdam(1e-2)
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        if use_reference:
            with reference_path():
                losses = [model.train_on_batch(x, y) for _ in range(3)]
        else:
            losses = [model.train_on_batch(x, y) for _ in range(3)]
        results.append((losses, [np.asarray(v) for v in model.weights]))
    (lean_losses, lean), (reference_losses, reference) = results
    np.testing.assert_allclose(lean_losses, reference_losses, rtol=1e-5)
    for got, want in zip(lean, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# Layers whose output WN scales by g/‖v‖ instead of computing the kernel:
# (layer, input shape). The EinsumDense equations put the unit axes in
# kernel order and in the opposite order in the output.
SCALED_OUTPUT_LAYERS = {
    "dense-rank3": (lambda r: keras.layers.Dense(6, "tanh", **r), (2, 3, 16)),
    "einsum": (
        lambda r: keras.layers.EinsumDense(
            "abc,cde->abde", (None, 3, 4), bias_axes="de", **r
        ),
        (2, 2, 16),
    ),
    "einsum-permuted": (
        lambda r: keras.layers.EinsumDense(
            "abc,ced->abde", (None, 3, 4), bias_axes="e", **r
        ),
        (2, 2, 16),
    ),
    "conv1d-causal": (
        lambda r: keras.layers.Conv1D(4, 3, padding="causal", **r),
        (2, 5, 8),
    ),
    "conv2d": (
        lambda r: keras.layers.Conv2D(4, 3, strides=2, activation="relu", **r),
        (2, 7, 7, 3),
    ),
    "conv2d-channels-first": (
        lambda r: keras.layers.Conv2D(
            4, 3, data_format="channels_first", **r
        ),
        (2, 8, 4, 4),
    ),
    "conv3d-no-bias": (
        lambda r: keras.layers.Conv3D(2, 2, use_bias=False, **r),
        (2, 3, 3, 3, 4),
    ),
    "conv2d-transpose": (
        lambda r: keras.layers.Conv2DTranspose(4, 3, strides=2, **r),
        (2, 2, 2, 8),
    ),
    "conv1d-transpose": (
        lambda r: keras.layers.Conv1DTranspose(3, 2, **r),
        (2, 3, 8),
    ),
}


def _scaled_output_model(
    name, method="wn", regularizer=None, skip_unless_cpu_runs=None
):
    build, shape = SCALED_OUTPUT_LAYERS[name]
    keras.utils.set_random_seed(5)
    plain = keras.Sequential(
        [keras.Input(shape[1:]), build({"kernel_regularizer": regularizer})]
    )
    if skip_unless_cpu_runs is not None:  # before WN's data init runs it
        skip_unless_cpu_runs(plain)
    x = _x(shape, seed=1)
    kind, options = CASES[method]
    model = keras_wc.convert(plain, kind, **options)
    if kind == "wn":
        keras_wc.initialize(model, x)
        # Move g off its data-init value, so that the test sees g·v/‖v‖
        # and not only the direction.
        gain = model.layers[0].raw_gains["kernel"]
        value = np.asarray(keras.ops.convert_to_numpy(gain))
        scale = 1.0 + 0.1 * np.arange(value.size)
        gain.assign(value * scale.reshape(value.shape))
    return model, x


def _assert_lean_equals_reference(model, loss):
    """The loss and the gradients of every trainable variable are the
    same on the lean path and on the reference path."""
    lean_loss = float(keras.ops.convert_to_numpy(loss()))
    lean = gradients(loss, model.trainable_variables)
    with reference_path():
        reference_loss = float(keras.ops.convert_to_numpy(loss()))
        reference = gradients(loss, model.trainable_variables)
    np.testing.assert_allclose(lean_loss, reference_loss, rtol=1e-6)
    for variable, got, want in zip(
        model.trainable_variables, lean, reference, strict=True
    ):
        # atol: gradients are sums of terms that cancel (the bias of a
        # data-initialized WN layer: to ~1e-7; WN's ∂L/∂v = (g/‖v‖)·∂L/∂w
        # − (projection)·v), rounded differently on the two paths: float32
        # round-off of the gradient's largest entries.
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(
            got, want, rtol=2e-5, atol=1e-5 * scale, err_msg=variable.path
        )


@pytest.mark.parametrize("method", ["wn", "wc-fine", "wc-coarse"])
@pytest.mark.parametrize("name", sorted(SCALED_OUTPUT_LAYERS))
def test_output_scaling_equals_reference(name, method, skip_unless_cpu_runs):
    """WN scaling the output by g/‖v‖ instead of the kernel, learnable WC
    scaling it by `a`: forward, penalty and gradients (a and b included)
    equal the reference path's, which computes the kernel."""
    model, x = _scaled_output_model(
        name, method, keras.regularizers.L2(0.05), skip_unless_cpu_runs
    )
    assert model.layers[0]._output_scaling(x) is not None
    lean_out = keras.ops.convert_to_numpy(model(x))
    with reference_path():
        assert model.layers[0]._output_scaling(x) is None
        reference_out = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(lean_out, reference_out, rtol=1e-5, atol=1e-6)
    _assert_lean_equals_reference(
        model,
        lambda: total_loss(keras.ops.sin(model(x, training=True)), model),
    )


def test_wn_output_scaling_zero_unit_has_the_reference_gradients():
    """An all-zero column of v (w = 0, ‖v‖² below ε) gets the reference
    path's gradients, penalty included."""
    model, x = _scaled_output_model(
        "dense-rank3", regularizer=keras.regularizers.L2(0.5)
    )
    v = model.layers[0].v
    value = np.array(keras.ops.convert_to_numpy(v))
    value[:, 2] = 0.0
    v.assign(value)
    _assert_lean_equals_reference(
        model, lambda: total_loss(model(x, training=True), model)
    )


class _DoubledDense(keras.layers.Dense):
    def call(self, inputs, training=None):
        return super().call(inputs) * 2.0


class _WNDoubledDense(WeightNormMixin, _DoubledDense):
    """WN over a Dense subclass with a `call` of its own, which the output
    scaling must not bypass."""


@pytest.mark.parametrize(
    "case",
    [
        "float16",
        "l1-penalty",
        "custom-call",
        "depthwise",
        "large-output",
        "reference",
    ],
)
def test_wn_keeps_the_kernel_where_output_scaling_does_not_hold(case):
    """The kernel g·v/‖v‖ is computed (not the output scaled) under a
    float16 compute dtype, for a penalty other than L2, for a `call` that
    is not Keras's own, for layers whose units are not the output's
    channels (depthwise), for an output larger than the kernel (a
    convolution over a large image), and on the reference path."""
    regularizer = keras.regularizers.L1(0.01) if case == "l1-penalty" else None
    if case == "custom-call":
        layer = _WNDoubledDense(4, data_init=False)
    elif case == "depthwise":
        layer = keras.layers.DepthwiseConv2D(3)
    elif case == "large-output":
        layer = keras.layers.Conv2D(4, 3)
    else:
        layer = keras.layers.Dense(4, kernel_regularizer=regularizer)
    if case == "float16":
        layer = keras.layers.Dense(4, dtype="mixed_float16")
    shape = {"depthwise": (2, 5, 5, 3), "large-output": (2, 16, 16, 3)}.get(
        case, (2, 3)
    )
    plain = keras.Sequential([keras.Input(shape[1:]), layer])
    x = _x(shape)
    if case == "custom-call":
        model = plain
    else:
        model = keras_wc.convert(plain, "wn")
        keras_wc.initialize(model, x)
    wn = model.layers[0]
    if case == "reference":
        with reference_path():
            assert wn._output_scaling(x) is None
        assert wn._output_scaling(x) is not None
        return
    assert wn._output_scaling(x) is None
    want = keras.ops.convert_to_numpy(model(x))
    if case == "custom-call":
        w = keras.ops.convert_to_numpy(wn.kernel)
        np.testing.assert_allclose(
            want, 2.0 * (x @ w + np.asarray(wn.bias)), rtol=1e-5, atol=1e-6
        )
    with reference_path():
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model(x)), want, rtol=2e-5, atol=1e-5
        )


@pytest.mark.parametrize(
    "layer,options",
    [
        (keras.layers.Dense(4), {"a": 1.0, "b": 0.6}),  # fixed a, b
        (keras.layers.DepthwiseConv2D(3), {"learnable": "fine"}),
        (keras.layers.SeparableConv2D(4, 3), {"learnable": "fine"}),
    ],
    ids=["fixed", "depthwise", "separable"],
)
def test_wc_scales_the_output_only_with_learnable_linear_layers(
    layer, options
):
    """Fixed a, b keep the kernel Ψ(v) (its L2 penalty is fused with it);
    depthwise and separable layers have no `a`-scaled output path."""
    shape = (2, 3) if isinstance(layer, keras.layers.Dense) else (2, 5, 5, 3)
    plain = keras.Sequential([keras.Input(shape[1:]), layer])
    model = keras_wc.convert(plain, "wc", **options)
    wc = model.layers[0]
    x = _x(shape)
    assert getattr(wc, "_output_scaling", lambda _: None)(x) is None
    want = keras.ops.convert_to_numpy(model(x))
    with reference_path():
        # On PyTorch the lean Ψ is the fused kernels' polynomial arctan
        # (within 1.5e-7 of arctan per weight), summed here over a
        # convolution's 27 inputs: atol 1e-6 (1e-7 with the same arctan).
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model(x)), want, rtol=1e-6, atol=1e-6
        )


def _step_temporaries(model, x, y):
    """The bytes of temporaries of `model`'s compiled JAX training step."""
    from bench.speed import xla_step_analysis

    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.train_on_batch(x, y)  # builds the optimizer
    return xla_step_analysis(model, x, y).temp_size_in_bytes


@pytest.mark.backends("jax", reason="XLA's memory analysis of the JAX step")
def test_the_fused_penalty_keeps_no_kernel_alive_for_the_backward():
    # Eq. 5's penalty gradient 2·l2·Ψ(v)·Ψ'(v) reads Ψ(v): kept from the
    # forward pass it is a kernel-sized temporary alive with ∂L/∂Ψ(v);
    # recomputed (`lean.recomputed`), the step with the penalty needs no
    # more temporary memory than the step without it.
    def model(l2):
        regularizer = keras.regularizers.L2(l2) if l2 else None
        inputs = keras.Input((64,))
        h = keras.layers.Dense(
            512, activation="relu", kernel_regularizer=regularizer
        )(inputs)
        h = keras.layers.Dense(
            512, activation="relu", kernel_regularizer=regularizer
        )(h)
        outputs = keras.layers.Dense(4, kernel_regularizer=regularizer)(h)
        return keras_wc.convert(keras.Model(inputs, outputs), "wc", b=0.6)

    x, y = _x((8, 64)), _x((8, 4), seed=1)
    without = _step_temporaries(model(0.0), x, y)
    with_penalty = _step_temporaries(model(5e-5), x, y)
    kernel = 512 * 512 * 4
    assert with_penalty < without + kernel // 2, (with_penalty, without)
