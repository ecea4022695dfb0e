"""The modified adaptive optimizer of the WC paper (§III-A.3).

Adaptive optimizers normalize the gradient, which would cancel the factor
`Ψ'(v)` that weight compander puts into `∂L/∂v = ∂L/∂Ψ(v)·Ψ'(v)` (Eq. 2).
The modified optimizer (from powerpropagation) therefore

1. builds its state (Adam's moments) from `g_w = ∂L/∂Ψ(v)`, the gradient
   with respect to the effective weight, and
2. multiplies the resulting step by `Ψ'(v)`:  `v ← v − Ψ'(v) ⊙ step(g_w)`.

Every other variable (biases, normalization layers, learnable `a, b`, WN
variables) takes the optimizer's plain step.

`g_w` is recovered from the gradient Keras computes, `g_v = g_w ⊙ Ψ'(v)`,
as `g_v / Ψ'(v)`. Where `Ψ'(v)` is exactly 0 (powerprop at `v = 0`, or erf
far in its tails, where it underflows) `g_w` is taken as 0: the step there
is `Ψ'(v)·step = 0` either way, so the result is the same.
"""

import functools
import inspect
import math

import keras
import numpy as np
from keras import ops

# Checks of the numeric arguments Keras leaves unchecked (it accepts a NaN
# learning rate, beta_1=2 or epsilon=-1): name → (lowest, highest, whether
# the highest is excluded, what the message says). `None` stays allowed
# where the parent allows it; schedules, callables and variables are left
# to Keras.
_RANGES = {
    "learning_rate": (0.0, math.inf, False, "a finite number >= 0"),
    "weight_decay": (0.0, math.inf, False, "None or a finite number >= 0"),
    "clipnorm": (0.0, math.inf, False, "None or a finite number > 0"),
    "clipvalue": (0.0, math.inf, False, "None or a finite number > 0"),
    "global_clipnorm": (0.0, math.inf, False, "None or a finite number > 0"),
    "loss_scale_factor": (0.0, math.inf, False, "None or a finite number > 0"),
    "ema_momentum": (0.0, 1.0, False, "in [0, 1]"),
    "momentum": (0.0, 1.0, False, "in [0, 1]"),
    "beta_1": (0.0, 1.0, True, "in [0, 1)"),
    "beta_2": (0.0, 1.0, True, "in [0, 1)"),
    "rho": (0.0, 1.0, True, "in [0, 1)"),
    "epsilon": (0.0, math.inf, False, "a finite number >= 0"),
}
_POSITIVE = ("clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor")


def _is_number(value):
    return not isinstance(value, bool) and isinstance(
        value, (int, float, np.integer, np.floating)
    )


def _check_arguments(optimizer_class, args, kwargs):
    """Raises for a non-finite or out-of-range numeric argument of
    `optimizer_class` (see `_RANGES`), naming it and its value."""
    try:
        bound = inspect.signature(optimizer_class.__init__).bind_partial(
            None, *args, **kwargs
        )
    except TypeError:
        return  # the parent's own error is clearer
    owner = optimizer_class.__name__
    for name, value in bound.arguments.items():
        if name not in _RANGES or not _is_number(value):
            continue
        low, high, open_high, wanted = _RANGES[name]
        number = float(value)
        ok = math.isfinite(number) and low <= number <= high
        if open_high and number == high:
            ok = False
        if name in _POSITIVE and number == 0:
            ok = False
        if not ok:
            raise ValueError(
                f"Modified{owner}: `{name}` must be {wanted}. "
                f"Received: {name}={value}"
            )


def _reparameterized_layers(variables):
    """Maps id(variable) → layer for the WC/PP raw kernels in `variables`."""
    found = {}
    for variable in variables:
        layer = getattr(variable, "_keras_wc_compander_layer", None)
        if layer is not None:
            found[id(variable)] = layer
    return found


