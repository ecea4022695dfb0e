"""Companders against independent numpy/scipy formulas."""

import math

import keras
import numpy as np
import pytest
from backend_utils import gradients
from scipy import special

from keras_wc import companders

V = np.linspace(-3.0, 3.0, 61).astype("float32")
SCALES = [(1.0, 1.0), (0.5, 0.7), (1.3, 0.6)]

# name: (Ψ, Ψ⁻¹, Ψ'), written with numpy/scipy from the paper's formulas.
REFERENCE = {
    "arctan": (
        lambda v, a, b: a * np.arctan(v / b),  # Eq. 1
        lambda w, a, b: b * np.tan(w / a),  # Eq. 4
        lambda v, a, b: a / (b * (1 + v**2 / b**2)),  # Eq. 3
    ),
    "arsinh": (
        lambda v, a, b: a * np.arcsinh(v / b),
        lambda w, a, b: b * np.sinh(w / a),
        lambda v, a, b: a / np.sqrt(b**2 + v**2),
    ),
    "erf": (
        lambda v, a, b: a * special.erf(v / b),
        lambda w, a, b: b * special.erfinv(w / a),
        lambda v, a, b: (
            2 * a / (b * math.sqrt(math.pi)) * np.exp(-(v**2) / b**2)
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("a,b", SCALES)
def test_builtin_matches_reference(name, a, b):
    psi, psi_inv, dpsi = REFERENCE[name]
    comp = companders.get(name)
    w = np.asarray(comp.forward(V, a, b))
    np.testing.assert_allclose(w, psi(V, a, b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(comp.derivative(V, a, b)),
        dpsi(V, a, b),
        rtol=1e-5,
        atol=1e-7,
    )
    inside = w[np.abs(w) < 0.95 * comp.max_magnitude(a)]
    np.testing.assert_allclose(
        np.asarray(comp.inverse(inside, a, b)),
        psi_inv(inside.astype("float64"), a, b),
        rtol=2e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0, 3.0])
def test_powerprop_matches_schwarz(alpha):
    comp = companders.Powerprop(alpha)
    w = np.asarray(comp.forward(V, 1.0, 1.0))
    np.testing.assert_allclose(
        w, V * np.abs(V) ** (alpha - 1), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        np.asarray(comp.inverse(w, 1.0, 1.0)), V, rtol=1e-4, atol=1e-5
    )
    nonzero = V[V != 0]
    np.testing.assert_allclose(
        np.asarray(comp.derivative(nonzero, 1.0, 1.0)),
        alpha * np.abs(nonzero) ** (alpha - 1),
        rtol=1e-5,
    )


def test_powerprop_gradient_finite_at_zero():
    v = keras.Variable([0.0, 1e-30, -2.0])
    (grad,) = gradients(
        lambda: keras.ops.sum(
            companders.Powerprop(1.5).forward(v.value, 1.0, 1.0)
        ),
        [v],
    )
    assert np.all(np.isfinite(grad)), grad
    assert grad[0] == 0.0


@pytest.mark.parametrize("name", ["arctan", "arsinh", "erf"])
def test_closed_form_derivative_equals_autodiff(name):
    comp = companders.get(name)
    autodiff = companders.Compander.f_derivative(comp, V / 0.7)
    np.testing.assert_allclose(
        np.asarray(comp.derivative(V, 0.9, 0.7)),
        0.9 / 0.7 * np.asarray(autodiff),
        rtol=1e-5,
        atol=1e-7,
    )


def test_bounds():
    assert companders.get("arctan").max_magnitude(0.8) == pytest.approx(
        0.8 * math.pi / 2
    )
    assert companders.get("erf").max_magnitude(0.8) == pytest.approx(0.8)
    assert math.isinf(companders.get("arsinh").max_magnitude(0.8))
    assert math.isinf(companders.get("powerprop").max_magnitude(1.0))


class Tanh(companders.Compander):
    name = "tanh"
    bound = 1.0

    def f(self, u):
        return keras.ops.tanh(u)

    def f_inverse(self, y):
        return keras.ops.arctanh(y)


class DuckTyped:
    def forward(self, v, a, b):
        return a * keras.ops.tanh(v / b)

    def inverse(self, w, a, b):
        return b * keras.ops.arctanh(w / a)


def test_user_compander_derivative_by_autodiff():
    expected = 0.5 / 2.0 * (1 - np.tanh(V / 2.0) ** 2)
    for comp in (Tanh(), DuckTyped()):
        got = companders.derivative(companders.get(comp), V, 0.5, 2.0)
        np.testing.assert_allclose(
            np.asarray(got), expected, rtol=1e-5, atol=1e-7
        )


def test_get_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="arctan, arsinh, erf, powerprop"):
        companders.get("atan")


@pytest.mark.parametrize("bad", [3, None, object(), lambda v: v])
def test_get_rejects_non_companders(bad):
    with pytest.raises(TypeError, match="`compander` must be"):
        companders.get(bad)


@pytest.mark.parametrize("alpha", [0.5, 0.0, -1.0, float("nan"), float("inf")])
def test_powerprop_alpha_below_one(alpha):
    with pytest.raises(
        ValueError, match="`alpha` must be a finite number >= 1"
    ):
        companders.Powerprop(alpha)


@pytest.mark.parametrize("alpha", ["2", None, True])
def test_powerprop_alpha_type(alpha):
    with pytest.raises(TypeError, match="`alpha` must be a number"):
        companders.Powerprop(alpha)


def test_serialize_round_trip():
    assert companders.serialize(companders.Arctan()) == "arctan"
    assert companders.serialize(companders.Powerprop()) == "powerprop"
    config = companders.serialize(companders.Powerprop(3.0))
    assert isinstance(config, dict)
    assert companders.get(config) == companders.Powerprop(3.0)
