"""Companders: the elementwise reparameterization functions Ψ.

Every built-in compander has the form `Ψ(v) = a·f(v/b)` with `a, b > 0`
(weight compander paper, Eq. 1):

| name        | f(u)         | f⁻¹(y)             | sup|f| | source         |
|-------------|--------------|--------------------|--------|----------------|
| `arctan`    | arctan(u)    | tan(y)             | π/2    | WC Eq. 1, 3, 4 |
| `arsinh`    | arsinh(u)    | sinh(y)            | ∞      | WC §IV-F       |
| `erf`       | erf(u)       | erfinv(y)          | 1      | WC §IV-F       |
| `powerprop` | u·|u|^(α−1)  | sign(y)·|y|^(1/α)  | ∞      | Schwarz 2021   |

so that `Ψ⁻¹(w) = b·f⁻¹(w/a)` (Eq. 4) and `Ψ'(v) = (a/b)·f'(v/b)` (Eq. 3).
Powerpropagation is the member of the family with `a = b = 1`.

A user compander is any object with `forward(v, a, b)` and
`inverse(w, a, b)`; subclass `Compander` to also get `derivative` (by
automatic differentiation unless overridden) and serialization.

Where XLA compiles the training step (JAX; TensorFlow with `jit_compile`)
its `atan` is slow on CPU; `Arctan.f_for_xla` is an arctan of the same
float32 accuracy that XLA fuses into one loop with the step's other
elementwise work (`polynomial_arctan`).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_wc import backend


class Compander:
    """Base class of a compander `Ψ(v) = a·f(v/b)`.

    Subclasses implement `f`, `f_inverse` and, optionally, `f_derivative`
    (the default differentiates `f` automatically). `bound` is `sup|f|`, the
    largest magnitude `Ψ` can reach for `a = 1` (`inf` when unbounded).
    Users with a compander that is not of the form `a·f(v/b)` override
    `forward`, `inverse` and `derivative` directly.

    Example:

    >>> class Tanh(keras_wc.companders.Compander):
    ...     name = "tanh"
    ...     bound = 1.0
    ...     def f(self, u):
    ...         return keras.ops.tanh(u)
    ...     def f_inverse(self, y):
    ...         return keras.ops.arctanh(y)
    >>> layer = keras_wc.WCDense(4, compander=Tanh())
    """

    name = None
    bound = math.inf
    # Whether Ψ'(v) > 0 wherever v² is finite in float32 (arctan, arsinh;
    # not erf, whose Ψ' underflows in its tails, nor powerprop at 0): the
    # modified optimizers then take ∂L/∂Ψ(v) = ∂L/∂v / Ψ'(v) unguarded.
    positive_derivative = False

    def f(self, u):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `f` or `forward`."
        )

    def f_inverse(self, y):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `f_inverse` or `inverse`."
        )

    def f_derivative(self, u):
        return backend.derivative(self.f, u)

    def f_for_xla(self, u):
        """`f` as XLA compiles it fastest (`f` itself unless overridden);
        used by the layers' lean path inside XLA-compiled steps."""
        return self.f(u)

    def forward(self, v, a, b):
        """Ψ(v) = a·f(v/b) (Eq. 1 for `arctan`)."""
        return _scaled(self.f, v, a, b)

    def forward_for_xla(self, v, a, b):
        """Ψ(v) = a·f(v/b) computed with `f_for_xla`."""
        return _scaled(self.f_for_xla, v, a, b)

    def inverse(self, w, a, b):
        """Ψ⁻¹(w) = b·f⁻¹(w/a) (Eq. 4 for `arctan`)."""
        return b * self.f_inverse(w / a)

    def derivative(self, v, a, b):
        """Ψ'(v) = (a/b)·f'(v/b) (Eq. 3 for `arctan`)."""
        slope = self.f_derivative(v if _is_one(b) else v / b)
        scale = a / b
        return slope if _is_one(scale) else scale * slope

    def max_magnitude(self, a):
        """The open bound on |Ψ(v)| for scale `a` (`inf` if unbounded)."""
        return a * self.bound

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )

    def __hash__(self):
        return hash((type(self), tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _scaled(f, v, a, b):
    # Multiplying by a fixed 1.0 is a full pass over the kernel.
    y = f(v if _is_one(b) else v / b)
    return y if _is_one(a) else a * y


def _is_one(x):
    return isinstance(x, (int, float)) and x == 1


@keras.saving.register_keras_serializable(package="keras_wc")
class Arctan(Compander):
    """`Ψ(v) = a·arctan(v/b)`, bounded by `a·π/2` (WC paper, Eq. 1)."""

    name = "arctan"
    bound = math.pi / 2
    positive_derivative = True

    def f(self, u):
        return ops.arctan(u)

    def f_inverse(self, y):
        return ops.tan(y)

    def f_derivative(self, u):
        return 1.0 / (1.0 + ops.square(u))

    def f_for_xla(self, u):
        return polynomial_arctan(u)

    def derivative(self, v, a, b):
        # a·b/(b² + v²) (Eq. 3) in three elementwise passes.
        return (a * b) / (b * b + ops.square(v))


# Odd minimax polynomial of arctan on [−tan(π/8), tan(π/8)]: the
# coefficients of u, u³, u⁵, u⁷, u⁹ (max abs error ~1.5e-7 after range
# reduction, the size of float32 round-off of arctan's values).
_ARCTAN_COEFFICIENTS = (
    0.999999903034,
    -0.333321842653,
    0.199615495396,
    -0.137515772718,
    0.0772617775483,
)
_TAN_PI_8 = math.tan(math.pi / 8)


def polynomial_arctan(x):
    """arctan(x) by range reduction and an odd degree-9 polynomial.

    |x| > 1 uses arctan(t) = π/2 − arctan(1/t); t > tan(π/8) uses
    arctan(t) = π/4 + arctan((t − 1)/(t + 1)); on the remaining
    [0, tan(π/8)] the minimax polynomial. Elementwise `where`s and
    arithmetic only, so XLA fuses it with the ops around it (its own `atan`
    is a slow loop on CPU). Not differentiated automatically: the layers
    give it the closed-form gradient.
    """
    t = ops.abs(x)
    large = t > 1.0
    t = ops.where(large, 1.0 / t, t)
    middle = t > _TAN_PI_8
    u = ops.where(middle, (t - 1.0) / (t + 1.0), t)
    u2 = ops.square(u)
    c1, c3, c5, c7, c9 = _ARCTAN_COEFFICIENTS
    y = u * (c1 + u2 * (c3 + u2 * (c5 + u2 * (c7 + u2 * c9))))
    y = ops.where(middle, y + math.pi / 4, y)
    y = ops.where(large, math.pi / 2 - y, y)
    return ops.where(x < 0, -y, y)


@keras.saving.register_keras_serializable(package="keras_wc")
class Arsinh(Compander):
    """`Ψ(v) = a·arsinh(v/b)`, unbounded (WC paper, §IV-F)."""

    name = "arsinh"
    positive_derivative = True

    def f(self, u):
        return ops.arcsinh(u)

    def f_inverse(self, y):
        return ops.sinh(y)

    def f_derivative(self, u):
        return ops.rsqrt(1.0 + ops.square(u))

    def derivative(self, v, a, b):
        slope = ops.rsqrt(b * b + ops.square(v))
        return slope if _is_one(a) else a * slope


@keras.saving.register_keras_serializable(package="keras_wc")
class Erf(Compander):
    """`Ψ(v) = a·erf(v/b)`, bounded by `a` (WC paper, §IV-F)."""

    name = "erf"
    bound = 1.0

    def f(self, u):
        return ops.erf(u)

    def f_inverse(self, y):
        return ops.erfinv(y)

    def f_derivative(self, u):
        return (2.0 / math.sqrt(math.pi)) * ops.exp(-ops.square(u))


@keras.saving.register_keras_serializable(package="keras_wc")
class Powerprop(Compander):
    """Powerpropagation `Ψ(v) = v·|v|^(α−1)` (Schwarz et al., 2021).

    Args:
        alpha: float ≥ 1. `alpha=1` is the identity (the plain layer).
    """

    name = "powerprop"

    def __init__(self, alpha=2.0):
        if isinstance(alpha, bool) or not isinstance(
            alpha, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"`alpha` must be a number. Received: alpha={alpha!r}"
            )
        if not alpha >= 1.0 or not math.isfinite(alpha):
            raise ValueError(
                f"`alpha` must be a finite number >= 1. Received: alpha={alpha}"
            )
        self.alpha = float(alpha)

    def f(self, u):
        # sign(u)·|u|^α rather than u·|u|^(α−1): the latter's autodiff
        # gradient is 0·∞ = NaN at u = 0 for 1 < α < 2.
        return ops.sign(u) * ops.power(ops.abs(u), self.alpha)

    def f_inverse(self, y):
        return ops.sign(y) * ops.power(ops.abs(y), 1.0 / self.alpha)

    def f_derivative(self, u):
        return self.alpha * ops.power(ops.abs(u), self.alpha - 1.0)

    def get_config(self):
        return {"alpha": self.alpha}


_BY_NAME = {c.name: c for c in (Arctan, Arsinh, Erf, Powerprop)}


def available():
    """Names accepted by `get`."""
    return sorted(_BY_NAME)


def get(identifier):
    """Returns a compander from a name, a config dict or an object.

    Args:
        identifier: one of `available()` (`"arctan"`, `"arsinh"`, `"erf"`,
            `"powerprop"`), a serialized compander dict, or an object with
            `forward(v, a, b)` and `inverse(w, a, b)` methods.

    Raises:
        ValueError: for an unknown name.
        TypeError: for an object that is not a compander.
    """
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(
                f"Unknown compander {identifier!r}. Valid names: "
                f"{', '.join(available())}, or a `Compander` instance."
            )
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict):
        try:
            compander = keras.saving.deserialize_keras_object(identifier)
        except (TypeError, ValueError) as error:
            raise type(error)(
                "`compander` must be a serialized compander config "
                f"({error}). Received: compander={identifier!r}"
            ) from error
        if _is_compander(compander):
            return compander
    elif _is_compander(identifier):
        return identifier
    raise TypeError(
        "`compander` must be a name, a `keras_wc.companders.Compander` or an "
        "object with `forward(v, a, b)` and `inverse(w, a, b)` methods. "
        f"Received: compander={identifier!r}"
    )


def _is_compander(value):
    return callable(getattr(value, "forward", None)) and callable(
        getattr(value, "inverse", None)
    )


def serialize(compander):
    """The config stored by layers: the bare name for a default built-in."""
    name = getattr(compander, "name", None)
    if name in _BY_NAME and compander == _BY_NAME[name]():
        return name
    return keras.saving.serialize_keras_object(compander)


def is_scale_family(compander):
    """Whether `compander` is `a·f(v/b)` (it keeps `Compander.forward`)."""
    return (
        isinstance(compander, Compander)
        and type(compander).forward is Compander.forward
    )


def derivative(compander, v, a, b):
    """Ψ'(v): the compander's own `derivative`, else autodiff of `forward`."""
    if callable(getattr(compander, "derivative", None)):
        return compander.derivative(v, a, b)
    return backend.derivative(lambda t: compander.forward(t, a, b), v)
