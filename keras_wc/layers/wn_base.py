"""Weight normalization (WN): `w = g·v/‖v‖` per output unit.

Reference: T. Salimans, D. P. Kingma, "Weight Normalization: A Simple
Reparameterization to Accelerate Training of Deep Neural Networks",
NeurIPS 2016 (arXiv:1602.07868), Eq. 2 (parameterization), Eq. 3
(gradients), §3 (data-dependent initialization). Reference code:
openai/weightnorm, `tensorflow/nn.py`.

This module holds the mixin behind every `keras_wc.WN*` layer and the
"init pass" protocol used by `keras_wc.initialize`: inside `init_pass()`,
the first eager call of a WN layer whose `initialized` flag is not set
initializes the layer from its actual inputs, then returns its output with
the new parameters, so that every layer downstream is initialized on the
already-initialized outputs of the layers before it.
"""

import contextlib
import contextvars

import keras
import numpy as np
from keras import ops

from keras_wc import backend, lean
from keras_wc.layers.layer_types import layer_type_of
from keras_wc.layers.reparameterized import (
    RAW_NAMES,
    ReparameterizedLayer,
    computes_kernels,
)
from keras_wc.layers.scaled_output import scaled_call, scaling_parts
from keras_wc.validation import positive_number

# ‖v‖ = sqrt(max(Σv², NORM_EPSILON)), as in `tf.nn.l2_normalize`: a zero
# `v` gives w = 0 and finite gradients instead of 0/0.
NORM_EPSILON = 1e-12
# ε in g = init_scale/√(var(t) + ε): openai/weightnorm `tensorflow/nn.py`
# uses 1e-10 for dense layers and 1e-8 for (transposed) convolutions. A
# channel whose variance is at most ε on the init batch is "dead" (see
# `WeightNormMixin`).
DENSE_EPSILON = 1e-10
CONV_EPSILON = 1e-8

_NORM_CONSTRAINTS = (
    keras.constraints.MaxNorm,
    keras.constraints.MinMaxNorm,
    keras.constraints.UnitNorm,
)

_INIT_PASS = contextvars.ContextVar("keras_wc_init_pass", default=None)


class _InitPass:
    """What one `init_pass()` did: initialized layers and previous values."""

    def __init__(self):
        self.layers = []
        self._previous = []

    def record(self, layer, variables):
        self.layers.append(layer)
        self._previous.extend((v, ops.convert_to_numpy(v)) for v in variables)

    def restore(self):
        for variable, value in reversed(self._previous):
            variable.assign(value)
        for layer in self.layers:
            layer._remember_initialized()
        self.layers = []
        self._previous = []


@contextlib.contextmanager
def init_pass():
    """Context in which uninitialized WN layers initialize on first call.

    Yields an object whose `layers` lists the layers initialized so far, in
    call order. If the body raises, every variable the pass assigned is
    restored, so a failed pass leaves the model as it was.
    """
    state = _InitPass()
    token = _INIT_PASS.set(state)
    try:
        yield state
    except BaseException:
        state.restore()
        raise
    finally:
        _INIT_PASS.reset(token)


def in_init_pass(inputs=None):
    """Whether the current (eager) call runs inside `init_pass()`."""
    return _INIT_PASS.get() is not None and backend.executing_eagerly(inputs)


def _is_true(training):
    return isinstance(training, (bool, np.bool_)) and bool(training)


def _normalize_axes(axis, rank):
    axes = [axis] if isinstance(axis, int) else list(axis)
    return {a % rank for a in axes}


class _NormOf(keras.initializers.Initializer):
    """Initializes `g` to ‖v‖ (or `s` to log‖v‖) of an existing `v`."""

    def __init__(self, v, norm_axes, log_scale):
        self.v = v
        self.norm_axes = norm_axes
        self.log_scale = log_scale

    def __call__(self, shape, dtype=None):
        norm = ops.reshape(_norm(self.v, self.norm_axes), shape)
        return ops.cast(ops.log(norm) if self.log_scale else norm, dtype)


def _norm(v, norm_axes):
    v = ops.cast(v, "float32")
    squares = ops.sum(ops.square(v), axis=norm_axes, keepdims=True)
    return ops.sqrt(ops.maximum(squares, NORM_EPSILON))


