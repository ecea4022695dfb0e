"""The one reparameterization mechanism shared by WC, PP and WN layers.

A reparameterized layer is a Keras kernel layer (`Dense`, `Conv2D`,
`LSTMCell`, ...) whose kernel variable(s) are replaced by raw trainable
variables, the effective kernel being recomputed from them in float32 in the
compute path. The mechanism hooks the parent class at two public points:

* `add_weight`: when the parent's `build` asks for a kernel (the names in
  the layer's row of the table of layer types), the subclass creates its
  raw variables instead (`_create_kernel`) and the raw variable is handed
  back, so the parent's `build` runs unchanged;
* the kernel attributes: `kernel`, `depthwise_kernel`, `pointwise_kernel`
  and `recurrent_kernel` are properties returning the effective kernel, so
  the parent's own `call` applies it.

Each call of the layer is one scope (the layer's `call` opens it, so it
holds also when a wrapper such as `TimeDistributed` calls `call` directly).
Computing the kernels is an explicit step of the call path
(`_compute_kernels`): at the start of the call, each kernel is computed
once, with its weight-decay penalty, and every read of the kernel in the
call returns that tensor, however often the parent reads its kernel. A
call that computes its output without the kernel (the scaled-output path)
skips the step and hands its penalty over itself (`_penalize`). When the
call ends, the penalties it computed are added with `add_loss`, once per
model call whatever the number of times the layer is called in it (a
shared layer, a layer in `TimeDistributed`), as Keras counts a plain
layer's regularizer. The kernel properties only read: inside a call they
return the kernel the call computed, outside one they compute the
effective kernel, with no penalty and nothing stored. Nothing is ever
assigned to a kernel variable in the forward pass and nothing is kept on
the layer between calls. Saving stores
the raw variables (the parents' `save_own_variables` would store the
effective kernel and load it into the raw variable).

The effective kernel, its penalty and their gradients are computed by the
entry points of `keras_wc.lean` (closed-form gradients, the L2 penalty
fused into the function that computes the kernel, fused kernels), or
inside `keras_wc.lean.reference_path()` with plain `keras.ops` and
automatic differentiation, the reference the lean path is tested against.

A built or unbuilt instance of the plain Keras layer becomes a
reparameterized one in place with `adopt` (its variables are replaced at
the same positions, so that it saves exactly as a newly built layer of the
keras_wc class), and turns back into the plain layer with `release`.
"""

import contextlib
import functools

import keras
import numpy as np
from keras import ops

from keras_wc import internals, sharding
from keras_wc.layers.layer_types import layer_type_of, plain_parent

KERNEL_NAMES = (
    "kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "recurrent_kernel",
)
# The raw variable that stands for each kernel: `v` for `kernel`,
# `depthwise_v` / `pointwise_v` for a separable convolution, `recurrent_v`
# for the recurrent kernel of a cell.
RAW_NAMES = {
    "kernel": "v",
    "depthwise_kernel": "depthwise_v",
    "pointwise_kernel": "pointwise_v",
    "recurrent_kernel": "recurrent_v",
}


def _kernel_property(name):
    def getter(self):
        if name not in self._raw_kernels:
            raise AttributeError(self._missing_attribute(name))
        # Only reads: the kernel this call computed (`_compute_kernels`),
        # else the effective kernel, without its penalty.
        scope = self._scope
        if scope is not None and name in scope.kernels:
            return scope.kernels[name]
        return self._applied_kernel(name, self._effective_kernel(name))

    def setter(self, value):
        # The parent's `build` stores what `add_weight` returned, i.e. the
        # raw variable, which is already tracked in `_raw_kernels`.
        if value is not None and value is not self._raw_kernels.get(name):
            raise AttributeError(
                f"`{name}` of layer '{self.name}' is computed from the raw "
                f"variable `{RAW_NAMES[name]}` and cannot be set. Assign to "
                f"`{RAW_NAMES[name]}` instead, or `keras_wc.fold` the model."
            )

    return property(
        getter,
        setter,
        doc=f"The effective `{name}` (a tensor in the compute dtype).",
    )


