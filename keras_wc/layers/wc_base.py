"""Weight compander (WC) and powerpropagation (PP): `w = Ψ(v) = a·f(v/b)`.

Reference: R. Cakaj, J. Mehnert, B. Yang, "Weight Compander: A Simple Weight
Reparameterization for Regularization", IJCNN 2023 (arXiv:2306.16993), §III.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_wc import backend, lean
from keras_wc import companders as companders_lib
from keras_wc.layers.reparameterized import (
    RAW_NAMES,
    ReparameterizedLayer,
    computes_kernels,
)
from keras_wc.layers.scaled_output import scaled_call, scaling_parts
from keras_wc.validation import learnable_mode, positive_number

# Learnable a and b are projected back to [MIN_SCALE, ∞) after every
# optimizer update, and the forward pass reads max(a, MIN_SCALE).
MIN_SCALE = 1e-3


@keras.saving.register_keras_serializable(package="keras_wc")
class MinValue(keras.constraints.Constraint):
    """Projects a variable onto `[min_value, ∞)` after each update."""

    def __init__(self, min_value=MIN_SCALE):
        self.min_value = float(min_value)

    def __call__(self, w):
        return ops.maximum(w, self.min_value)

    def get_config(self):
        return {"min_value": self.min_value}


@keras.saving.register_keras_serializable(package="keras_wc")
class SharedCompander(keras.layers.Layer):
    """One learnable `(a, b)` pair shared by many WC layers ("coarse" WC).

    Pass the same instance as `shared=` to every WC layer that should share
    it (`keras_wc.convert(model, learnable="coarse")` does this for a whole
    model). Its two variables appear once in `model.trainable_variables`,
    are saved once, and are shared again after `keras.saving.load_model`.

    `a` and `b` are stored as they are, so gradient descent on them is the
    paper's (§III-B); they are projected back to `[1e-3, ∞)` after every
    optimizer update and read through `max(·, 1e-3)`, so they stay strictly
    positive whatever the optimizer does. They carry no regularizer, and
    the modified optimizers (`keras_wc.optimizers.modified`) never decay
    them; a plain Keras optimizer's decoupled `weight_decay` does, unless
    they are excluded with
    `optimizer.exclude_from_weight_decay(var_list=
    keras_wc.optimizers.no_decay_variables(model))`.

    Args:
        a: initial `a` (> 0).
        b: initial `b` (> 0).
        compander: the compander shared by the layers (see `WCDense`).

    Example:

    >>> shared = keras_wc.SharedCompander(a=0.5, b=1.0)
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras_wc.WCDense(16, activation="relu", shared=shared),
    ...     keras_wc.WCDense(10, shared=shared),
    ... ])
    >>> len(model.trainable_variables)  # 2 × (v, bias) + (a, b)
    6
    """

    def __init__(self, a=0.5, b=1.0, compander="arctan", **kwargs):
        super().__init__(**kwargs)
        owner = f"SharedCompander '{self.name}'"
        self.initial_a = positive_number("a", a, owner)
        self.initial_b = positive_number("b", b, owner)
        self.compander = companders_lib.get(compander)
        self._a = _add_scale(self, "a", self.initial_a)
        self._b = _add_scale(self, "b", self.initial_b)
        self.built = True

    @property
    def a(self):
        return ops.maximum(self._a, MIN_SCALE)

    @property
    def b(self):
        return ops.maximum(self._b, MIN_SCALE)

    def call(self, inputs):
        raise NotImplementedError(
            "SharedCompander holds parameters for WC layers; it is not "
            "called on inputs."
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "a": self.initial_a,
                "b": self.initial_b,
                "compander": companders_lib.serialize(self.compander),
            }
        )
        return config


def _add_scale(layer, name, value):
    return layer.add_weight(
        name=name,
        shape=(),
        initializer=keras.initializers.Constant(value),
        dtype="float32",
        autocast=False,
        constraint=MinValue(MIN_SCALE),
    )


class _InverseInitializer(keras.initializers.Initializer):
    """Draws `w₀` from the kernel initializer and returns `v₀ = Ψ⁻¹(w₀)`."""

    def __init__(self, base, compander, a, b, layer_name):
        self.base = base
        self.compander = compander
        self.a = a
        self.b = b
        self.layer_name = layer_name

    def __call__(self, shape, dtype=None):
        # Eagerly, also when Keras builds the layer inside a traced function:
        # the range check needs the drawn values. (On JAX, Keras also runs
        # initializers on placeholders while tracing a build; the check is
        # then made when the variable gets its value.)
        with backend.eager_scope():
            w = ops.cast(self.base(shape, dtype="float32"), "float32")
            if backend.is_concrete(w):
                check_in_range(
                    ops.convert_to_numpy(w),
                    self.compander,
                    self.a,
                    self.layer_name,
                )
            return ops.cast(self.compander.inverse(w, self.a, self.b), dtype)


def check_in_range(w, compander, a, layer_name):
    """Raises `ValueError` if `Ψ⁻¹(w)` is undefined for some entry of `w`."""
    bound = _max_magnitude(compander, a)
    largest = float(np.max(np.abs(w))) if np.size(w) else 0.0
    if largest >= bound or not np.isfinite(largest):
        raise ValueError(
            f"Layer '{layer_name}': the kernel has max |w| = {largest:.6g}, "
            f"outside the range of {compander!r} with a={a:g}, which needs "
            f"|w| < {bound:.6g}. Use a >= {largest / bound * a * 1.01:.4g}, "
            "or a kernel_initializer of smaller scale."
        )


def _max_magnitude(compander, a):
    if hasattr(compander, "max_magnitude"):
        return compander.max_magnitude(a)
    return math.inf


class CompanderMixin(ReparameterizedLayer):
    """Reparameterizes every kernel of the layer as `w = Ψ(v)`.

    See `WCDense` for the arguments. Fixed `a, b` are Python floats;
    `learnable=True` (or `"fine"`) makes them trainable scalars of this layer;
    `shared=SharedCompander(...)` shares them across layers ("coarse").
    """

    _OPTION_NAMES = ("a", "b", "compander", "learnable", "shared")
    _OPTION_ATTRIBUTES = (
        "initial_a",
        "initial_b",
        "compander",
        "learnable",
        "shared",
        "_a",
        "_b",
    )

    def __init__(
        self,
        *args,
        a=1.0,
        b=1.0,
        compander="arctan",
        learnable=False,
        shared=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._set_options(
            self._parse_options(
                self,
                a=a,
                b=b,
                compander=compander,
                learnable=learnable,
                shared=shared,
            )
        )

    @classmethod
    def _parse_options(
        cls,
        layer,
        a=1.0,
        b=1.0,
        compander="arctan",
        learnable=False,
        shared=None,
    ):
        owner = f"{cls.__name__} '{layer.name}'"
        if isinstance(shared, dict):
            shared = keras.saving.deserialize_keras_object(shared)
        mode = learnable_mode(learnable, owner)
        if shared is not None:
            if not isinstance(shared, SharedCompander):
                raise TypeError(
                    f"{owner}: `shared` must be a keras_wc.SharedCompander. "
                    f"Received: shared={shared!r}"
                )
            if (a, b, compander) != (1.0, 1.0, "arctan") or mode == "fine":
                raise ValueError(
                    f"{owner}: with `shared`, a, b and the compander come "
                    "from the SharedCompander; leave `a`, `b` and "
                    "`compander` at their defaults and `learnable` at False "
                    "or 'coarse'. Received: "
                    f"a={a!r}, b={b!r}, compander={compander!r}, "
                    f"learnable={learnable!r}"
                )
            mode = "coarse"
        elif mode == "coarse":
            raise ValueError(
                f"{owner}: learnable='coarse' shares one (a, b) between "
                "layers: pass the same `shared=keras_wc.SharedCompander(...)` "
                "to each of them (or use `keras_wc.convert(model, "
                "learnable='coarse')`). Received: learnable='coarse', "
                "shared=None"
            )
        return {
            "a": positive_number("a", a, owner),
            "b": positive_number("b", b, owner),
            "compander": (
                shared.compander if shared else companders_lib.get(compander)
            ),
            "learnable": mode,
            "shared": shared,
        }

    def _set_options(self, options):
        self.initial_a = options["a"]
        self.initial_b = options["b"]
        self.compander = options["compander"]
        self.learnable = options["learnable"]
        self.shared = options["shared"]

    def reparameterization_config(self):
        return {
            "a": self.initial_a,
            "b": self.initial_b,
            "compander": companders_lib.serialize(self.compander),
            "learnable": self.learnable,
            "shared": (
                _serialize_shared(self.shared)
                if self.shared is not None
                else None
            ),
        }

    @property
    def is_learnable(self):
        """Whether `a` and `b` are trained (fine or coarse)."""
        return self.learnable != "none"

    @property
    def a(self):
        """Current `a`: a float when fixed, a scalar tensor when learnable."""
        if self.shared is not None:
            return self.shared.a
        if self.learnable == "fine":
            return ops.maximum(self._a, MIN_SCALE)
        return self.initial_a

    @property
    def b(self):
        """Current `b`: a float when fixed, a scalar tensor when learnable."""
        if self.shared is not None:
            return self.shared.b
        if self.learnable == "fine":
            return ops.maximum(self._b, MIN_SCALE)
        return self.initial_b

    def _build_reparameterization(self):
        if self.learnable == "fine":
            self._a = _add_scale(self, "a", self.initial_a)
            self._b = _add_scale(self, "b", self.initial_b)

    def _extra_variables(self):
        return [self._a, self._b] if self.learnable == "fine" else []

    def _current_scales(self):
        """The current (a, b) as Python floats (eager)."""
        if self.learnable == "fine" and not hasattr(self, "_a"):
            return self.initial_a, self.initial_b  # still building
        return tuple(float(ops.convert_to_numpy(s)) for s in (self.a, self.b))

    def _create_kernel(self, name, shape, initializer, regularizer, constraint):
        a, b = self._current_scales()
        if not self.is_learnable:
            # Eq. 5: with fixed a, b the weight decay acts on w = Ψ(v).
            regularizer = self._effective_regularizer(name, regularizer)
        if constraint is not None:
            constraint = _ConstrainEffective(constraint, self)
        variable = self._add_raw_weight(
            name,
            name=RAW_NAMES[name],
            shape=shape,
            initializer=_InverseInitializer(
                initializer, self.compander, a, b, self.name
            ),
            regularizer=regularizer,
            constraint=constraint,
        )
        # Lets `keras_wc.optimizers.modified` find Ψ'(v) for this variable.
        variable._keras_wc_compander_layer = self
        return variable

    def _effective_kernel(self, name):
        return self.compand(self._raw_kernels[name])

    def _right_inverse(self, name, value):
        a, b = self._current_scales()
        return [_inverse(self.compander, a, b, value, self.name)]

    @classmethod
    def _right_inverse_for(cls, layer, options, name, value):
        shared = options["shared"]
        if shared is not None:
            a, b = (
                float(ops.convert_to_numpy(s)) for s in (shared.a, shared.b)
            )
        else:
            a, b = options["a"], options["b"]
        return [_inverse(options["compander"], a, b, value, layer.name)]

    # Not `forward`: on the PyTorch backend a Keras layer is a
    # `torch.nn.Module`, whose `forward` runs the layer.
    def compand(self, v):
        """Ψ(v) in float32 with the layer's current a, b (Eq. 1), by the
        lean path (`keras_wc.lean`)."""
        v = ops.cast(v, "float32")
        if self.is_learnable:
            return lean.learnable_compander_kernel(
                self.compander, v, self.a, self.b
            )
        return lean.compander_kernel(self.compander, v, self.a, self.b)

    def _kernel_and_penalty(self, name, regularizer):
        if self.is_learnable:
            return super()._kernel_and_penalty(name, regularizer)
        # Eq. 5: the penalty acts on w = Ψ(v).
        v = ops.cast(self._raw_kernels[name], "float32")
        return lean.compander_kernel(
            self.compander, v, self.a, self.b, regularizer=regularizer
        )

    def inverse(self, w):
        """Ψ⁻¹(w) in float32 with the layer's current a, b."""
        return self.compander.inverse(ops.cast(w, "float32"), self.a, self.b)

    def derivative(self, v):
        """Ψ'(v) in float32 with the layer's current a, b (Eq. 3)."""
        return companders_lib.derivative(
            self.compander, ops.cast(v, "float32"), self.a, self.b
        )