class _GainConstraint:
    """A norm constraint on `w` along the WN norm axes, applied to `g`.

    Along those axes ‖w‖ = |g|, so constraining `g` reshaped to the kernel
    rank (size 1 on the norm axes) is exactly constraining `w`.
    """

    def __init__(self, constraint, unit_axes, rank, log_scale):
        self.constraint = constraint
        self.unit_axes = unit_axes
        self.rank = rank
        self.log_scale = log_scale

    def __call__(self, raw):
        gain = ops.exp(raw) if self.log_scale else raw
        shape = [1] * self.rank
        for i, axis in enumerate(self.unit_axes):
            shape[axis] = raw.shape[i]
        gain = ops.reshape(self.constraint(ops.reshape(gain, shape)), raw.shape)
        if self.log_scale:
            return ops.log(ops.maximum(gain, NORM_EPSILON))
        return gain


def _gain_property(name):
    def getter(self):
        return self.gain(name)

    return property(
        getter, doc=f"The WN gain `g` of `{name}` (exp(s) if log_scale)."
    )


def unit_axes(layer, name, rank):
    """The axes of kernel `name` (of rank `rank`) indexing output units."""
    return layer_type_of(layer).unit_axes(layer, name, rank)


def norm_axes(layer, name, rank):
    """The axes of kernel `name` the norm ‖v‖ is taken over."""
    units = unit_axes(layer, name, rank)
    return tuple(a for a in range(rank) if a not in units)


def _kernel_rank(layer, name):
    """The rank of kernel `name`, known before `build`."""
    return layer_type_of(layer).kernel_rank(layer, name)


def _split_constraint(layer, name, constraint, log_scale):
    """(constraint on v, constraint on g) that make `w` obey `constraint`
    exactly; `ValueError` if no such pair exists."""
    if constraint is None:
        return None, None
    rank = _kernel_rank(layer, name)
    units = unit_axes(layer, name, rank)
    norms = set(range(rank)) - set(units)
    if type(constraint) is keras.constraints.NonNeg:
        # w ≥ 0 ⟺ v ≥ 0 when g ≥ 0 (always true for g = exp(s)).
        return constraint, None if log_scale else constraint
    if (
        type(constraint) in _NORM_CONSTRAINTS
        and _normalize_axes(constraint.axis, rank) == norms
    ):
        return None, _GainConstraint(constraint, units, rank, log_scale)
    raise ValueError(
        f"{type(layer).__name__} '{layer.name}': the constraint on "
        f"`{name}` cannot be honoured exactly on w = g·v/‖v‖. Supported: "
        "`NonNeg`, and `MaxNorm`, `MinMaxNorm` or `UnitNorm` with "
        f"axis={sorted(norms)} (the norm axes, where ‖w‖ = |g|). "
        f"Received: constraint={constraint!r}"
        + (
            f" with axis={constraint.axis}"
            if hasattr(constraint, "axis")
            else ""
        )
    )


