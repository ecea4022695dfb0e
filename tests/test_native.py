"""The fused C kernels (`keras_wc.native`) against numpy, and the lean
step's other fused paths (XLA ordering, XLA nested in TensorFlow's graph
mode) against the `keras.ops` path they replace."""

import math
import re
import warnings

import keras
import numpy as np
import pytest
from backend_utils import BACKEND, gradients, total_loss

import keras_wc
from keras_wc import backend, lean, native
from keras_wc.lean import reference_path

torch_only = pytest.mark.backends("torch", reason="the kernels run on PyTorch")


def _x(shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(shape)).astype("float32")


def _tensor(array):
    import torch

    return torch.from_numpy(np.array(array, "float32"))  # a copy


def test_the_install_step_built_the_kernels():
    """`make install` (setup.py's optional extension) builds the library on
    a machine with a C compiler, as CI's is: the lean step is fused there."""
    assert native.available(), native.why_unavailable()
    assert native.why_unavailable() is None


def test_why_the_library_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_library_path", lambda: None)
    library, reason = native._load()
    assert library is None
    assert "no compiled kernels" in reason and "--no-binary" in reason
    broken = tmp_path / "_kernels.so"
    broken.write_text("not a library")
    monkeypatch.setattr(native, "_library_path", lambda: str(broken))
    library, reason = native._load()
    assert library is None
    assert f"{broken} does not load" in reason and "--no-binary" in reason


@pytest.fixture
def without_library(monkeypatch):
    """The kernels' library missing, its one-time warning not yet given."""
    monkeypatch.setattr(native, "_LIBRARY", None)
    monkeypatch.setattr(native, "_UNAVAILABLE", "(the reason).")
    monkeypatch.setattr(native, "_warned", False)


