"""The modified adaptive optimizer (WC paper §III-A.3) against numpy."""

import os

import keras
import numpy as np
import pytest

import keras_wc
from keras_wc.optimizers import ModifiedAdam, modified

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-7


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((8, 5)).astype("float32"),
        rng.standard_normal((8, 3)).astype("float32"),
    )


def _wc_model(a=0.8, b=0.6, compander="arctan"):
    inputs = keras.Input((5,))
    layer = keras_wc.WCDense(
        3, a=a, b=b, compander=compander, bias_initializer="random_normal"
    )
    return keras.Model(inputs, layer(inputs)), layer


def _numpy_modified_adam(v, bias, x, y, steps, psi, dpsi):
    """Keras's Adam (bias correction folded into the learning rate), with the
    moments of v built from ∂L/∂w and the step multiplied by Ψ'(v)."""
    v, bias = v.astype("float64"), bias.astype("float64")
    state = {
        k: [np.zeros_like(p), np.zeros_like(p)]
        for k, p in (("v", v), ("bias", bias))
    }
    for t in range(1, steps + 1):
        w = psi(v)
        err = x @ w + bias - y
        grad_w = 2 * x.T @ err / err.size  # mse
        grad_b = 2 * err.sum(axis=0) / err.size
        lr_t = LR * np.sqrt(1 - B2**t) / (1 - B1**t)
        updates = {}
        for key, g in (("v", grad_w), ("bias", grad_b)):
            m, s = state[key]
            m += (g - m) * (1 - B1)
            s += (g * g - s) * (1 - B2)
            updates[key] = m * lr_t / (np.sqrt(s) + EPS)
        v = v - dpsi(v) * updates["v"]
        bias = bias - updates["bias"]
    return v, bias


@pytest.mark.parametrize("jit", [False, True])
def test_modified_adam_matches_numpy_over_steps(jit):
    a, b = 0.8, 0.6
    model, layer = _wc_model(a, b)
    x, y = _data()
    # Copies: on PyTorch, np.asarray may share the variable's memory.
    v0, b0 = np.array(layer.v), np.array(layer.bias)
    model.compile(
        optimizer=ModifiedAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS),
        loss="mse",
        jit_compile=jit,
    )
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, shuffle=False)
    v_ref, b_ref = _numpy_modified_adam(
        v0,
        b0,
        x,
        y,
        5,
        psi=lambda v: a * np.arctan(v / b),
        dpsi=lambda v: a * b / (b**2 + v**2),
    )
    np.testing.assert_allclose(np.asarray(layer.v), v_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(layer.bias), b_ref, rtol=1e-4, atol=1e-6
    )


def test_plain_adam_differs_from_modified():
    x, y = _data()
    results = []
    for optimizer in (keras.optimizers.Adam(LR), ModifiedAdam(LR)):
        model, layer = _wc_model()
        layer.v.assign(np.full(layer.v.shape, 0.7, "float32"))
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        results.append(np.asarray(layer.v))
    assert np.max(np.abs(results[0] - results[1])) > 1e-3


def test_powerprop_zero_weights_stay_zero_and_finite():
    model, layer = _wc_model(1.0, 1.0, keras_wc.companders.Powerprop(2.0))
    v = np.asarray(layer.v).copy()
    v[0, :] = 0.0
    layer.v.assign(v)
    x, y = _data()
    model.compile(optimizer=ModifiedAdam(LR), loss="mse")
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    after = np.asarray(layer.v)
    assert np.all(np.isfinite(after))
    np.testing.assert_array_equal(after[0], 0.0)
    assert not np.allclose(after[1:], v[1:])


def _shared_problem_grads(x, y, values, first, second, shared):
    """Numpy gradients of the MSE of two WC layers sharing (a, b)."""
    a, b = values[shared._a.path], values[shared._b.path]
    v1, v2 = values[first.v.path], values[second.v.path]
    w1, w2 = a * np.arctan(v1 / b), a * np.arctan(v2 / b)
    h = x @ w1 + values[first.bias.path]
    err = h @ w2 + values[second.bias.path] - y
    g_out = 2 * err / err.size
    g_w2 = h.T @ g_out
    g_h = g_out @ w2.T
    g_w1 = x.T @ g_h
    grads = {
        first.v.path: g_w1 * a * b / (b * b + v1 * v1),
        first.bias.path: g_h.sum(axis=0),
        second.v.path: g_w2 * a * b / (b * b + v2 * v2),
        second.bias.path: g_out.sum(axis=0),
        shared._a.path: np.sum(g_w1 * w1 / a) + np.sum(g_w2 * w2 / a),
        shared._b.path: np.sum(g_w1 * (-a * v1 / (b * b + v1 * v1)))
        + np.sum(g_w2 * (-a * v2 / (b * b + v2 * v2))),
    }
    return grads