class WeightNormCore(ReparameterizedLayer):
    """Reparameterizes every kernel of the layer as `w = g·v/‖v‖`.

    The part of weight normalization shared by every layer: one gain per
    output unit, the norm taken over every kernel axis but the output-unit
    axes (see `keras_wc.layers.layer_types`). `WeightNormMixin` adds the
    data-dependent init of the kernel layers; recurrent cells use this
    class as it is (`WeightNormCellMixin`).
    """

    _OPTION_NAMES = ("data_init", "init_scale", "log_scale")
    _OPTION_ATTRIBUTES = (
        "data_init",
        "init_scale",
        "log_scale",
        "_gains",
        "_norm_axes",
        "_direction_only",
        "initialized",
        "_initialized_mirror",
    )

    g = _gain_property("kernel")
    depthwise_g = _gain_property("depthwise_kernel")
    pointwise_g = _gain_property("pointwise_kernel")
    recurrent_g = _gain_property("recurrent_kernel")

    def __init__(
        self,
        *args,
        data_init=None,
        init_scale=1.0,
        log_scale=False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._set_options(
            self._parse_options(
                self,
                data_init=data_init,
                init_scale=init_scale,
                log_scale=log_scale,
            )
        )

    @classmethod
    def _parse_options(
        cls, layer, data_init=None, init_scale=1.0, log_scale=False
    ):
        owner = f"{cls.__name__} '{layer.name}'"
        supported = layer_type_of(cls).data_init is not None
        if data_init is None:
            data_init = supported
        for arg, value in (("data_init", data_init), ("log_scale", log_scale)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(
                    f"{owner}: `{arg}` must be True or False. "
                    f"Received: {arg}={value!r}"
                )
        if data_init and not supported:
            raise ValueError(
                f"{owner}: recurrent layers have no data-dependent init "
                "(their inputs at one step depend on the previous steps). "
                f"Received: data_init={data_init!r}"
            )
        options = {
            "data_init": bool(data_init),
            "init_scale": positive_number("init_scale", init_scale, owner),
            "log_scale": bool(log_scale),
        }
        # A constraint that cannot be honoured fails here, not in `build`.
        row = layer_type_of(cls)
        for name, attribute in zip(row.kernels, row.constraints, strict=True):
            _split_constraint(
                layer, name, getattr(layer, attribute), options["log_scale"]
            )
        return options

    def _set_options(self, options):
        self.data_init = options["data_init"]
        self.init_scale = options["init_scale"]
        self.log_scale = options["log_scale"]
        self._gains = {}
        self._norm_axes = {}
        self._direction_only = False

    def reparameterization_config(self):
        return {
            "data_init": self.data_init,
            "init_scale": self.init_scale,
            "log_scale": self.log_scale,
        }

    # -- the reparameterization -------------------------------------------

    def _create_kernel(self, name, shape, initializer, regularizer, constraint):
        rank = len(shape)
        units = unit_axes(self, name, rank)
        axes = norm_axes(self, name, rank)
        v_constraint, g_constraint = _split_constraint(
            self, name, constraint, self.log_scale
        )
        raw_name = RAW_NAMES[name]
        v = self._add_raw_weight(
            name,
            name=raw_name,
            shape=shape,
            initializer=initializer,
            # The penalty acts on w = g·v/‖v‖.
            regularizer=self._effective_regularizer(name, regularizer),
            constraint=v_constraint,
        )
        self._gains[name] = self._add_raw_weight(
            name,
            name=raw_name[:-1] + ("s" if self.log_scale else "g"),
            shape=tuple(shape[a] for a in units),
            kernel_axes=units,
            initializer=_NormOf(v, axes, self.log_scale),
            constraint=g_constraint,
        )
        self._norm_axes[name] = axes
        return v

    @property
    def raw_gains(self):
        """Dict from kernel name to its raw gain variable (`g`, or `s`)."""
        return dict(self._gains)

    def _missing_attribute(self, name):
        gains = self.__dict__.get("_gains")
        names = {
            "g": "kernel",
            "depthwise_g": "depthwise_kernel",
            "pointwise_g": "pointwise_kernel",
            "recurrent_g": "recurrent_kernel",
        }
        if gains is not None and name in names and names[name] not in gains:
            return self._missing_gain(names[name])
        return super()._missing_attribute(name)

    def _missing_gain(self, name):
        return (
            f"Layer '{self.name}' has no gain for {name!r} (built: "
            f"{self.built}). Its kernels: {list(self._gains)}"
        )

    def gain(self, name="kernel"):
        """The gain `g` of kernel `name` (`exp(s)` when `log_scale`)."""
        if name not in self._gains:
            raise AttributeError(self._missing_gain(name))
        raw = self._gains[name]
        return ops.exp(raw) if self.log_scale else raw

    def _gain_keepdims(self, name):
        rank = len(self._raw_kernels[name].shape)
        shape = [1] * rank
        units = [a for a in range(rank) if a not in self._norm_axes[name]]
        for i, axis in enumerate(units):
            shape[axis] = self._gains[name].shape[i]
        return ops.reshape(ops.cast(self.gain(name), "float32"), shape)

    def _effective_kernel(self, name):
        v = ops.cast(self._raw_kernels[name], "float32")
        axes = self._norm_axes[name]
        if self._direction_only and name == self._output_kernel():
            return v / _norm(v, axes)
        return lean.weight_norm_kernel(
            v, self._gain_keepdims(name), axes, NORM_EPSILON
        )

    def _output_kernel(self):
        if "pointwise_kernel" in self._raw_kernels:
            return "pointwise_kernel"
        return "kernel"

    def _kernel_and_penalty(self, name, regularizer):
        v = ops.cast(self._raw_kernels[name], "float32")
        return lean.weight_norm_kernel(
            v,
            self._gain_keepdims(name),
            self._norm_axes[name],
            NORM_EPSILON,
            regularizer=regularizer,
        )

    def _right_inverse(self, name, value):
        return self._right_inverse_for(
            self, self.reparameterization_config(), name, value
        )

    @classmethod
    def _right_inverse_for(cls, layer, options, name, value):
        norm = np.sqrt(
            np.maximum(
                np.sum(
                    np.square(value.astype("float64")),
                    axis=norm_axes(layer, name, value.ndim),
                ),
                NORM_EPSILON,
            )
        ).astype("float32")
        gain = np.log(norm) if options["log_scale"] else norm
        return [value, gain]


class WeightNormCellMixin(WeightNormCore):
    """Weight normalization of a recurrent cell's `kernel` and
    `recurrent_kernel`: `w = g·v/‖v‖` per column, i.e. per output unit of
    each gate, with a gain of its own for each of the two kernels."""


class WeightNormMixin(WeightNormCore):
    """Reparameterizes every kernel of the layer as `w = g·v/‖v‖`, with
    the data-dependent init of §3.

    See `keras_wc.WNDense` for the arguments and the semantics. Put it first
    in the bases: `class WNConv2D(WeightNormMixin, keras.layers.Conv2D)`.
    Data-dependent init (`keras_wc.initialize`) sets the gain of the kernel
    that scales the layer's output channels (`kernel`, or `pointwise_kernel`
    for a separable convolution) and the bias.
    """

    def _build_reparameterization(self):
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            dtype="bool",
            initializer="zeros",
            trainable=False,
        )
        self._initialized_mirror = False

    def _extra_variables(self):
        return [self.initialized]

    # -- output layout, for the data-dependent init ------------------------

    def _output_units(self, ndim):
        """(output positions of the units, in output order; the permutation
        taking statistics over them to the order of the gain's axes)."""
        return self.layer_type.output_units(self, ndim)

    def _bias_positions(self, ndim):
        return self.layer_type.bias_positions(self, ndim)

    # -- data-dependent initialization -------------------------------------

    def is_initialized(self):
        """Whether the persisted `initialized` flag is set.

        Reads the variable's stored value, also while a training step is
        traced; where it cannot be read (a JAX training step, during which
        Keras detaches the values), the value `_remember_initialized` kept
        last. Changes nothing.
        """
        value = backend.concrete_value(self.initialized)
        if value is None:
            return self._initialized_mirror
        return bool(value)

    def _remember_initialized(self):
        """Keeps the flag's current value for `is_initialized` to return
        where the variable cannot be read; run where the flag changes (the
        init and its undoing, loading, `set_weights`, copying) and where
        the call reads it. Returns the flag."""
        value = backend.concrete_value(self.initialized)
        if value is not None:
            self._initialized_mirror = bool(value)
        return self._initialized_mirror

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self._remember_initialized()

    def set_weights(self, weights):
        super().set_weights(weights)
        self._remember_initialized()

    @computes_kernels
    def call(self, inputs, training=None):
        # The flag is read (and kept) only where it decides the call: it
        # may have been assigned since it was last kept.
        if in_init_pass(inputs) and not self._remember_initialized():
            return self._data_dependent_init(inputs)
        if (
            _is_true(training)
            and self.data_init
            and not self._remember_initialized()
        ):
            raise RuntimeError(
                f"{type(self).__name__} '{self.name}' has data_init=True but "
                "was not initialized. Call `keras_wc.initialize(model, x)` "
                "on a batch of training data before training (or build the "
                "layer with data_init=False to train from its default, "
                "function-preserving init)."
                + (backend.JAX_FIT_NOTE if backend.name() == "jax" else "")
            )
        parts = self._output_scaling(inputs)
        if parts is not None:
            return self._call_scaling_output(inputs, parts)
        self._compute_kernels()
        return super().call(inputs)

    def _output_scaling(self, inputs):
        """(linear op, bias op) when the call on `inputs` scales the
        layer's output by g/‖v‖ instead of computing the kernel g·v/‖v‖,
        else None.

        Taken on the lean path by `Dense`, `EinsumDense` and the
        (transposed) convolutions whose `call` is Keras's own, when the
        output is smaller than the kernel and the kernel's penalty, if any,
        is L2: the step then never writes the normalized kernel and its
        backward pass makes one pass over `v` for the norm instead of two
        over the kernel's gradient. Not under a float16 compute dtype,
        whose range `x·v` could leave where ‖v‖ is large.
        """
        if not lean.enabled() or self.compute_dtype == "float16":
            return None
        regularizer = self._call_regularizers.get("kernel")
        if regularizer is not None and not lean.is_plain_l2(regularizer):
            return None
        return scaling_parts(self, WeightNormMixin, inputs)

    def _call_scaling_output(self, inputs, parts):
        """The layer's output as φ(t·g/‖v‖ + bias), t = the linear op of
        the inputs and `v` (Eq. 2 applied after the op, per output unit)."""
        v = self._raw_kernels["kernel"]
        inv, ratio = lean.weight_norm_scale(
            ops.cast(v, "float32"), self._norm_axes["kernel"], NORM_EPSILON
        )
        gain = self._gain_keepdims("kernel")
        regularizer = self._call_regularizers.get("kernel")
        if regularizer is not None:
            # ‖w_j‖² = g_j²·ratio_j: the L2 penalty without the kernel.
            self._penalize(
                "kernel", regularizer.l2 * ops.sum(ops.square(gain) * ratio)
            )
        scale = gain * inv
        return scaled_call(
            self,
            inputs,
            v,
            lambda ndim: self._per_output_unit(scale, ndim),
            parts,
        )

    def _per_output_unit(self, values, ndim):
        """`values` (kernel rank, size 1 on the norm axes) laid out to
        broadcast against an output of rank `ndim`."""
        units, perm = self._output_units(ndim)
        values = ops.reshape(values, self._gains["kernel"].shape)
        if len(perm) > 1:
            values = ops.transpose(values, [int(i) for i in np.argsort(perm)])
        shape = [1] * ndim
        for position, size in zip(units, values.shape, strict=True):
            shape[position] = size
        return ops.reshape(values, shape)

    def _data_dependent_init(self, inputs):
        """Sets g and the bias from the statistics of `inputs` (§3) and
        returns the layer's output with them.

        t = x·v/‖v‖ (pre-activation, without bias) per output unit;
        g = init_scale/√(var(t) + ε), b = −mean(t)·g. Dead units
        (var(t) ≤ ε) get g = init_scale. The output is φ(g·t + b), computed
        from t rather than by a second pass through the layer.
        """
        name = self._output_kernel()
        gain = self._gains[name]
        bias = self.bias
        _INIT_PASS.get().record(
            self, [v for v in (gain, bias, self.initialized) if v is not None]
        )
        if bias is not None:
            backend.assign(bias, ops.zeros(bias.shape, bias.dtype))
        # t: the parent's own computation with the kernel v/‖v‖, no bias,
        # no activation and no regularization loss.
        activation = self.activation
        self._direction_only, self.activation = True, None
        try:
            with self.unpenalized_scope():
                t = ops.cast(super().call(inputs), "float32")
        finally:
            self._direction_only, self.activation = False, activation
        ndim = len(t.shape)
        units, perm = self._output_units(ndim)
        reduced = [a for a in range(ndim) if a not in units]
        mean, variance = ops.moments(t, reduced, keepdims=True)
        dense = self.layer_type.data_init == "dense"
        epsilon = DENSE_EPSILON if dense else CONV_EPSILON
        scale = ops.where(
            variance > epsilon,
            self.init_scale / ops.sqrt(variance + epsilon),
            self.init_scale,
        )
        # A non-finite statistic (NaN > ε is false: it would pass for a dead
        # unit) makes the gain NaN, which `keras_wc.initialize` reports and
        # undoes.
        scale = ops.where(
            ops.isfinite(mean) & ops.isfinite(variance), scale, float("nan")
        )
        value = ops.reshape(
            ops.transpose(ops.squeeze(scale, axis=reduced), perm), gain.shape
        )
        backend.assign(
            gain,
            ops.cast(ops.log(value) if self.log_scale else value, gain.dtype),
        )
        outputs = t * scale
        if bias is not None:
            value, broadcast_shape = self._bias_value(-mean * scale, t)
            backend.assign(bias, ops.cast(value, bias.dtype))
            outputs = outputs + ops.reshape(value, broadcast_shape)
        backend.assign(self.initialized, True)
        self._initialized_mirror = True
        if self.activation is not None:
            outputs = self.activation(outputs)
        return ops.cast(outputs, self.compute_dtype)

    def _bias_value(self, shift, t):
        """The bias closest to `shift` (one value per unit) in mean square,
        and the shape that broadcasts it against `t`.

        Exactly `shift` when the bias covers the unit axes (every layer but
        an `EinsumDense` whose `bias_axes` omit some unit axis).
        """
        ndim = len(t.shape)
        units, _ = self._output_units(ndim)
        positions = self._bias_positions(ndim)
        shared = [a for a in units if a not in positions]
        if shared:
            shift = ops.mean(shift, axis=shared, keepdims=True)
        shape = [t.shape[a] if a in positions else 1 for a in range(ndim)]
        value = ops.reshape(ops.broadcast_to(shift, shape), self.bias.shape)
        return value, shape