class ModifiedOptimizerMixin:
    """Turns a Keras optimizer into its modified form for WC/PP kernels.

    Use `modified(optimizer_class)` rather than this mixin directly.
    The optimizer's own update rule is run on `g_w`; every increment it
    makes to a reparameterized kernel (`assign_add` / `assign_sub`) is
    multiplied by `Ψ'(v)` evaluated before the step.
    """

    def build(self, variables):
        super().build(variables)
        layers = _reparameterized_layers(variables)
        # Keyed like the optimizer's own slots, so that the per-replica
        # variables seen in `update_step` are found too.
        object.__setattr__(
            self,
            "_compander_layers",
            {
                self._var_key(v): layers[id(v)]
                for v in variables
                if id(v) in layers
            },
        )
        object.__setattr__(self, "_step_scale", None)

    def apply(self, grads, trainable_variables=None):
        # Reparameterized kernels are updated first: Ψ'(v) must be read with
        # the a, b of this step, before a learnable (possibly shared) a, b is
        # itself updated further down the list.
        if trainable_variables is not None:
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
            pairs = list(zip(grads, trainable_variables, strict=True))
            pairs.sort(
                key=lambda p: self._var_key(p[1])
                not in self._compander_layers
            )
            grads = [g for g, _ in pairs]
            trainable_variables = [v for _, v in pairs]
        return super().apply(grads, trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        layer = self._compander_layers.get(self._var_key(variable))
        if layer is None:
            return super().update_step(gradient, variable, learning_rate)
        gradient = ops.convert_to_tensor(gradient)
        scale = ops.cast(layer.derivative(variable), gradient.dtype)
        safe = ops.where(scale > 0, scale, ops.ones_like(scale))
        gradient_w = ops.where(scale > 0, gradient / safe, 0.0)
        object.__setattr__(self, "_step_scale", (variable, scale))
        try:
            return super().update_step(gradient_w, variable, learning_rate)
        finally:
            object.__setattr__(self, "_step_scale", None)

    def _scaled(self, variable, value):
        if self._step_scale is not None and variable is self._step_scale[0]:
            return ops.multiply(value, self._step_scale[1])
        return value

    def assign_add(self, variable, value):
        super().assign_add(variable, self._scaled(variable, value))

    def assign_sub(self, variable, value):
        super().assign_sub(variable, self._scaled(variable, value))

    def assign(self, variable, value):
        if self._step_scale is not None and variable is self._step_scale[0]:
            value = ops.add(
                variable, self._scaled(variable, ops.subtract(value, variable))
            )
        super().assign(variable, value)


def modified(optimizer_class):
    """Returns the modified form of a Keras optimizer class (§III-A.3).

    Args:
        optimizer_class: a `keras.optimizers.Optimizer` subclass, e.g.
            `keras.optimizers.RMSprop`.

    Returns:
        A subclass with the same arguments, registered for saving as
        `keras_wc>Modified<Name>`. Its constructor also refuses the numeric
        values Keras accepts but cannot use (a NaN, infinite or negative
        `learning_rate`, `beta_1`/`beta_2`/`rho` outside [0, 1), `momentum`
        outside [0, 1], a NaN `epsilon`, `weight_decay` or clipping norm,
        ...) with a `ValueError` naming the argument and the value.

    Example:

    >>> ModifiedRMSprop = keras_wc.optimizers.modified(keras.optimizers.RMSprop)
    >>> opt = ModifiedRMSprop(learning_rate=1e-3)
    """
    if not (
        isinstance(optimizer_class, type)
        and issubclass(optimizer_class, keras.optimizers.Optimizer)
    ):
        raise TypeError(
            "`optimizer_class` must be a keras.optimizers.Optimizer subclass. "
            f"Received: {optimizer_class!r}"
        )
    if issubclass(optimizer_class, ModifiedOptimizerMixin):
        return optimizer_class
    name = f"Modified{optimizer_class.__name__}"

    @functools.wraps(optimizer_class.__init__)
    def __init__(self, *args, **kwargs):
        _check_arguments(optimizer_class, args, kwargs)
        optimizer_class.__init__(self, *args, **kwargs)

    cls = type(
        name,
        (ModifiedOptimizerMixin, optimizer_class),
        {
            "__init__": __init__,
            "__doc__": (
                f"`keras.optimizers.{optimizer_class.__name__}` in the "
                "modified form of the WC paper (§III-A.3): its state is "
                "built from ∂L/∂Ψ(v) and its step on each WC/PP kernel is "
                "multiplied by Ψ'(v). Same arguments as the parent."
            ),
            "__module__": __name__,
        },
    )
    return keras.saving.register_keras_serializable(
        package="keras_wc", name=name
    )(cls)


ModifiedAdam = modified(keras.optimizers.Adam)
ModifiedAdam.__doc__ = """Adam in the modified form of the WC paper (§III-A.3).

For every WC/PP kernel `v` with `w = Ψ(v)`, Adam's moments are built from
`g_w = ∂L/∂Ψ(v)` and the Adam step is multiplied by `Ψ'(v)`:

    m ← β₁m + (1−β₁)g_w,   s ← β₂s + (1−β₂)g_w²
    v ← v − Ψ'(v) ⊙ η·m̂/(√ŝ + ε)

Biases, normalization layers, learnable `a, b` and WN variables take the
plain Adam step. Arguments are those of `keras.optimizers.Adam`.

Example:

>>> model.compile(optimizer=keras_wc.optimizers.ModifiedAdam(1e-3), loss=...)
"""

__all__ = ["ModifiedAdam", "ModifiedOptimizerMixin", "modified"]
