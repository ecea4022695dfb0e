"""The fused C kernels (`keras_wc.native`) against numpy, and the lean
step's other fused paths (XLA ordering, XLA nested in TensorFlow's graph
mode) against the `keras.ops` path they replace."""

import math
import re

import keras
import numpy as np
import pytest
from backend_utils import BACKEND, gradients, total_loss

import keras_wc
from keras_wc import backend, native
from keras_wc.layers.reparameterized import reference_path

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
    assert native.available()


# Sizes: odd, within one block, several blocks, and split over threads
# (at least 2**17 entries).
SIZES = [1, 7, 4096 + 3, 3 * 2**16 + 5]


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("a,b", [(1.0, 1.0), (1.3, 0.6)])
def test_arctan_forward_matches_numpy(size, a, b):
    v = _x(size, scale=3.0)
    v[:3] = [0.0, 1e30, -math.inf][: min(3, size)]
    w, total = native.arctan_forward(_tensor(v), a, b, penalty=True)
    exact = a * np.arctan(v.astype("float64") / b)
    np.testing.assert_allclose(w.numpy(), exact, rtol=3e-7, atol=2e-7 * a)
    np.testing.assert_allclose(float(total), np.sum(exact**2), rtol=1e-6)
    w, none = native.arctan_forward(_tensor(v), a, b, penalty=False)
    assert none is None
    np.testing.assert_allclose(w.numpy(), exact, rtol=3e-7, atol=2e-7 * a)


@torch_only
def test_arctan_forward_keeps_nan():
    w, _ = native.arctan_forward(_tensor([np.nan, 1.0]), 1.0, 1.0, False)
    assert np.isnan(w.numpy()[0]) and not np.isnan(w.numpy()[1])


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c", [0.0, 0.3])
def test_arctan_backward_matches_eq3_with_eq5(size, c):
    a, b = 1.3, 0.6
    v, g = _x(size, 1, 2.0).astype("float64"), _x(size, 2).astype("float64")
    got = native.arctan_backward(_tensor(g), _tensor(v), a, b, c)
    w = a * np.arctan(v / b)
    want = (g + c * w) * a * b / (b * b + v * v)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=1e-7)


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("want_a", [False, True])
def test_arctan_learnable_backward_matches_numpy(size, want_a):
    a, b = 0.7, 1.4
    v, g = _x(size, 3, 2.0).astype("float64"), _x(size, 4).astype("float64")
    grad_v, sum_a, sum_b = native.arctan_learnable_backward(
        _tensor(g), _tensor(v), a, b, want_a
    )
    want = g * a * b / (b * b + v * v)
    np.testing.assert_allclose(grad_v.numpy(), want, rtol=2e-6, atol=1e-7)
    scale = np.sum(np.abs(g)) + 1.0
    expected_a = np.sum(g * np.arctan(v / b)) if want_a else 0.0
    np.testing.assert_allclose(sum_a, expected_a, atol=1e-6 * scale)
    np.testing.assert_allclose(sum_b, np.sum(want * v), atol=1e-6 * scale)


@torch_only
@pytest.mark.parametrize("size", SIZES)
def test_arctan_effective_gradient_divides_by_eq3(size):
    a, b = 1.3, 0.6
    v, g = _x(size, 5, 2.0).astype("float64"), _x(size, 6).astype("float64")
    got = native.arctan_effective_gradient(_tensor(g), _tensor(v), a, b)
    want = g * (b * b + v * v) / (a * b)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=1e-7)


@torch_only
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("decay", [0.0, 1e-3])
def test_arctan_adam_is_the_modified_adam_step(size, decay):
    a, b, beta_1, beta_2, alpha, epsilon = 1.3, 0.6, 0.9, 0.99, 0.05, 1e-7
    v = _x(size, 7).astype("float64")
    m, s = _x(size, 8) * 0.1, np.abs(_x(size, 9)) * 0.1
    g = _x(size, 10).astype("float64")
    tensors = [_tensor(t) for t in (v, m, s)]
    native.arctan_adam(
        _tensor(g), *tensors, a, b, beta_1, beta_2, alpha, epsilon, decay
    )
    m1 = m + (g - m) * (1 - beta_1)
    s1 = s + (g * g - s) * (1 - beta_2)
    slope = a * b / (b * b + v * v)
    step = alpha * m1 / (np.sqrt(s1) + epsilon) + decay * a * np.arctan(v / b)
    for got, want in zip(tensors, (v - slope * step, m1, s1), strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=2e-7)


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
    "amsgrad": lambda: keras_wc.optimizers.ModifiedAdam(1e-2, amsgrad=True),
    "clipnorm": lambda: keras_wc.optimizers.ModifiedAdam(1e-2, clipnorm=0.1),
    "sgd": lambda: keras_wc.optimizers.ModifiedSGD(0.1, momentum=0.9),
}


@pytest.mark.backends(
    "torch", "tensorflow", reason="JAX's step is XLA's, with no other path"
)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_modified_steps_equal_the_ops_path(name):
    """Training steps of the modified optimizers on their fused paths (the
    C kernels on PyTorch, XLA nested in TensorFlow's graph mode) and on the
    plain `keras.ops` path (inside `native.disabled()`, and eagerly
    without the nesting) end at the same loss and weights."""
    options = CASES["fine" if name == "adamw-fine" else "fixed"]
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
    """The fused Adam kernel runs for ModifiedAdam and ModifiedAdamW with a
    fixed-(a, b) decay; amsgrad, learnable a, b with a decay, and other
    optimizers take the `keras.ops` step."""
    calls = []
    kernel = native.arctan_adam
    monkeypatch.setattr(
        native, "arctan_adam", lambda *a: calls.append(1) or kernel(*a)
    )
    expected = {
        "adam": True,
        "adamw": True,
        "adamw-fine": False,
        "amsgrad": False,
        "clipnorm": True,
        "sgd": False,
    }
    for name, fused in expected.items():
        calls.clear()
        options = CASES["fine" if name == "adamw-fine" else "fixed"]
        _train(_converted(options), OPTIMIZERS[name](), steps=1)
        assert bool(calls) == fused, name


@pytest.mark.backends("jax", reason="XLA's copies, read off JAX's HLO")
def test_learnable_step_makes_no_copy_of_a_kernel():
    """With learnable a, b the ∂L/∂b reduction reads v; ordered before the
    gradient the optimizer consumes (`backend.after`), it lets XLA update v
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
def test_fused_by_xla_runs_the_function_compiled_in_graph_mode():
    import tensorflow as tf

    seen = []

    def function(t):
        seen.append(backend.compiled_by_xla(t))
        return t * 2.0

    owner = type("Owner", (), {})()
    t = tf.constant([1.0, 2.0])
    assert float(backend.fused_by_xla(owner, "k", function, t)[1]) == 4.0
    graph = tf.function(lambda t: backend.fused_by_xla(owner, "k", function, t))
    assert float(graph(t)[0]) == 2.0
    assert seen == [False, True]  # eagerly as it is; in a graph, by XLA