def test_learnable_shared_scales_take_plain_adam_and_old_values():
    """With a coarse (a, b) updated in the same step, every kernel's Ψ'(v)
    must use the (a, b) from before the step."""
    shared = keras_wc.SharedCompander(a=0.9, b=0.7)
    inputs = keras.Input((5,))
    first = keras_wc.WCDense(4, shared=shared, name="first")
    second = keras_wc.WCDense(3, shared=shared, name="second")
    keras.Model(inputs, second(first(inputs)))
    x, y = _data()
    optimizer = ModifiedAdam(LR)
    # a, b first: apply must still update the kernels before them.
    variables = [shared._a, shared._b, first.v, first.bias, second.v,
                 second.bias]
    snapshot = {v.path: np.asarray(v, "float64") for v in variables}
    grads = _shared_problem_grads(
        x.astype("float64"), y.astype("float64"), snapshot, first, second,
        shared,
    )
    grads = [grads[v.path].astype("float32") for v in variables]
    a0, b0 = snapshot[shared._a.path], snapshot[shared._b.path]
    optimizer.apply(grads, variables)
    lr_t = LR * np.sqrt(1 - B2) / (1 - B1)
    for variable, grad in zip(variables, grads, strict=True):
        old, g = snapshot[variable.path], np.asarray(grad, "float64")
        if variable.path.endswith("/v"):
            dpsi = a0 * b0 / (b0**2 + old**2)
            g_w = g / dpsi
            step = (1 - B1) * g_w * lr_t / (np.sqrt((1 - B2) * g_w**2) + EPS)
            expected = old - dpsi * step
        else:
            expected = old - (1 - B1) * g * lr_t / (
                np.sqrt((1 - B2) * g**2) + EPS
            )
        np.testing.assert_allclose(
            np.asarray(variable),
            expected,
            rtol=1e-4,
            atol=1e-7,
            err_msg=variable.path,
        )


def test_state_saves_and_restores(tmp_path):
    x, y = _data()
    model, _ = _wc_model()
    model.compile(optimizer=ModifiedAdam(LR), loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is ModifiedAdam
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(
        model.optimizer.variables, loaded.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for m in (model, loaded):
        m.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute.MirroredStrategy",
)


@TF_ONLY
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight_decay": 0.2},
        {"use_ema": True, "ema_momentum": 0.5},
    ],
    ids=["plain", "weight_decay", "ema"],
)
def test_mirrored_strategy_equals_one_device(options):
    """Also with the decay and the EMA of the modified optimizer. Left out:
    clipping (Keras clips each replica's gradient before the all-reduce,
    so a clipped step differs from the one-device step for plain
    optimizers too) and gradient accumulation (Keras 3.15's accumulation
    raises under MirroredStrategy, plain optimizers too)."""
    from layer_harness import mirrored_strategy

    x, y = _data()
    reference, _ = _wc_model()
    weights = reference.get_weights()
    reference.compile(optimizer=ModifiedAdam(LR, **options), loss="mse")
    reference.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False)
    with mirrored_strategy().scope():
        model, _ = _wc_model()
        model.set_weights(weights)
        model.compile(optimizer=ModifiedAdam(LR, **options), loss="mse")
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False)
    for a, b in zip(reference.weights, model.weights, strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6
        )


def test_under_mixed_precision_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model, layer = _wc_model()
        x, y = _data()
        model.compile(optimizer=ModifiedAdam(LR), loss="mse")
        before = np.asarray(layer.v).copy()
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    after = np.asarray(layer.v)
    assert np.all(np.isfinite(after)) and not np.allclose(after, before)


def test_modified_factory():
    ModifiedRMSprop = modified(keras.optimizers.RMSprop)
    assert ModifiedRMSprop.__name__ == "ModifiedRMSprop"
    assert modified(ModifiedRMSprop) is ModifiedRMSprop
    model, layer = _wc_model()
    x, y = _data()
    model.compile(optimizer=ModifiedRMSprop(1e-3), loss="mse")
    model.fit(x, y, verbose=0)
    assert np.all(np.isfinite(np.asarray(layer.v)))
    with pytest.raises(TypeError, match="optimizer_class"):
        modified(keras.optimizers.Adam(1e-3))


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (ModifiedAdam, {"learning_rate": float("nan")}, "learning_rate=nan"),
        (ModifiedAdam, {"learning_rate": -1e-3}, "learning_rate=-0.001"),
        (ModifiedAdam, {"beta_1": 1.0}, r"`beta_1` must be in \[0, 1\)"),
        (ModifiedAdam, {"beta_2": float("inf")}, "beta_2=inf"),
        (ModifiedAdam, {"epsilon": float("nan")}, "epsilon=nan"),
        (ModifiedAdam, {"global_clipnorm": -1.0}, "global_clipnorm=-1.0"),
        (
            modified(keras.optimizers.SGD),
            {"momentum": float("nan")},
            r"ModifiedSGD: `momentum` must be in \[0, 1\]",
        ),
    ],
)
def test_arguments_keras_accepts_but_cannot_use_raise(cls, kwargs, match):
    """Keras 3.15's Adam takes learning_rate=nan, beta_1=1 or epsilon=nan
    and its SGD momentum=nan; every later step would be NaN."""
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_the_checks_keep_valid_values_and_the_signature():
    import inspect

    assert inspect.signature(ModifiedAdam) == inspect.signature(
        keras.optimizers.Adam
    )
    for optimizer in (
        ModifiedAdam(0.0, beta_1=0.0, epsilon=0.0, clipnorm=1.0),
        ModifiedAdam(keras.optimizers.schedules.ExponentialDecay(0.1, 5, 0.9)),
        ModifiedAdam(1e-3, weight_decay=np.float64(1e-4)),
        modified(keras.optimizers.SGD)(0.1, momentum=1.0),
    ):
        restored = type(optimizer).from_config(optimizer.get_config())
        assert type(restored) is type(optimizer)