@torch_only
def test_a_missing_library_warns_once_on_the_first_fused_step(
    without_library, monkeypatch
):
    x = _x((4, 6))
    erf = keras_wc.WCDense(3, compander=keras_wc.companders.Erf())
    arctan = keras_wc.WCDense(3, a=1.0, b=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        erf(x)  # the kernels do not compute erf: nothing is missing here
        monkeypatch.setenv("KERAS_WC_NATIVE", "0")
        arctan(x)  # the keras.ops path, chosen
    monkeypatch.delenv("KERAS_WC_NATIVE")
    with pytest.warns(UserWarning, match=r"not available: \(the reason\)"):
        want = arctan(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = arctan(x)
    with reference_path():
        np.testing.assert_allclose(got, arctan(x), rtol=1e-6)
    np.testing.assert_allclose(got, want)


# Sizes: odd, within one block, several blocks, and split over threads
# (at least 2**17 entries).
SIZES = [1, 7, 4096 + 3, 3 * 2**16 + 5]

# name -> (compander, f, f') in float64 numpy.
COMPANDERS = {
    "arctan": (
        keras_wc.companders.Arctan(),
        np.arctan,
        lambda u: 1.0 / (1.0 + u * u),
    ),
    "powerprop-2": (
        keras_wc.companders.Powerprop(2.0),
        lambda u: np.sign(u) * u * u,
        lambda u: 2.0 * np.abs(u),
    ),
    "powerprop-3": (
        keras_wc.companders.Powerprop(3.0),
        lambda u: u**3,
        lambda u: 3.0 * u * u,
    ),
}


def _kind(name):
    kind = native.kind(COMPANDERS[name][0])
    assert kind is not None
    return kind


def _psi(name, v, a, b):
    return a * COMPANDERS[name][1](v / b)


def _slope(name, v, a, b):
    return a / b * COMPANDERS[name][2](v / b)


def test_kinds_are_arctan_and_integer_powerprop():
    companders = keras_wc.companders
    assert native.kind(companders.Arctan()) is not None
    assert native.kind(companders.Powerprop(7.0)) is not None
    for other in (
        companders.Arsinh(),
        companders.Erf(),
        companders.Powerprop(1.5),
        companders.Powerprop(8.0),
    ):
        assert native.kind(other) is None, other


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(COMPANDERS))
@pytest.mark.parametrize("a,b", [(1.0, 1.0), (1.3, 0.6)])
def test_forward_matches_numpy(name, size, a, b):
    v = _x(size, scale=3.0 if name == "arctan" else 1.0)
    if name == "arctan":
        v[:3] = [0.0, 1e30, -math.inf][: min(3, size)]
    w, total = native.forward(_kind(name), a, b, _tensor(v), penalty=True)
    exact = _psi(name, v.astype("float64"), a, b)
    # float32 round-off: arctan's own (its values are < π/2); u^α carries
    # α times that of u = v/b.
    rtol = 4e-7 if name == "arctan" else 1.2e-7 * (2 + _kind(name)[1])
    atol = 2e-7 * float(np.max(np.abs(exact)))
    np.testing.assert_allclose(w.numpy(), exact, rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(total), np.sum(exact**2), rtol=10 * rtol)
    w, none = native.forward(_kind(name), a, b, _tensor(v), penalty=False)
    assert none is None
    np.testing.assert_allclose(w.numpy(), exact, rtol=rtol, atol=atol)


@torch_only
@pytest.mark.parametrize("name", sorted(COMPANDERS))
def test_forward_keeps_nan(name):
    w, _ = native.forward(_kind(name), 1.0, 1.0, _tensor([np.nan, 1.0]), False)
    assert np.isnan(w.numpy()[0]) and not np.isnan(w.numpy()[1])


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(COMPANDERS))
@pytest.mark.parametrize("penalty", [0.0, 0.3])
def test_backward_matches_eq3_with_eq5(name, size, penalty):
    a, b = 1.3, 0.6
    v, g = _x(size, 1, 2.0).astype("float64"), _x(size, 2).astype("float64")
    got = native.backward(_kind(name), a, b, _tensor(g), _tensor(v), penalty)
    want = (g + penalty * _psi(name, v, a, b)) * _slope(name, v, a, b)
    atol = 1e-7 * float(np.max(np.abs(want)))
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=atol)


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(COMPANDERS))
@pytest.mark.parametrize("want_a", [False, True])
def test_learnable_backward_matches_numpy(name, size, want_a):
    a, b = 0.7, 1.4
    v, g = _x(size, 3, 2.0).astype("float64"), _x(size, 4).astype("float64")
    grad_v, sum_a, sum_b = native.learnable_backward(
        _kind(name), a, b, _tensor(g), _tensor(v), want_a
    )
    want = g * _slope(name, v, a, b)
    atol = 1e-7 * float(np.max(np.abs(want)))
    np.testing.assert_allclose(grad_v.numpy(), want, rtol=2e-6, atol=atol)
    expected_a = np.sum(g * _psi(name, v, 1.0, b)) if want_a else 0.0
    scale = np.sum(np.abs(g * _psi(name, v, 1.0, b))) + 1.0
    np.testing.assert_allclose(sum_a, expected_a, atol=1e-6 * scale)
    scale = np.sum(np.abs(want * v)) + 1.0
    np.testing.assert_allclose(sum_b, np.sum(want * v), atol=1e-6 * scale)


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(COMPANDERS))
def test_effective_gradient_divides_by_eq3(name, size):
    a, b = 1.3, 0.6
    v, g = _x(size, 5, 2.0).astype("float64"), _x(size, 6).astype("float64")
    v[0] = 0.0  # powerprop's Ψ'(0) = 0: g_w is 0 there
    got = native.effective_gradient(_kind(name), a, b, _tensor(g), _tensor(v))
    slope = _slope(name, v, a, b)
    want = np.where(slope > 0, g / np.where(slope > 0, slope, 1.0), 0.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=1e-7)


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(COMPANDERS))
@pytest.mark.parametrize("decay", [0.0, 1e-3])
def test_adam_is_the_modified_adam_step(name, size, decay):
    a, b, beta_1, beta_2, step_size, epsilon = 1.3, 0.6, 0.9, 0.99, 0.05, 1e-7
    v = _x(size, 7).astype("float64")
    m, s = _x(size, 8) * 0.1, np.abs(_x(size, 9)) * 0.1
    g = _x(size, 10).astype("float64")
    tensors = [_tensor(t) for t in (v, m, s)]
    native.adam(
        _kind(name), a, b, _tensor(g), *tensors, beta_1, beta_2, step_size,
        epsilon, decay,
    )
    m1 = m + (g - m) * (1 - beta_1)
    s1 = s + (g * g - s) * (1 - beta_2)
    step = step_size * m1 / (np.sqrt(s1) + epsilon)
    step = step + decay * _psi(name, v, a, b)
    increment = _slope(name, v, a, b) * step
    # The increment's float32 round-off, against v's.
    atol = 2e-7 * max(1.0, float(np.max(np.abs(increment))))
    for got, want in zip(tensors, (v - increment, m1, s1), strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=atol)


def _converted(options, seed=0):
    keras.utils.set_random_seed(seed)
    plain = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                16,
                activation="tanh",
                kernel_regularizer=keras.regularizers.L2(0.05),
            ),
            keras.layers.Dense(8),
            keras.layers.Dense(3),
        ]
    )
    return keras_wc.convert(plain, "wc", **options)


CASES = {
    "fixed": {"a": 1.3, "b": 0.6},
    "fine": {"a": 1.3, "b": 0.6, "learnable": "fine"},
    "coarse": {"a": 1.3, "b": 0.6, "learnable": "coarse"},
    "pp": {"compander": keras_wc.companders.Powerprop(2.0)},
}


@torch_only
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_and_ops_paths_equal_the_reference(case):
    """Forward, penalty and gradients of every variable: the fused kernels,
    the `keras.ops` lean path (`native.disabled()`) and the reference path
    agree."""
    model = _converted(CASES[case])
    x = _x((5, 6), 11)

    def loss():
        return total_loss(keras.ops.sin(model(x, training=True)), model)

    def run():
        value = float(keras.ops.convert_to_numpy(loss()))
        return value, gradients(loss, model.trainable_variables)

    fused = run()
    with native.disabled():
        ops_path = run()
    with reference_path():
        reference = run()
    for got in (fused, ops_path):
        np.testing.assert_allclose(got[0], reference[0], rtol=1e-6)
        for g, want in zip(got[1], reference[1], strict=True):
            scale = max(1.0, float(np.max(np.abs(want))))
            np.testing.assert_allclose(g, want, rtol=2e-5, atol=1e-6 * scale)


