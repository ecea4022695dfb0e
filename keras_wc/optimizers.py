"""The modified adaptive optimizer of the WC paper (§III-A.3), and what
every optimizer option means on reparameterized kernels.

Adaptive optimizers normalize the gradient, which would cancel the factor
`Ψ'(v)` that weight compander puts into `∂L/∂v = ∂L/∂Ψ(v)·Ψ'(v)` (Eq. 2).
The modified optimizer (from powerpropagation) therefore

1. builds its state (Adam's moments) from `g_w = ∂L/∂Ψ(v)`, the gradient
   with respect to the effective weight, and
2. multiplies the resulting step by `Ψ'(v)`:  `v ← v − Ψ'(v) ⊙ step(g_w)`.

Every other variable (biases, normalization layers, learnable `a, b`, WN
variables) takes the optimizer's plain step.

The options of the Keras base optimizer follow the same rule on a WC/PP
kernel `v` (fixed or learnable `a, b`): they act on the effective weight,
and their increments reach `v` through `Ψ'(v)`:

* `clipnorm`, `global_clipnorm`, `clipvalue` clip `g_w`, not `∂L/∂v`
  (`global_clipnorm`: the norm over the `g_w` of the kernels and the plain
  gradients of the other variables).
* `gradient_accumulation_steps=k` averages `g_w` over `k` batches (`v` does
  not change in between, so this is the average `∂L/∂v` over `Ψ'(v)`).
* decoupled `weight_decay` (`AdamW`, `SGD(weight_decay=...)`, `Lion`):
  with fixed `a, b`, `v ← v − η·λ·Ψ'(v)·Ψ(v)`, i.e. the gradient of the WC
  paper's penalty on `Ψ(v)` (Eq. 5, PyTorch's convention `(λ/2)‖Ψ(v)‖²`)
  taken out of the adaptive statistics, as AdamW does with L2; with
  learnable `a, b`, `v ← v − η·λ·v` (§III-B: the decay acts on `v`).
  Learnable `a, b` are never decayed. `Ψ'(v)` and `Ψ(v)` are those of the
  start of the step, for the decay and for the step alike.
* `use_ema`: with fixed `a, b` the average is that of the effective weight,
  `w̄ ← μ·w̄ + (1 − μ)·Ψ(v)`, kept as `Ψ⁻¹(w̄)` in the optimizer's
  `average` slot, so `finalize_variable_values` (and
  `ema_overwrite_frequency`) write `v ← Ψ⁻¹(w̄)`: the model then holds the
  average effective weights. Everything else (learnable WC kernels, their
  `a, b`, biases, WN variables) is averaged as it is, as in Keras.
* `LossScaleOptimizer` (mixed precision) wraps a modified optimizer as any
  other: it unscales the gradients, skips steps with non-finite ones, and
  the modified optimizer sees the true `∂L/∂v`.

`g_w` is recovered from the gradient Keras computes, `g_v = g_w ⊙ Ψ'(v)`,
as `g_v / Ψ'(v)`, with Ψ'(v) written as the layer's backward pass writes it
(so that XLA evaluates it once for both, and once for the step's scale).
Where `Ψ'(v)` can be exactly 0 (powerprop at `v = 0`, or erf far in its
tails, where it underflows; not arctan or arsinh, whose
`Compander.positive_derivative` is set) `g_w` is taken as 0 there: the
step is `Ψ'(v)·step = 0` either way, so the result is the same. On
PyTorch, the `g_w` of an `arctan` or integer-α powerprop kernel and, for
`ModifiedAdam` and `ModifiedAdamW`, its whole step are fused kernels
(`keras_wc.native`); on TensorFlow's graph mode each kernel's step is an
XLA-compiled function nested in the graph, which fuses its ops (both
behind the entry points of `keras_wc.lean`).

`no_decay_variables(model)` lists what a decoupled weight decay should
leave alone for the papers' semantics with any optimizer, plain or
modified (learnable `a, b`; WN directions and log-gains).
"""

import functools
import inspect
import math

import keras
import numpy as np
from keras import ops

from keras_wc import companders, internals, lean, tree

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