def _inverse(compander, a, b, value, layer_name):
    """Ψ⁻¹(value) as a float32 array, after the range check."""
    check_in_range(value, compander, a, layer_name)
    return np.asarray(
        ops.convert_to_numpy(
            compander.inverse(ops.convert_to_tensor(value, "float32"), a, b)
        ),
        "float32",
    )


def _serialize_shared(shared):
    """Serializes a SharedCompander so that loading rebuilds one object.

    Keras rebuilds an object once per `shared_object_id` while loading, but
    only marks an object as shared when it serializes it a second time, after
    the first referring layer's config has been written. Every referring
    layer therefore writes the id itself (Keras uses `id(obj)` too).
    """
    config = keras.saving.serialize_keras_object(shared)
    config["shared_object_id"] = id(shared)
    return config


class LinearCompanderMixin(CompanderMixin):
    """`CompanderMixin` for `Dense`, `EinsumDense` and the (transposed)
    convolutions: with learnable `a, b` (of the `a·f(v/b)` companders), the
    layer computes φ(a·op(x, f(v/b)) + bias), `a` scaling the output
    instead of the kernel. Then ∂L/∂a = Σ ∂L/∂y·op(x, f(v/b)) comes from
    the output instead of a pass over the kernel's gradient and Ψ(v), and
    the step never writes a·f(v/b).
    """

    @computes_kernels
    def call(self, inputs, training=None):
        parts = self._output_scaling(inputs)
        if parts is None:
            self._compute_kernels()
            return super().call(inputs)
        direction = lean.learnable_compander_direction(
            self.compander,
            ops.cast(self._raw_kernels["kernel"], "float32"),
            self.b,
        )
        return scaled_call(self, inputs, direction, lambda _: self.a, parts)

    def _output_scaling(self, inputs):
        """(linear op, bias op) when the call on `inputs` scales the output
        by `a`, else None (fixed a, b; not `a·f(v/b)`; a `call` of a
        subclass; an output larger than the kernel; the reference path)."""
        if not (
            lean.enabled()
            and self.is_learnable
            and companders_lib.is_scale_family(self.compander)
        ):
            return None
        return scaling_parts(self, LinearCompanderMixin, inputs)


class _ConstrainEffective:
    """A kernel constraint applied to w = Ψ(v): v ← Ψ⁻¹(c(Ψ(v)))."""

    def __init__(self, constraint, layer):
        self.constraint = constraint
        self.layer = layer

    def __call__(self, v):
        return self.layer.inverse(self.constraint(self.layer.compand(v)))