def _raw_property(name):
    def getter(self):
        if name not in self._raw_kernels:
            raise AttributeError(self._missing_attribute(RAW_NAMES[name]))
        return self._raw_kernels[name]

    return property(
        getter, doc=f"The raw trainable variable behind `{name}`."
    )


class EffectiveRegularizer:
    """A kernel regularizer applied to the effective kernel of a layer.

    Attached to the raw variable of a recurrent cell, whose kernels are read
    once per time step inside its RNN's loop, where a penalty cannot be
    added: Keras evaluates it once per step, outside the loop.
    """

    def __init__(self, regularizer, layer, name):
        self.regularizer = regularizer
        self.layer = layer
        self.name = name

    def __call__(self, _):
        return self.regularizer(self.layer._effective_kernel(self.name))


class _CallScope:
    """What one call of a layer computed (`_compute_kernels`): its kernels,
    and the penalties to add when the call ends (none if `penalize` is
    false)."""

    def __init__(self, penalize=True):
        self.kernels = {}
        self.penalties = {}
        self.penalize = penalize


def computes_kernels(call):
    """Marks a mixin's `call` that runs `_compute_kernels` itself, on the
    paths that read the kernels (so that a path computing its output
    without them does not compute them)."""
    call.computes_kernels = True
    return call


def _call_in_scope(call):
    """`call` run in the layer's call scope, its kernels computed first
    unless `call` computes them itself (`computes_kernels`); Keras reads
    the signature of the wrapped `call` (`training`, `mask`)."""
    precompute = not getattr(call, "computes_kernels", False)

    @functools.wraps(call)
    def scoped_call(self, *args, **kwargs):
        with self.call_scope(precompute=precompute):
            return call(self, *args, **kwargs)

    scoped_call.opens_call_scope = True
    return scoped_call