# Keras optimizers whose update is not "state from the gradient, then an
# elementwise increment of the variable", so that multiplying the increment
# by Ψ'(v) is not the modified optimizer: why, and what to do instead.
_REFUSED = {
    "LossScaleOptimizer": (
        "it wraps another optimizer; wrap the modified one instead: "
        "keras.optimizers.LossScaleOptimizer(keras_wc.optimizers."
        "ModifiedAdam(...)) (compile() does it under mixed_float16)"
    ),
    "MultiOptimizer": (
        "it dispatches to other optimizers; give it modified ones"
    ),
    "Ftrl": (
        "its step writes the variable as a function of its accumulators, "
        "not as an increment"
    ),
    "Lamb": (
        "its layer-wise trust ratio compares the norm of the raw variable "
        "with that of a step built from ∂L/∂Ψ(v)"
    ),
    "Adafactor": (
        "its relative step size and update clipping use the RMS of the raw "
        "variable"
    ),
    "Muon": (
        "its orthogonalized update of 2-D kernels is not elementwise, and "
        "it applies its own weight decay"
    ),
    "ScheduleFreeAdamW": (
        "its variable is an interpolation of two sequences, not an "
        "increment"
    ),
}


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


# -- what the layers provide ------------------------------------------------
#
# A WC/PP raw kernel carries `_keras_wc_compander_layer`: the layer, with
# `compander` (an object with `forward(v, a, b)` and `inverse(w, a, b)`),
# the current `a`, `b` and `is_learnable`. Learnable a, b are
# `layer.shared.weights` (coarse) or `layer._a, layer._b` (fine). A WN layer
# has `raw_kernels` (name → v) and `raw_gains` (name → g, or s = log g).


def _psi(layer, v):
    """Ψ(v) in float32 with the layer's current a, b."""
    return layer.compander.forward(ops.cast(v, "float32"), layer.a, layer.b)


def _psi_inverse(layer, w):
    """Ψ⁻¹(w) in float32 with the layer's current a, b."""
    return layer.compander.inverse(ops.cast(w, "float32"), layer.a, layer.b)


def _psi_derivative(layer, v):
    """Ψ'(v) in float32 with the layer's current a, b (Eq. 3)."""
    return companders.derivative(
        layer.compander, ops.cast(v, "float32"), layer.a, layer.b
    )


def _parent_update_step(optimizer_class):
    """The `update_step` the modified class defers to."""
    return super(ModifiedOptimizerMixin, optimizer_class).update_step


def _reparameterized_layers(variables):
    """Maps id(variable) → layer for the WC/PP raw kernels in `variables`."""
    found = {}
    for variable in variables:
        layer = getattr(variable, "_keras_wc_compander_layer", None)
        if layer is not None:
            found[id(variable)] = layer
    return found


def _is_learnable(layer):
    return bool(getattr(layer, "is_learnable", False))


def _scale_variables(layer):
    """The learnable `a, b` variables a WC layer reads (none when fixed)."""
    shared = getattr(layer, "shared", None)
    if shared is not None:
        return list(shared.weights)
    if getattr(layer, "learnable", "none") == "fine":
        return [v for v in (getattr(layer, "_a", None),
                            getattr(layer, "_b", None)) if v is not None]
    return []


