"""The one boundary between keras_wc and the private state of Keras,
TensorFlow, JAX and PyTorch.

Everything here reads or writes something they do not offer as a public
API; no other module of keras_wc does (`tests/test_internals.py` greps for
it). Each function says which public API is missing; each assumption is
checked by name in `tests/test_internals.py`, so a release that changes
one fails there first. Supported: Keras 3.12 to 3.15 (`make test` runs the
contract tests on both).
"""

import contextlib
import inspect
import sys

import keras


def change_class(layer, cls):
    """Changes the class of `layer` to `cls`, in place, so that it behaves
    as a layer built as `cls` would.

    Missing public API: Keras has no way to change a layer's class. Two
    things a layer gets from its class when it is created must follow:

    * the wrappers of `build` and `quantize` that `Layer.__new__` binds to
      the instance (name scope, build config, state lock) are re-pointed
      at `cls`'s methods;
    * what `Layer.__init__` derives from the signature of `call`
      (`_call_signature`, whether it takes `training` and `mask`, which
      call-context arguments it takes): `Layer.__call__` and wrappers such
      as `TimeDistributed` pass `training` and `mask` by these.
    """
    layer.__class__ = cls
    for name in ("build", "quantize"):
        wrapper = layer.__dict__.get(name)
        wrapped = getattr(wrapper, "__wrapped__", None)
        if wrapped is None:
            continue
        method = getattr(cls, name).__get__(layer, cls)
        cells = [
            cell
            for cell in wrapper.__closure__ or ()
            if cell.cell_contents is wrapped
        ]
        if len(cells) != 1:
            raise RuntimeError(
                f"keras_wc cannot re-point the `{name}` wrapper Keras binds "
                f"to layer '{layer.name}' at {cls.__name__}.{name}: this "
                f"Keras version ({keras.__version__}) wraps it differently."
            )
        cells[0].cell_contents = method
        wrapper.__wrapped__ = method
    _derive_call_attributes(layer)


def _derive_call_attributes(layer):
    """What `Layer.__init__` derives from the class's `call`."""
    signature = inspect.signature(layer.call)
    parameters = [p.name for p in signature.parameters.values()]
    layer._call_signature = signature
    layer.call_signature_parameters = parameters
    layer._call_has_training_arg = "training" in parameters
    layer._call_has_mask_arg = "mask" in parameters
    layer._call_has_context_arg = {
        arg: arg in parameters for arg in layer._call_context_args
    }


def current_call():
    """The outermost layer call under way (one object for the whole call,
    however deep), or None outside any call.

    Missing public API: Keras's `CallContext`, which `Layer.__call__` opens
    when no call is under way and which every nested call shares.
    """
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("current_call_ctx")


def variable_layout(variable):
    """The `keras.distribution.TensorLayout` `variable` was created with
    (by the distribution current then), or None.

    Missing public API: Keras keeps it in `Variable._layout`; before Keras
    3.15 a JAX variable keeps the layout's JAX sharding there instead,
    turned back into the layout here.
    """
    layout = getattr(variable, "_layout", None)
    spec = getattr(layout, "spec", None)
    mesh = getattr(layout, "mesh", None)
    if spec is None or mesh is None or not hasattr(mesh, "axis_names"):
        return layout
    axes = tuple(spec) + (None,) * (len(variable.shape) - len(spec))
    device_mesh = keras.distribution.DeviceMesh(
        tuple(mesh.devices.shape), tuple(mesh.axis_names), mesh.devices
    )
    return keras.distribution.TensorLayout(axes, device_mesh)


class _Choosing:
    """A stand-in for the current distribution that lays out the variables
    created as `choose(variable)` says (None: as the current distribution
    would), and is the current distribution for anything else."""

    def __init__(self, current, choose):
        self._current = current
        self._choose = choose

    def get_variable_layout(self, variable):
        layout = self._choose(variable)
        if layout is None and self._current is not None:
            return self._current.get_variable_layout(variable)
        return layout

    def __getattr__(self, name):
        return getattr(self._current, name)


@contextlib.contextmanager
def laid_out(choose):
    """Variables created inside get the `keras.distribution.TensorLayout`
    `choose(variable)` gives (None: the one they would get anyway).
    `choose` may be None: nothing changes.

    Missing public API: `Layer.add_weight` takes no layout. A JAX variable
    asks the current distribution for its layout when it is created
    (`Distribution.get_variable_layout`), so a stand-in answering `choose`
    is made current around the creation.
    """
    if choose is None:
        yield
        return
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(_Choosing(current, choose))
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def keep_own_dtype_policy(layer, source):
    """Gives `layer` the dtype policy object `source` holds, where `layer`
    holds a `DTypePolicyMap` (the policy of the model it was loaded with)
    and `source` a policy of its own.

    Missing public API: the setter of `Layer.dtype_policy` writes into the
    map. A workaround: Keras 3.15's `Embedding.save_own_variables` reads
    `self.dtype_policy.quantization_mode`, which a map does not resolve, so
    a quantized embedding of a keras-hub model loaded from `.keras` saves no
    scale and cannot be saved again (`ValueError: Invalid dtype: object`).
    """
    policy_map = keras.dtype_policies.DTypePolicyMap
    if isinstance(layer.dtype_policy, policy_map) and not isinstance(
        source.dtype_policy, policy_map
    ):
        layer._dtype_policy = source.dtype_policy