class ReparameterizedLayer:
    """Mixin for a Keras kernel layer with reparameterized kernel(s).

    Put it first in the bases: `class WCDepthwiseConv2D(CompanderMixin,
    DepthwiseConv2D)` (`keras_wc.layers.layer_types.define_classes` does).
    Subclasses implement:

    * `_parse_options(layer, **options)` (a classmethod): validate the
      method's options against `layer` (the plain layer, or the new
      instance) without changing anything, and return them normalized;
    * `_set_options(options)`: store the normalized options;
    * `reparameterization_config()`: the options, as in `get_config`;
    * `_create_kernel(name, shape, initializer, regularizer, constraint)`:
      create the raw variable(s) of one kernel with `_add_raw_weight` and
      return the variable that stands for the kernel;
    * `_build_reparameterization()`: the variables created after the
      parent's `build` (e.g. learnable `a, b`);
    * `_effective_kernel(name)`: the effective kernel as a float32 tensor;
    * `_right_inverse(name, value)`: the raw variables' values giving the
      effective kernel `value` (the right inverse); raises `ValueError` for
      a value the reparameterization cannot represent.
    """

    # The instance attributes `_set_options` and `_build_reparameterization`
    # add, removed by `release`.
    _OPTION_ATTRIBUTES = ()

    kernel = _kernel_property("kernel")
    depthwise_kernel = _kernel_property("depthwise_kernel")
    pointwise_kernel = _kernel_property("pointwise_kernel")
    recurrent_kernel = _kernel_property("recurrent_kernel")
    v = _raw_property("kernel")
    depthwise_v = _raw_property("depthwise_kernel")
    pointwise_v = _raw_property("pointwise_kernel")
    recurrent_v = _raw_property("recurrent_kernel")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Every layer class's `call` opens the call scope (see the module
        # docstring), whichever class along its bases defines `call`.
        call = getattr(cls, "call", None)
        if issubclass(cls, keras.layers.Layer) and not getattr(
            call, "opens_call_scope", False
        ):
            cls.call = _call_in_scope(call)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_plain_features(self)
        self._init_mechanism()

    def _init_mechanism(self):
        self._raw_kernels = {}
        # Per kernel: the variables created for it, the standing one first.
        self._raw_groups = {}
        # Per kernel: (initializer, regularizer, constraint) of the plain
        # layer's kernel, for `release`.
        self._kernel_specs = {}
        # Per kernel: its layout under `keras.distribution`, or None.
        self._kernel_layouts = {}
        # Regularizers of the effective kernel, evaluated on the kernel the
        # call computes (one evaluation of the reparameterization per step
        # instead of a second one for the penalty).
        self._call_regularizers = {}
        # The `_CallScope` of the call under way (set past attribute
        # tracking).
        object.__setattr__(self, "_scope", None)
        # The penalty tensors last added, per kernel (see `_add_penalties`),
        # and the model call they were added in.
        object.__setattr__(self, "_penalties", {})
        object.__setattr__(self, "_penalized_call", None)

    @classmethod
    def _parse_options(cls, layer, **options):
        raise NotImplementedError

    def _set_options(self, options):
        raise NotImplementedError

    def reparameterization_config(self):
        """The keras_wc arguments of the layer (the rest of its config is
        the Keras parent's)."""
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), **self.reparameterization_config()}

    def _missing_attribute(self, name):
        """Why the kernel attribute `name` (`kernel`, `v`, ...) is missing,
        or None if `name` is not one."""
        kernels = self.__dict__.get("_raw_kernels")
        if kernels is None:
            return None
        if name in KERNEL_NAMES and name not in kernels:
            return (
                f"Layer '{self.name}' has no `{name}` yet: build the layer "
                "(call it on an input) before reading it."
            )
        raw = {value: key for key, value in RAW_NAMES.items()}
        if name in raw and raw[name] not in kernels:
            return f"Layer '{self.name}' has no `{name}`" + (
                " yet: build the layer first."
                if not self.built
                else f"; its raw kernels are "
                f"{[RAW_NAMES[k] for k in kernels]}."
            )
        return None

    def __getattr__(self, name):
        # Reached when normal lookup fails, also when a property raises
        # AttributeError. On PyTorch a layer is a `torch.nn.Module`, whose
        # `__getattr__` would replace the property's message with its own.
        message = self._missing_attribute(name)
        if message is not None:
            raise AttributeError(message)
        fallback = getattr(super(), "__getattr__", None)
        if fallback is None:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute '{name}'"
            )
        return fallback(name)

    @property
    def layer_type(self):
        """The row of the table of layer types describing this layer's
        kernels (`keras_wc.layers.layer_types.LayerType`)."""
        return layer_type_of(self)

    @property
    def raw_kernels(self):
        """Dict from kernel name to the raw variable that stands for it."""
        return dict(self._raw_kernels)

    def add_weight(self, *args, **kwargs):
        name = kwargs.get("name")
        if name not in self.layer_type.kernels or args:
            return super().add_weight(*args, **kwargs)
        initializer = keras.initializers.get(kwargs.get("initializer"))
        regularizer = keras.regularizers.get(kwargs.get("regularizer"))
        constraint = keras.constraints.get(kwargs.get("constraint"))
        return self._add_kernel(
            name, tuple(kwargs["shape"]), initializer, regularizer, constraint
        )

    def _add_kernel(
        self, name, shape, initializer, regularizer, constraint, layout=None
    ):
        self._kernel_specs[name] = (initializer, regularizer, constraint)
        self._raw_groups[name] = []
        # Where the kernel is (`layout`: that of the kernel variable an
        # adopted layer held) or would be laid out: its raw variables take
        # it (`keras_wc.sharding`).
        self._kernel_layouts[name] = layout or sharding.kernel_layout(
            self, name, shape
        )
        variable = self._create_kernel(
            name, shape, initializer, regularizer, constraint
        )
        self._raw_kernels[name] = variable
        return variable

    def _effective_regularizer(self, name, regularizer):
        """Routes a regularizer meant for the effective kernel `name`.

        Returns what to attach to the raw variable: nothing, as the penalty
        is computed with the kernel of each call (`_compute_kernels`); or, for a
        recurrent cell, an `EffectiveRegularizer`, evaluated by Keras once per
        training step, outside the RNN's loop.
        """
        if regularizer is None:
            return None
        if self.layer_type.recurrent:
            return EffectiveRegularizer(regularizer, self, name)
        self._call_regularizers[name] = regularizer
        return None

    def build(self, input_shape):
        # A `lora_rank` given to the constructor (a config with LoRA): the
        # adapters are added after every variable of the layer, where
        # `enable_lora` on a built layer adds them, so that both save alike.
        rank = getattr(self, "lora_rank", None)
        alpha = getattr(self, "lora_alpha", None)
        if rank:
            self.lora_rank = None
        super().build(input_shape)
        self._build_other_variables()
        if rank:
            self._enable_lora(rank, lora_alpha=alpha)

    def _build_other_variables(self):
        """`_build_reparameterization`, its variables on the devices of the
        kernels (`keras_wc.sharding.replicated_with`)."""
        with internals.laid_out(
            sharding.replicated_with(self._kernel_layouts.values())
        ):
            self._build_reparameterization()

    def _build_reparameterization(self):
        pass

    @contextlib.contextmanager
    def call_scope(self, precompute=True):
        """One call's scope: each kernel is computed once inside it.

        When the scope ends without an error, the penalties computed in it
        are added (`_add_penalties`). Nested scopes join the outer one, so
        a recurrent cell called at every time step inside its RNN layer's
        scope computes its kernels once per RNN call, before the loop.

        Args:
            precompute: run `_compute_kernels` on entry (false for a `call`
                that runs it itself, on the paths that read the kernels).
        """
        if self._scope is not None:
            yield
            return
        scope = _CallScope()
        object.__setattr__(self, "_scope", scope)
        try:
            if precompute:
                self._compute_kernels()
            yield
        finally:
            object.__setattr__(self, "_scope", None)
        self._add_penalties(scope.penalties)

    @contextlib.contextmanager
    def unpenalized_scope(self):
        """A scope of its own, whose kernels are computed on entry and add
        no penalty (for a pass through the layer that is not part of its
        function, such as WN's data-dependent init)."""
        outer = self._scope
        object.__setattr__(self, "_scope", _CallScope(penalize=False))
        try:
            self._compute_kernels()
            yield
        finally:
            object.__setattr__(self, "_scope", outer)

    def _compute_kernels(self):
        """The call's explicit step computing its kernels: each kernel of
        the layer, with its weight-decay penalty (`_kernel_and_penalty`)
        where it has one and the scope penalizes, kept in the call's scope
        for every read of the kernel in the call. Kernels the scope already
        holds are kept; outside a call, or before `build`, nothing is
        computed."""
        scope = self._scope
        if scope is None or not self.built:
            return
        for name in self._raw_kernels:
            if name in scope.kernels:
                continue
            regularizer = self._call_regularizers.get(name)
            if regularizer is None or not scope.penalize:
                kernel = self._effective_kernel(name)
            else:
                kernel, scope.penalties[name] = self._kernel_and_penalty(
                    name, regularizer
                )
            scope.kernels[name] = self._applied_kernel(name, kernel)

    def _applied_kernel(self, name, kernel):
        """The kernel `name` the parent applies: the effective `kernel`,
        plus the LoRA delta, in the compute dtype."""
        return ops.cast(self._with_lora(name, kernel), self.compute_dtype)

    def _with_lora(self, name, kernel):
        """The effective `kernel` of `name` plus the LoRA delta, if any."""
        if name == "kernel" and getattr(self, "lora_enabled", False):
            kernel = kernel + self._lora_delta()
        return kernel

    def _penalize(self, name, penalty):
        """Adds `penalty` of kernel `name` to the call under way (for a call
        that computes it without the kernel)."""
        if self._scope is not None and self._scope.penalize:
            self._scope.penalties[name] = penalty

    def _add_penalties(self, penalties):
        """`add_loss` of each penalty, once per model call.

        A layer called several times in one model call (shared, or called
        at each step by `TimeDistributed`) adds each kernel's penalty once,
        as Keras evaluates a plain layer's regularizer once
        (`keras_wc.internals.current_call`).

        The tensors stay referenced until the next ones replace them: inside
        a stateless scope (JAX's training step) Keras matches a layer's
        losses by `id()` and, when a layer is called, drops from the scope
        every loss whose id is among those the layer added last time: once
        those tensors are freed, CPython may give their ids to the penalty
        of a layer called before it in the same step, which Keras then drops
        (seen on eager JAX: a penalty missing from the loss in about 1 of 100
        runs). Kept alive, the old tensors' ids cannot be reused.
        """
        if not penalties:
            return
        call = internals.current_call()
        same_call = call is not None and call is self._penalized_call
        added = dict(self._penalties) if same_call else {}
        for name, penalty in penalties.items():
            if name not in added:
                self.add_loss(penalty)
                added[name] = penalty
        object.__setattr__(self, "_penalized_call", call)
        object.__setattr__(self, "_penalties", added)

    def _add_raw_weight(
        self,
        kernel_name,
        name,
        shape,
        initializer,
        kernel_axes=None,
        **kwargs,
    ):
        """A raw variable of kernel `kernel_name`, laid out as the kernel on
        `kernel_axes`, the kernel axes its own axes are (None: all)."""
        layout = sharding.on_axes(
            self._kernel_layouts.get(kernel_name), kernel_axes
        )
        # Raw variables stay float32 and are never autocast: the effective
        # kernel is computed from them in float32 (mixed precision included).
        with internals.laid_out(layout):
            variable = super().add_weight(
                name=name,
                shape=shape,
                initializer=initializer,
                dtype="float32",
                autocast=False,
                **kwargs,
            )
        self._raw_groups[kernel_name].append(variable)
        return variable

    def _create_kernel(self, name, shape, initializer, regularizer, constraint):
        raise NotImplementedError

    def _effective_kernel(self, name):
        raise NotImplementedError

    def _right_inverse(self, name, value):
        """The raw values (one array per variable of the kernel's group)
        giving the effective kernel `value`, for this layer as it is now."""
        raise NotImplementedError

    def assign_effective_kernel(self, name, value):
        """Sets the raw variables so that the effective `name` equals `value`.

        The right inverse of the reparameterization (PyTorch parametrize's
        `right_inverse`), used by `keras_wc.convert` to start from existing
        weights without changing the layer's function.

        Args:
            name: a kernel name (`"kernel"`, `"recurrent_kernel"`, ...).
            value: array of the kernel's shape.
        """
        if name not in self._raw_kernels:
            raise ValueError(
                f"Layer '{self.name}' has no kernel {name!r} (built: "
                f"{self.built}). Its kernels: {list(self._raw_kernels)}"
            )
        expected = tuple(self._raw_kernels[name].shape)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"Layer '{self.name}': `{name}` has shape {expected}. "
                f"Received: value with shape {tuple(value.shape)}"
            )
        value = np.asarray(ops.convert_to_numpy(value), "float32")
        raw = self._right_inverse(name, value)
        for variable, new in zip(self._raw_groups[name], raw, strict=True):
            variable.assign(np.reshape(new, variable.shape))

    def _kernel_and_penalty(self, name, regularizer):
        """The effective kernel and `regularizer` of it, for the forward
        pass; subclasses may compute the penalty more cheaply."""
        kernel = self._effective_kernel(name)
        return kernel, regularizer(kernel)

    def effective_kernels(self):
        """Dict from kernel name to its effective value (float32 tensor),
        LoRA adapters merged.

        These are the weights `keras_wc.fold` writes into the plain layer.
        """
        return {
            k: self._with_lora(k, self._effective_kernel(k))
            for k in self._raw_kernels
        }

    def set_weights(self, weights):
        """Sets the layer's variables (`self.weights`: the raw ones, `v`,
        `g`, `a`, `b`, ...) from `weights`, as `get_weights` returns them.
        A plain layer's weights (its kernel) are not raw variables: load a
        plain checkpoint with `keras_wc.load_plain_weights`."""
        if len(weights) != len(self.weights):
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) has "
                f"{len(self.weights)} weights "
                f"{[v.name for v in self.weights]}, `set_weights` got "
                f"{len(weights)}. For the weights of a plain "
                f"{plain_parent(type(self)).__name__} (its kernel, not raw "
                "variables), use `keras_wc.load_plain_weights(model, "
                "path)` or convert the plain model."
            )
        super().set_weights(weights)

    # The parents' versions store `self.kernel` (the effective kernel) and
    # load it into the raw variable; the generic `Layer` ones store every
    # variable of the layer as it is.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    # -- LoRA ----------------------------------------------------------------

    @property
    def enable_lora(self):
        """The parent's `enable_lora(rank, lora_alpha=None, ...)`, where
        it has one (`Dense`, `EinsumDense`, `Conv1D/2D/3D`): the effective
        kernel becomes `Ψ(v) + (lora_alpha/rank)·A·B` (or `g·v/‖v‖ + ...`),
        the raw variables standing for the kernel (`v`, WN's `g`, learnable
        `a`, `b`) are frozen as the parent freezes its kernel, and the
        adapters `lora_kernel_a`, `lora_kernel_b` train: the trainable
        parameters are those of plain LoRA. An attribute error where the
        parent has none, as on the parent (keras-hub's
        `backbone.enable_lora` then leaves the layer alone)."""
        if not _supports_lora(type(self)):
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute "
                "'enable_lora' (its Keras parent has no LoRA)"
            )
        return self._enable_lora

    def _enable_lora(self, rank, *args, **kwargs):
        super().enable_lora(rank, *args, **kwargs)
        self._freeze_for_lora()

    def _freeze_for_lora(self):
        """Freezes what stands for the kernel(s) while LoRA is enabled."""
        if getattr(self, "lora_enabled", False):
            for variable in self._raw_variables():
                variable.trainable = False

    def _raw_variables(self):
        """The variables of the reparameterization: each kernel's raw
        variables and the others (`a`, `b`, `initialized`)."""
        return [
            v for group in self._raw_groups.values() for v in group
        ] + self._extra_variables()

    def _lora_delta(self):
        """`(lora_alpha/rank)·A·B`, as the parent adds it to its kernel."""
        return (self.lora_alpha / self.lora_rank) * ops.matmul(
            ops.cast(self.lora_kernel_a, "float32"),
            ops.cast(self.lora_kernel_b, "float32"),
        )

    def quantize(self, mode=None, **kwargs):
        """Quantizes the layer as its Keras parent does (`Dense`,
        `EinsumDense`): the layer is released first (`release`: the plain
        layer holding the effective kernel, LoRA adapters merged), so that
        `model.quantize(mode)` gives what `keras_wc.fold(model).quantize(
        mode)` gives. A layer whose parent has no quantization raises the
        parent's `NotImplementedError` (`Model.quantize` warns and leaves it
        as it is, as it leaves the plain layer) and does not change."""
        if plain_parent(type(self)).quantize is keras.layers.Layer.quantize:
            return super().quantize(mode, **kwargs)
        self.release()
        return type(self).quantize(self, mode, **kwargs)

    # -- in place ----------------------------------------------------------

    @classmethod
    def adopt(cls, layer, *, keep_function=True, **options):
        """Turns a plain Keras layer into an instance of `cls`, in place.

        `layer` must be exactly the Keras parent of `cls` (a `Dense` for
        `WCDense`). Its class becomes `cls`; if it is built, each kernel
        variable is replaced, at the same position among the layer's
        variables, by the raw variables whose effective kernel equals it
        (the right inverse), so the layer computes the same function and
        saves exactly as a newly built `cls` layer. LoRA adapters stay the
        layer's trainable part (`v` stands for the frozen kernel they adapt;
        see `enable_lora`). Everything is validated before the layer
        changes.

        Args:
            layer: the plain Keras layer.
            keep_function: if `False`, the raw variables are left at zero
                (for a layer whose variables are loaded right after, e.g.
                by `keras.saving.load_model`).
            **options: the keras_wc arguments of `cls` (e.g. `a`, `b`).

        Returns:
            `layer`, now an instance of `cls`.
        """
        parent = check_adoptable(cls, layer)
        _check_plain_features(layer)
        options = cls._parse_options(layer, **options)
        old = {}
        raw = {}
        if layer.built:
            for name in layer_type_of(cls).kernels:
                variable = _own_variable(layer, name)
                if variable is None:
                    continue
                old[name] = variable
                if keep_function:
                    # Everything that can fail, before the layer changes.
                    # The kernel variable itself (LoRA adapters, if any,
                    # stay as they are).
                    value = np.asarray(
                        ops.convert_to_numpy(variable), "float32"
                    )
                    raw[name] = cls._right_inverse_for(
                        layer, options, name, value
                    )
        lora = _lora_variables(layer)
        internals.change_class(layer, cls)
        with internals.unlocked_tracking(layer):
            layer._init_mechanism()
            layer._set_options(options)
            if not layer.built:
                mark_change(layer, "adopted")
                return layer
            for name, variable in old.items():
                standing = layer._add_kernel(
                    name,
                    tuple(variable.shape),
                    keras.initializers.Zeros(),
                    keras.regularizers.get(variable.regularizer),
                    keras.constraints.get(variable.constraint),
                    layout=sharding.existing_layout(variable),
                )
                internals.replace_tracked_variable(
                    layer, variable, layer._raw_groups[name]
                )
                internals.point_kernel_attribute(layer, parent, name, standing)
            layer._build_other_variables()
            # The adapters after every other variable, as where
            # `enable_lora` adds them on a built keras_wc layer.
            for variable in lora:
                internals.move_tracked_variable_last(layer, variable)
            layer._freeze_for_lora()
        for name, values_of_kernel in raw.items():
            for variable, new in zip(
                layer._raw_groups[name], values_of_kernel, strict=True
            ):
                variable.assign(np.reshape(new, variable.shape))
        mark_change(layer, "adopted")
        return layer

    @classmethod
    def _right_inverse_for(cls, layer, options, name, value):
        """The raw values giving the effective kernel `value` for a layer
        with `options` (`layer` may still be the plain layer); raises
        `ValueError` for a value the reparameterization cannot represent."""
        raise NotImplementedError

    def release(self):
        """Turns the layer back into its plain Keras parent, in place.

        Each kernel's raw variables are replaced, at the position of the
        standing one, by a plain kernel variable holding the effective
        kernel; the other variables of the reparameterization (`a`, `b`,
        `g`, `initialized`) are removed. The layer then computes the same
        function and saves exactly as the plain Keras layer.

        Returns:
            The layer, now an instance of its Keras parent.
        """
        parent = plain_parent(type(self))
        values = {
            name: np.asarray(ops.convert_to_numpy(kernel), "float32")
            for name, kernel in self.effective_kernels().items()
        }
        groups = dict(self._raw_groups)
        specs = dict(self._kernel_specs)
        extra = self._extra_variables() + _lora_variables(self)
        own_attributes = [
            name
            for name in _MECHANISM_ATTRIBUTES + type(self)._OPTION_ATTRIBUTES
            if name in self.__dict__
        ]
        internals.change_class(self, parent)
        with internals.unlocked_tracking(self):
            for name, group in groups.items():
                initializer, regularizer, constraint = specs[name]
                # The kernel is laid out as its `v` was.
                with internals.laid_out(
                    sharding.on_axes(sharding.existing_layout(group[0]))
                ):
                    variable = keras.layers.Layer.add_weight(
                        self,
                        name=name,
                        shape=tuple(group[0].shape),
                        initializer=keras.initializers.Zeros(),
                        regularizer=regularizer,
                        constraint=constraint,
                    )
                variable.assign(values[name].astype(variable.dtype))
                internals.replace_tracked_variable(self, group[0], [variable])
                for other in group[1:]:
                    internals.untrack_variable(self, other)
                internals.point_kernel_attribute(self, parent, name, variable)
            for variable in extra:
                internals.untrack_variable(self, variable)
            if getattr(self, "lora_enabled", False):
                # Merged into the kernel (`effective_kernels`).
                self.lora_enabled = False
                self.lora_rank = None
                self.lora_alpha = None
                for attribute in ("lora_kernel_a", "lora_kernel_b"):
                    internals.delete_attribute(self, attribute)
        for attribute in own_attributes:
            # Its variables were untracked above.
            internals.delete_attribute(self, attribute)
        mark_change(self, "released")
        return self

    def _extra_variables(self):
        """Variables of the reparameterization not tied to one kernel."""
        return []