def no_decay_variables(model):
    """The variables of `model` a decoupled weight decay should not touch.

    Pass them to the optimizer before it is built, with plain and modified
    optimizers alike:

        optimizer.exclude_from_weight_decay(
            var_list=keras_wc.optimizers.no_decay_variables(model))

    They are:

    * the learnable `a, b` of WC layers (fine or coarse): the WC paper never
      decays them (§III-B), while a plain Keras optimizer would pull them
      towards 0 (a modified optimizer already leaves them alone);
    * the directions `v` of WN layers: `w = g·v/‖v‖` does not depend on
      `‖v‖`, so decaying `v` does not shrink `w`, it only enlarges later
      steps on the direction; decaying the gain `g` alone is exactly
      `w ← (1 − η·λ)·w`;
    * the log-gains `s` of WN layers with `log_scale=True`: decaying `s`
      pulls `g = exp(s)` towards 1, not `w` towards 0 (use a
      `kernel_regularizer` to decay such a `w`).

    The kernels `v` of WC/PP layers are not listed: a plain optimizer
    decays `v`, a modified one `Ψ(v)` (module docstring).

    Args:
        model: a Keras model (or layer).

    Returns:
        A list of variables, each once.

    Example:

    >>> optimizer = keras_wc.optimizers.ModifiedAdamW(1e-3, weight_decay=1e-2)
    >>> optimizer.exclude_from_weight_decay(
    ...     var_list=keras_wc.optimizers.no_decay_variables(model))
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`no_decay_variables` expects a Keras model or layer. "
            f"Received: {model!r}"
        )
    found = {}
    layers = [model] + [node.layer for node in tree.walk(model)]
    for layer in layers:
        for variable in _scale_variables(layer):
            found.setdefault(id(variable), variable)
        raw_gains = getattr(layer, "raw_gains", None)
        raw_kernels = getattr(layer, "raw_kernels", None)
        if isinstance(raw_gains, dict) and isinstance(raw_kernels, dict):
            for variable in raw_kernels.values():
                found.setdefault(id(variable), variable)
            if getattr(layer, "log_scale", False):
                for variable in raw_gains.values():
                    found.setdefault(id(variable), variable)
    return list(found.values())


class ModifiedOptimizerMixin:
    """Turns a Keras optimizer into its modified form for WC/PP kernels.

    Use `modified(optimizer_class)` rather than this mixin directly.
    The optimizer's own update rule is run on `g_w`; every increment it
    makes to a reparameterized kernel (`assign_add` / `assign_sub`) is
    multiplied by `Ψ'(v)` evaluated before the step. Clipping, gradient
    accumulation, decoupled weight decay and the EMA follow the module
    docstring.
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
                internals.optimizer_key(self, v): layers[id(v)]
                for v in variables
                if id(v) in layers
            },
        )
        object.__setattr__(
            self,
            "_scale_keys",
            {
                internals.optimizer_key(self, s)
                for layer in layers.values()
                for s in _scale_variables(layer)
            },
        )
        object.__setattr__(self, "_step_scale", None)

    def _layer_of(self, variable):
        layers = getattr(self, "_compander_layers", None) or {}
        return layers.get(internals.optimizer_key(self, variable))

    def apply(self, grads, trainable_variables=None):
        # Reparameterized kernels are updated first: Ψ'(v) must be read with
        # the a, b of this step, before a learnable (possibly shared) a, b is
        # itself updated further down the list.
        if trainable_variables is None and self.built:
            # JAX's `stateless_apply` passes the gradients only.
            trainable_variables = internals.optimizer_trainable_variables(self)
        if trainable_variables is not None:
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
            pairs = list(zip(grads, trainable_variables, strict=True))
            pairs.sort(key=lambda p: self._layer_of(p[1]) is None)
            grads = [g for g, _ in pairs]
            trainable_variables = [v for _, v in pairs]
        return super().apply(grads, trainable_variables)

    def _effective_gradient(self, gradient, variable):
        """`g_w = g_v / Ψ'(v)` for a WC/PP kernel (0 where Ψ'(v) = 0), the
        gradient itself for any other variable."""
        layer = self._layer_of(variable)
        if layer is None or gradient is None:
            return gradient
        gradient = ops.convert_to_tensor(gradient)
        return lean.effective_gradient(
            layer.compander, layer.a, layer.b, gradient, variable
        )

    def _backend_apply_gradients(self, grads, trainable_variables):
        # Before Keras accumulates and clips them: clipping and gradient
        # accumulation act on g_w.
        grads = [
            self._effective_gradient(g, v)
            for g, v in zip(grads, trainable_variables, strict=True)
        ]
        return super()._backend_apply_gradients(grads, trainable_variables)

    def _use_weight_decay(self, variable):
        # Kernels are decayed in `update_step`; learnable a, b never.
        key = internals.optimizer_key(self, variable)
        if key in getattr(self, "_scale_keys", ()):
            return False
        if self._layer_of(variable) is not None:
            return False
        return super()._use_weight_decay(variable)

    def _apply_weight_decay(self, variables):
        # Only the variables Keras decays itself (PyTorch's backend cannot
        # decay an empty list).
        if self.weight_decay is None:
            return
        variables = [v for v in variables if self._use_weight_decay(v)]
        if variables:
            super()._apply_weight_decay(variables)

    def _kernel_decay(self, variable, layer, learning_rate, scale):
        """The decoupled decay of a WC/PP kernel this step (or None)."""
        if self.weight_decay is None or not super()._use_weight_decay(
            variable
        ):
            return None
        rate = ops.multiply(
            ops.cast(learning_rate, variable.dtype),
            ops.cast(self.weight_decay, variable.dtype),
        )
        if _is_learnable(layer):
            return ops.multiply(ops.convert_to_tensor(variable), rate)
        w = ops.cast(_psi(layer, variable), variable.dtype)
        return ops.multiply(ops.multiply(w, scale), rate)

    def update_step(self, gradient, variable, learning_rate):
        # `gradient` is g_w for a kernel (`_backend_apply_gradients`).
        layer = self._layer_of(variable)
        if layer is None:
            return super().update_step(gradient, variable, learning_rate)
        if self._native_adam(gradient, variable, learning_rate, layer):
            return None

        def modified_step(gradient, learning_rate):
            scale = ops.cast(_psi_derivative(layer, variable), variable.dtype)
            decay = self._kernel_decay(variable, layer, learning_rate, scale)
            object.__setattr__(self, "_step_scale", (variable, scale))
            try:
                super(ModifiedOptimizerMixin, self).update_step(
                    gradient, variable, learning_rate
                )
            finally:
                object.__setattr__(self, "_step_scale", None)
            if decay is not None:
                self.assign_sub(variable, decay)

        # On TensorFlow's graph mode, the step's ops fused into one loop.
        lean.xla_in_tf_graph(
            self,
            internals.optimizer_key(self, variable),
            modified_step,
            gradient,
            learning_rate,
        )
        return None

    def _native_adam(self, gradient, variable, learning_rate, layer):
        """Keras's Adam (or AdamW's) step on g_w, scaled by Ψ'(v), as one
        fused kernel (`keras_wc.lean.adam_update`: PyTorch, `arctan` and
        integer-α powerprop) where the
        optimizer's step is exactly Keras's Adam without amsgrad and the
        decay (if any) is that of Ψ(v); returns whether it ran."""
        decays = self.weight_decay is not None and super()._use_weight_decay(
            variable
        )
        if not (
            isinstance(self, keras.optimizers.Adam)
            and _parent_update_step(type(self))
            is keras.optimizers.Adam.update_step
            and not self.amsgrad
            and not (decays and _is_learnable(layer))
        ):
            return False
        return lean.adam_update(
            layer.compander,
            layer.a,
            layer.b,
            gradient,
            variable.value,
            lambda: [s.value for s in internals.adam_slots(self, variable)],
            learning_rate=learning_rate,
            iterations=self.iterations,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay=self.weight_decay if decays else None,
        )

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

    def _update_model_variables_moving_average(self, trainable_variables):
        # Keras's update, but for fixed-(a, b) kernels in the space of
        # w = Ψ(v): the slot holds Ψ⁻¹(w̄), so that Keras's overwrite and
        # `finalize_variable_values` write v ← Ψ⁻¹(w̄).
        if not self.use_ema:
            return
        for var, average in zip(
            trainable_variables,
            internals.ema_slots(self),
            strict=True,
        ):
            if average is None:
                continue
            not_first_step = ops.not_equal(self.iterations, 0)
            momentum = ops.multiply(
                ops.cast(not_first_step, var.dtype), self.ema_momentum
            )
            layer = self._layer_of(var)
            if layer is None or _is_learnable(layer):
                value = ops.add(
                    ops.multiply(momentum, average),
                    ops.multiply(ops.subtract(1, momentum), var),
                )
            else:
                mean = ops.add(
                    ops.multiply(momentum, _psi(layer, average)),
                    ops.multiply(ops.subtract(1, momentum), _psi(layer, var)),
                )
                value = ops.cast(_psi_inverse(layer, mean), var.dtype)
            average.assign(value)