def own_variables(layer):
    """The variables `layer` created itself (trainable first), not those of
    its sublayers: `layer.weights` lists both.

    Missing public API: Keras keeps a layer's own variables in
    `_trainable_variables` and `_non_trainable_variables`.
    """
    return layer._trainable_variables + layer._non_trainable_variables


# -- What the backends are doing -------------------------------------------


def in_symbolic_scope():
    """Whether Keras runs a layer only to build it or infer output shapes
    (`compute_output_spec`; on PyTorch with real tensors).

    Missing public API: Keras's `SymbolicScope` has no public query.
    """
    from keras.src.backend.common.symbolic_scope import (
        in_symbolic_scope as in_scope,
    )

    return in_scope()


def is_jax_tracer(value):
    """Whether `value` is traced by JAX (`jit`, `grad`, ...), not an array.

    Missing public API: JAX has no stable public predicate; `jax.core`,
    where `Tracer` lives, is being pruned.
    """
    import jax

    return isinstance(value, jax.core.Tracer)


def is_fake_tensor(tensor):
    """Whether `tensor` is a shape-only tensor of PyTorch's tracing
    (`torch.compile`, `torch.export`), which holds no values.

    Missing public API: PyTorch exports `FakeTensor` only from the private
    `torch._subclasses`.
    """
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(tensor, FakeTensor)


def tf_graph_in_xla():
    """Whether TensorFlow's current graph is compiled by XLA (a
    `tf.function(jit_compile=True)`, or a function called from one).

    Missing public API: TensorFlow answers only in
    `tensorflow.python.ops.control_flow_util`.
    """
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


# -- Variables ---------------------------------------------------------------


def stored_value(variable):
    """The backend tensor `variable` holds (None while Keras's JAX trainer
    has taken the values out of the variables for `fit`), read without
    autocasting and, on JAX, without touching a trace.

    Missing public API: `Variable.value` autocasts and, during a JAX `fit`,
    reads the trainer's state; Keras keeps the stored tensor in
    `Variable._value`.
    """
    return variable._value


@contextlib.contextmanager
def no_autocast():
    """Float variables read and assigned inside are not autocast (as they
    are inside a layer's call under a mixed precision policy).

    Missing public API: Keras's `AutocastScope`, which `Layer.__call__`
    opens; `AutocastScope(None)` turns autocasting off.
    """
    from keras.src.backend.common.variables import AutocastScope

    with AutocastScope(None):
        yield


# -- A layer's tracking ------------------------------------------------------


def sublayers(layer, include_self=False, recursive=False):
    """The layers Keras tracks under `layer` (input layers included), in
    creation order, once each; `recursive`: all the way down, depth
    first.

    Missing public API: only `Model.layers` lists sublayers, and only a
    model's own; Keras walks them with `Layer._flatten_layers`.
    """
    return layer._flatten_layers(include_self=include_self, recursive=recursive)


@contextlib.contextmanager
def unlocked_tracking(layer):
    """Variables may be added to and removed from a built `layer` inside.

    Missing public API: Keras locks a layer's `Tracker` (`Layer._tracker`)
    after `build`; only `Layer._untrack_variable` unlocks it, for one
    variable.
    """
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if locked:
            tracker.lock()


def _variable_stores(layer):
    """(variables, ids) of `layer`'s trainable and non-trainable lists."""
    tracker = layer._tracker
    return [
        (tracker.config[name][1], tracker.stored_ids[name])
        for name in ("trainable_variables", "non_trainable_variables")
    ]


def untrack_variable(layer, variable):
    """`layer` no longer tracks `variable` (nor does its backend layer:
    PyTorch's keeps its own list of parameters).

    Missing public API: Keras's `Layer._untrack_variable` (which also locks
    the tracker again) and its backend hook `_post_untrack_variable`.
    """
    for variables, ids in _variable_stores(layer):
        if id(variable) in ids:
            ids.discard(id(variable))
            variables[:] = [v for v in variables if v is not variable]
    layer._post_untrack_variable(variable)


def move_tracked_variable_last(layer, variable):
    """Moves `variable` to the end of `layer`'s tracked variables.

    Missing public API: a layer's variable order is its tracker's lists
    (`Layer._tracker`), which `Tracker` only appends to.
    """
    for variables, ids in _variable_stores(layer):
        if id(variable) in ids:
            variables[:] = [v for v in variables if v is not variable]
            variables.append(variable)


