"""The one boundary between keras_wc and Keras's private state.

Everything here reads or writes something Keras does not offer as a public
API. Each function says which public API is missing; each assumption is
checked by name in `tests/test_internals.py`, so a Keras release that
changes one fails there first.
"""

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