def _describe(optimizer_class):
    return (
        f"`keras.optimizers.{optimizer_class.__name__}` in the modified form "
        "of the WC paper (§III-A.3): its state is built from g_w = ∂L/∂Ψ(v) "
        "and its step on each WC/PP kernel v is multiplied by Ψ'(v). "
        "Clipping and gradient accumulation act on g_w; decoupled weight "
        "decay on a kernel with fixed a, b is v ← v − η·λ·Ψ'(v)·Ψ(v) (Eq. 5), "
        "with learnable a, b v ← v − η·λ·v, and never touches a, b; the EMA "
        "of a fixed-(a, b) kernel is that of Ψ(v). Same arguments as the "
        "parent (see `keras_wc.optimizers`)."
    )


@functools.cache
def _modified_class(optimizer_class):
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
            "__doc__": _describe(optimizer_class),
            "__module__": __name__,
        },
    )
    return keras.saving.register_keras_serializable(
        package="keras_wc", name=name
    )(cls)


def modified(optimizer_class):
    """Returns the modified form of a Keras optimizer class (§III-A.3).

    The same class is returned for the same `optimizer_class`; the modified
    forms of Keras's SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW, Adamax,
    Nadam and Lion exist from import on (`ModifiedAdamW`, ...), so that a
    saved model's optimizer loads in a new process. What each base
    optimizer option (weight decay, clipping, EMA, gradient accumulation,
    loss scaling) does on WC/PP kernels: the module docstring.

    Args:
        optimizer_class: a `keras.optimizers.Optimizer` subclass whose step
            is computed from the gradient and added to the variable
            elementwise, e.g. `keras.optimizers.RMSprop` (or a subclass of
            one). `LossScaleOptimizer`, `MultiOptimizer`, `Ftrl`, `Lamb`,
            `Adafactor`, `Muon` and `ScheduleFreeAdamW` raise `ValueError`
            saying why.

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
    for base in optimizer_class.__mro__:
        if (
            base.__name__ in _REFUSED
            and getattr(keras.optimizers, base.__name__, None) is base
        ):
            raise ValueError(
                f"keras_wc.optimizers.modified: no modified form of "
                f"{optimizer_class.__name__}: {_REFUSED[base.__name__]}. "
                "Supported: SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW, "
                "Adamax, Nadam, Lion (and their subclasses)."
            )
    return _modified_class(optimizer_class)


ModifiedSGD = modified(keras.optimizers.SGD)
ModifiedRMSprop = modified(keras.optimizers.RMSprop)
ModifiedAdagrad = modified(keras.optimizers.Adagrad)
ModifiedAdadelta = modified(keras.optimizers.Adadelta)
ModifiedAdam = modified(keras.optimizers.Adam)
ModifiedAdamW = modified(keras.optimizers.AdamW)
ModifiedAdamax = modified(keras.optimizers.Adamax)
ModifiedNadam = modified(keras.optimizers.Nadam)
ModifiedLion = modified(keras.optimizers.Lion)

ModifiedAdam.__doc__ = """Adam in the modified form of the WC paper (§III-A.3).