def replace_tracked_variable(layer, old, group):
    """Puts `group` (variables tracked by `layer`) where `old` was, in that
    order; untracks `old`.

    Missing public API: `Tracker.replace_tracked_value` puts one untracked
    value in place of another; here several tracked ones take its place
    (a fresh `build` creates them there), through `Layer._tracker`.
    """
    for variables, ids in _variable_stores(layer):
        if id(old) not in ids:
            continue
        members = [v for v in group if id(v) in ids]
        remaining = [v for v in variables if all(v is not m for m in members)]
        index = next(i for i, v in enumerate(remaining) if v is old)
        variables[:] = remaining[:index] + members + remaining[index + 1 :]
        ids.discard(id(old))
    layer._post_untrack_variable(old)


def point_kernel_attribute(layer, parent, name, variable):
    """Makes `layer`'s attribute for kernel `name` hold `variable`, as the
    `build` of its Keras class `parent` does.

    Missing public API: `Dense`, `EinsumDense` keep the kernel in the
    private `_kernel` behind a read-only `kernel` property (Conv layers in
    `kernel` itself).
    """
    if isinstance(getattr(parent, name, None), property):
        setattr(layer, "_" + name, variable)
        return
    layer.__dict__.pop(name, None)
    setattr(layer, name, variable)


def delete_attribute(layer, name):
    """Deletes attribute `name` of `layer` without untracking what it holds
    (done before, `untrack_variable`): the backend's layer drops its own
    record of it (TensorFlow's checkpoint dependency, and its list of
    attributes holding tracked collections).

    Missing public API: `Layer.__delattr__` untracks a variable and runs
    the garbage collector; TensorFlow's layer keeps `_tracked`.
    """
    super(keras.layers.Layer, layer).__delattr__(name)
    tracked = getattr(layer, "_tracked", None)
    while tracked is not None and name in tracked:
        tracked.remove(name)


def own_attribute_names(layer):
    """The names of the attributes `layer`'s class set (in `__dict__`),
    not those every `keras.layers.Layer` has nor TensorFlow's trackable
    bookkeeping (`_self_*`).

    Missing public API: Keras has no list of a layer's state beyond its
    config and variables.
    """
    base = set(vars(keras.layers.Layer()))
    return {k for k in vars(layer) if k not in base and k[:6] != "_self_"}


# -- Models ------------------------------------------------------------------


def has_been_called(layer):
    """Whether `layer` (a model) has been called on inputs.

    Missing public API: `Layer.__call__` sets `Layer._called`; a built
    subclassed model need not have been called.
    """
    return layer._called


def sequential_input_layer(model):
    """The `InputLayer` of a `keras.Sequential`, or None.

    Missing public API: `Sequential.layers` leaves it out; it is first in
    `Sequential._layers`.
    """
    layers = model._layers
    if layers and isinstance(layers[0], keras.layers.InputLayer):
        return layers[0]
    return None


def producing_layer(tensor):
    """The layer whose call made symbolic `tensor` (a `keras.Input`'s:
    its `InputLayer`).

    Missing public API: `KerasTensor._keras_history`.
    """
    return tensor._keras_history.operation


# -- Optimizers --------------------------------------------------------------

# The private hooks of `keras.optimizers.Optimizer` that
# `keras_wc.optimizers.ModifiedOptimizerMixin` overrides (a method cannot
# move here). Missing public API: Keras offers no hook between the gradients
# and the update (for `g_w = g_v / Ψ'(v)`, before clipping and accumulation),
# to exclude a variable from weight decay per variable (`exclude_from_weight_
# decay` takes names), nor to change the EMA update.
OPTIMIZER_HOOKS = (
    "_backend_apply_gradients",
    "_use_weight_decay",
    "_apply_weight_decay",
    "_update_model_variables_moving_average",
)


def optimizer_key(optimizer, variable):
    """The key `optimizer` files `variable`'s slots under (the same for a
    `tf.distribute` variable and its per-replica copies).

    Missing public API: `Optimizer._var_key`.
    """
    return optimizer._var_key(variable)


def optimizer_trainable_variables(optimizer):
    """The variables a built `optimizer` was built for, in order.

    Missing public API: `Optimizer._trainable_variables`.
    """
    return optimizer._trainable_variables


def adam_slots(optimizer, variable):
    """`(momentum, velocity)`: the slot variables of a built
    `keras.optimizers.Adam` (or subclass) for `variable`.

    Missing public API: Adam keeps them in `_momentums`, `_velocities`,
    indexed by `Optimizer._get_variable_index`.
    """
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]


def ema_slots(optimizer):
    """The moving averages of a built `optimizer` with `use_ema=True`, one
    per trainable variable, in order (None where not averaged).

    Missing public API: `Optimizer._model_variables_moving_average`.
    """
    return optimizer._model_variables_moving_average


def conv_lstm_cell_class():
    """The class of the cell Keras's `ConvLSTM1D/2D/3D` build.

    Missing public API: Keras does not export it (`keras.layers` has no
    `ConvLSTMCell`); it is the `ConvLSTMCell` of the module defining the
    public layers' base class. (Not taken from a layer built to find it:
    building a layer at import would start the backend, before a user can
    configure its devices.)
    """
    base = keras.layers.ConvLSTM1D.__mro__[1]
    return sys.modules[base.__module__].ConvLSTMCell