def check_adoptable(cls, layer):
    """Raises unless `layer` is exactly the Keras parent of `cls`; returns
    the parent."""
    parent = plain_parent(cls)
    if type(layer) is not parent:
        raise TypeError(
            f"{cls.__name__}.adopt expects a `{parent.__name__}` (exactly "
            f"that class). Received: layer '{getattr(layer, 'name', '?')}'"
            f" of type {type(layer).__name__}"
        )
    return parent


# How a layer differs from what its own class or config builds, when it was
# changed in place: "adopted" (built plain, now reparameterized) or
# "released" (built reparameterized, now plain). `keras_wc.inplace_saving`
# reads it.
CHANGE = "_keras_wc_change"


def mark_change(layer, change):
    """Notes an in place change of `layer`; the opposite one cancels it."""
    opposite = {"adopted": "released", "released": "adopted"}[change]
    if layer.__dict__.get(CHANGE) == opposite:
        del layer.__dict__[CHANGE]
    else:
        layer.__dict__[CHANGE] = change


def _supports_lora(cls):
    """Whether the Keras parent of `cls` has `enable_lora`."""
    return hasattr(plain_parent(cls), "enable_lora")


def _lora_variables(layer):
    if not getattr(layer, "lora_enabled", False):
        return []
    return [layer.lora_kernel_a, layer.lora_kernel_b]


def _check_plain_features(layer):
    if getattr(layer, "lora_rank", None) and not _supports_lora(type(layer)):
        raise ValueError(
            f"Layer '{layer.name}': a {type(layer).__name__} has no LoRA. "
            f"Received: lora_rank={layer.lora_rank}"
        )
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Layer '{layer.name}': quantized dtype policies are not "
            "supported on a reparameterized kernel. `keras_wc.fold` the "
            "model, then quantize it. Received: quantization_mode="
            f"{layer.quantization_mode!r}"
        )


# The attributes the mechanism adds to a layer's `__dict__`, removed by
# `release` with each mixin's `_OPTION_ATTRIBUTES`.
_MECHANISM_ATTRIBUTES = (
    "_raw_kernels",
    "_raw_groups",
    "_kernel_specs",
    "_kernel_layouts",
    "_call_regularizers",
    "_scope",
    "_penalties",
    "_penalized_call",
)


def _own_variable(layer, name):
    """The variable called `name` among `layer`'s own variables, or None."""
    for variable in internals.own_variables(layer):
        if variable.name == name:
            return variable
    return None