def _train(model, optimizer, steps=3):
    x, y = _x((8, 6), 12), np.arange(8) % 3
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = [model.train_on_batch(x, y) for _ in range(steps)]
    return losses, [np.asarray(v) for v in model.weights]


OPTIMIZERS = {
    "adam": lambda: keras_wc.optimizers.ModifiedAdam(1e-2),
    "adamw": lambda: keras_wc.optimizers.ModifiedAdamW(
        1e-2, weight_decay=0.1
    ),
    "adamw-fine": lambda: keras_wc.optimizers.ModifiedAdamW(
        1e-2, weight_decay=0.1
    ),
    "adam-pp": lambda: keras_wc.optimizers.ModifiedAdam(1e-2),
    "amsgrad": lambda: keras_wc.optimizers.ModifiedAdam(1e-2, amsgrad=True),
    "clipnorm": lambda: keras_wc.optimizers.ModifiedAdam(1e-2, clipnorm=0.1),
    "sgd": lambda: keras_wc.optimizers.ModifiedSGD(0.1, momentum=0.9),
}
# The model each optimizer trains (fixed-(a, b) WC unless named here).
OPTIMIZER_CASES = {"adamw-fine": "fine", "adam-pp": "pp"}


@pytest.mark.backends(
    "torch", "tensorflow", reason="JAX's step is XLA's, with no other path"
)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_modified_steps_equal_the_ops_path(name):
    """Training steps of the modified optimizers on their fused paths (the
    C kernels on PyTorch, XLA nested in TensorFlow's graph mode) and on the
    plain `keras.ops` path (inside `native.disabled()`, and eagerly
    without the nesting) end at the same loss and weights."""
    options = CASES[OPTIMIZER_CASES.get(name, "fixed")]
    fused = _train(_converted(options), OPTIMIZERS[name]())
    with native.disabled():
        model = _converted(options)
        model.compile(
            optimizer=OPTIMIZERS[name](),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            run_eagerly=BACKEND == "tensorflow",
        )
        x, y = _x((8, 6), 12), np.arange(8) % 3
        losses = [model.train_on_batch(x, y) for _ in range(3)]
        plain = (losses, [np.asarray(v) for v in model.weights])
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-5)
    for got, want in zip(fused[1], plain[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@torch_only
def test_modified_adam_takes_the_fused_step_only_where_it_is_adams(
    monkeypatch,
):
    """The fused Adam kernel runs for ModifiedAdam and ModifiedAdamW (WC
    with a fixed-(a, b) decay, PP); amsgrad, learnable a, b with a decay,
    and other optimizers take the `keras.ops` step."""
    calls = []
    kernel = native.adam
    monkeypatch.setattr(
        native, "adam", lambda *a: calls.append(1) or kernel(*a)
    )
    expected = {
        "adam": True,
        "adamw": True,
        "adamw-fine": False,
        "adam-pp": True,
        "amsgrad": False,
        "clipnorm": True,
        "sgd": False,
    }
    for name, fused in expected.items():
        calls.clear()
        options = CASES[OPTIMIZER_CASES.get(name, "fixed")]
        _train(_converted(options), OPTIMIZERS[name](), steps=1)
        assert bool(calls) == fused, name


@pytest.mark.backends("jax", reason="XLA's copies, read off JAX's HLO")
def test_learnable_step_makes_no_copy_of_a_kernel():
    """With learnable a, b the ∂L/∂b reduction reads v; ordered before the
    gradient the optimizer consumes (`lean.ordered_after`), it lets XLA update v
    in place instead of copying it every step."""
    import jax

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(96)])
    model = keras_wc.convert(model, "wc", learnable="fine")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    x, y = _x((4, 64), 13), _x((4, 96), 14)
    model.train_on_batch(x, y)  # builds the optimizer and the state
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    step = jax.jit(model.train_step, donate_argnums=0)
    text = step.lower(state, (x, y)).compile().as_text()
    entry = text[text.index("ENTRY") :]
    assert not re.search(r"f32\[64,96\]\{1,0\} copy\(", entry), entry


@pytest.mark.backends("tensorflow", reason="TensorFlow's graph mode")
def test_xla_in_tf_graph_runs_the_function_compiled_in_graph_mode():
    import tensorflow as tf

    seen = []

    def function(t):
        seen.append(backend.in_xla_step(t))
        return t * 2.0

    owner = type("Owner", (), {})()
    t = tf.constant([1.0, 2.0])
    assert float(lean.xla_in_tf_graph(owner, "k", function, t)[1]) == 4.0
    graph = tf.function(lambda t: lean.xla_in_tf_graph(owner, "k", function, t))
    assert float(graph(t)[0]) == 2.0
    assert seen == [False, True]  # eagerly as it is; in a graph, by XLA
