"""Scaling a layer's output instead of its kernel.

Keras's `Dense`, `EinsumDense` and (transposed) convolutions compute a
linear op of (inputs, kernel), add the bias, apply the activation. A scale
of the kernel per output unit (WN's `g/‖v‖`, Eq. 2 of Salimans & Kingma) or
as a whole (WC's learnable `a`, Eq. 1 of the WC paper) commutes with the
linear op, so it can multiply the op's output instead: the training step
then never writes the scaled kernel, and the scale's gradient comes from
the output (`Σ ∂L/∂y·t`, batch-sized) instead of a pass over the kernel's
gradient.

A layer takes this path only when the `call` its mixin would defer to is
Keras's own for a layer type whose row in the table of layer types has
`scaled` ops (`keras_wc.layers.layer_types`), so that a subclass with a `call`
of its own keeps it, and when its output is smaller than its kernel
(`output_is_smaller`).
"""

import math

from keras import ops

from keras_wc.layers.layer_types import layer_type_of


def parent_call(cls, mixin):
    """The `call` that `super(mixin, instance).call` resolves to."""
    mro = cls.__mro__
    for base in mro[mro.index(mixin) + 1 :]:
        if "call" in base.__dict__:
            return base.__dict__["call"]
    return None


def output_is_smaller(layer, inputs, kernel):
    """Whether the layer's output has at most as many entries as `kernel`.

    Scaling the output costs a few passes over the output (the product,
    its gradient, the scale's gradient), scaling the kernel a few over
    the kernel: the output wins for dense layers at the batch sizes they
    are fine-tuned at, the kernel for convolutions over large images and
    for layers applied to long sequences. Unknown dimensions (the batch
    of a traced step) count as 1.
    """
    shape = layer.compute_output_shape(tuple(inputs.shape))
    entries = math.prod(d for d in shape if d is not None)
    return entries <= math.prod(kernel.shape)


def scaling_parts(layer, mixin, inputs):
    """(linear op, bias op) of `layer` if the `call` after `mixin` is
    Keras's own `call` of a layer type with `scaled` ops and the output on
    `inputs` is smaller than the kernel, else None (also with LoRA, whose
    adapters add to the kernel: the scale does not commute with them)."""
    row = layer_type_of(layer)
    parts = row.scaled
    if (
        parts is None
        or parent_call(type(layer), mixin) is not row.parent.call
        or getattr(layer, "lora_enabled", False)
        or not output_is_smaller(layer, inputs, layer.raw_kernels["kernel"])
    ):
        return None
    return parts


def scaled_call(layer, inputs, kernel, scale, parts):
    """φ(op(inputs, kernel)·scale + bias) for `parts = (op, add_bias)`
    from the layer type's row. `scale(ndim)` gives the scale laid out to
    broadcast against the op's output of rank `ndim`."""
    linear, add_bias = parts
    outputs = linear(layer, inputs, ops.cast(kernel, layer.compute_dtype))
    factor = ops.cast(scale(len(outputs.shape)), layer.compute_dtype)
    outputs = add_bias(layer, ops.multiply(outputs, factor))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs
