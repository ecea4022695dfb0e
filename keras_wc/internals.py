"""The one boundary between keras_wc and Keras's private state.

Everything here reads or writes something Keras does not offer as a public
API. Each function says which public API is missing; each assumption is
checked by name in `tests/test_internals.py`, so a Keras release that
changes one fails there first.
"""

import contextlib
import functools
import inspect

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

    Missing public API: Keras keeps it in `Variable._layout`.
    """
    return getattr(variable, "_layout", None)


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


@functools.cache
def conv_lstm_cell_class():
    """The class of the cell Keras's `ConvLSTM1D/2D/3D` build.

    Missing public API: Keras does not export it (`keras.layers` has no
    `ConvLSTMCell`); it is taken from a layer built through the public
    API, not imported from `keras.src`.
    """
    return type(keras.layers.ConvLSTM1D(1, 1, name="keras_wc_probe").cell)