For every WC/PP kernel `v` with `w = Ψ(v)`, Adam's moments are built from
`g_w = ∂L/∂Ψ(v)` and the Adam step is multiplied by `Ψ'(v)`:

    m ← β₁m + (1−β₁)g_w,   s ← β₂s + (1−β₂)g_w²
    v ← v − Ψ'(v) ⊙ η·m̂/(√ŝ + ε)

Biases, normalization layers, learnable `a, b` and WN variables take the
plain Adam step. Arguments are those of `keras.optimizers.Adam`; what
`weight_decay`, clipping, `use_ema` and gradient accumulation do on a
kernel is in the `keras_wc.optimizers` docstring.

Example:

>>> model.compile(optimizer=keras_wc.optimizers.ModifiedAdam(1e-3), loss=...)
"""

ModifiedAdamW.__doc__ = """AdamW in the modified form of the WC paper.

Adam's moments of each WC/PP kernel `v` are built from `g_w = ∂L/∂Ψ(v)`
and its step is multiplied by `Ψ'(v)`; the decoupled weight decay of a
kernel with fixed `a, b` is that of the paper's penalty on `Ψ(v)` (Eq. 5):

    v ← v − Ψ'(v) ⊙ (η·m̂/(√ŝ + ε) + η·λ·Ψ(v))

With learnable `a, b` it is `η·λ·v` (unscaled, §III-B), and `a, b` are
never decayed. Arguments are those of `keras.optimizers.AdamW`.

Example:

>>> opt = keras_wc.optimizers.ModifiedAdamW(1e-3, weight_decay=1e-2)
"""

__all__ = [
    "ModifiedAdadelta",
    "ModifiedAdagrad",
    "ModifiedAdam",
    "ModifiedAdamW",
    "ModifiedAdamax",
    "ModifiedLion",
    "ModifiedNadam",
    "ModifiedOptimizerMixin",
    "ModifiedRMSprop",
    "ModifiedSGD",
    "modified",
    "no_decay_variables",
]
