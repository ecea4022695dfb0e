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

    def forward(self, v, a, b):
        """Ψ(v) = a·f(v/b) (Eq. 1 for `arctan`)."""
        # Multiplying by a fixed 1.0 is a full pass over the kernel.
        y = self.f(v if _is_one(b) else v / b)
        return y if _is_one(a) else a * y

    def inverse(self, w, a, b):
        """Ψ⁻¹(w) = b·f⁻¹(w/a) (Eq. 4 for `arctan`)."""
        return b * self.f_inverse(w / a)

    def derivative(self, v, a, b):
        """Ψ'(v) = (a/b)·f'(v/b) (Eq. 3 for `arctan`)."""
        return (a / b) * self.f_derivative(v / b)

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


def _is_one(x):
    return isinstance(x, (int, float)) and x == 1


@keras.saving.register_keras_serializable(package="keras_wc")
class Arctan(Compander):
    """`Ψ(v) = a·arctan(v/b)`, bounded by `a·π/2` (WC paper, Eq. 1)."""

    name = "arctan"
    bound = math.pi / 2

    def f(self, u):
        return ops.arctan(u)

    def f_inverse(self, y):
        return ops.tan(y)

    def f_derivative(self, u):
        return 1.0 / (1.0 + ops.square(u))

    def derivative(self, v, a, b):
        # a·b/(b² + v²) (Eq. 3) in three elementwise passes.
        return (a * b) / (b * b + ops.square(v))


@keras.saving.register_keras_serializable(package="keras_wc")
class Arsinh(Compander):
    """`Ψ(v) = a·arsinh(v/b)`, unbounded (WC paper, §IV-F)."""

    name = "arsinh"

    def f(self, u):
        return ops.arcsinh(u)

    def f_inverse(self, y):
        return ops.sinh(y)

    def f_derivative(self, u):
        return ops.rsqrt(1.0 + ops.square(u))

    def derivative(self, v, a, b):
        return a * ops.rsqrt(b * b + ops.square(v))


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
