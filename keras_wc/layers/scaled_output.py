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
Keras's own for one of these layers (`SCALABLE_CALLS`), so that a subclass
with a `call` of its own keeps it, and when its output is smaller than its
kernel (`output_is_smaller`).
"""

import math

import keras
from keras import ops


def _matmul(layer, inputs, kernel):
    return ops.matmul(inputs, kernel)


def _einsum(layer, inputs, kernel):
    return ops.einsum(layer.equation, inputs, kernel)


def _conv(layer, inputs, kernel):
    return layer.convolution_op(inputs, kernel)


def _conv1d(layer, inputs, kernel):
    padding = layer.padding
    if padding == "causal":
        # Conv1D's causal padding: the kernel's reach, on the left.
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        if layer.data_format == "channels_last":
            pads = [[0, 0], [left, 0], [0, 0]]
        else:
            pads = [[0, 0], [0, 0], [left, 0]]
        inputs = ops.pad(inputs, pads)
        padding = "valid"
    return ops.conv(
        inputs,
        kernel,
        strides=list(layer.strides),
        padding=padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


def _conv_transpose(layer, inputs, kernel):
    return ops.conv_transpose(
        inputs,
        kernel,
        strides=list(layer.strides),
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


def _add_bias(layer, outputs):
    return outputs if layer.bias is None else ops.add(outputs, layer.bias)


def _add_channel_bias(layer, outputs):
    if not layer.use_bias:
        return outputs
    shape = [1] * len(outputs.shape)
    shape[-1 if layer.data_format == "channels_last" else 1] = layer.filters
    return ops.add(outputs, ops.reshape(layer.bias, shape))


# The Keras `call`s that are a linear op of (inputs, kernel), then the bias,
# then the activation: WN can scale their output by g/‖v‖ per unit instead
# of the kernel (the linear op commutes with a per-output-unit scale).
# Keyed by the function, so that a subclass overriding `call` keeps its own.
SCALABLE_CALLS = {
    keras.layers.Dense.call: (_matmul, _add_bias),
    keras.layers.EinsumDense.call: (_einsum, _add_bias),
    keras.layers.Conv1D.call: (_conv1d, _add_channel_bias),
    keras.layers.Conv2D.call: (_conv, _add_channel_bias),
    keras.layers.Conv3D.call: (_conv, _add_channel_bias),
    **{
        cls.call: (_conv_transpose, _add_channel_bias)
        for cls in (
            keras.layers.Conv1DTranspose,
            keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose,
        )
    },
}


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
    """(linear op, bias op) of `layer` if the `call` after `mixin` is one
    of `SCALABLE_CALLS` and the output on `inputs` is smaller than the
    kernel, else None (also with LoRA, whose adapters add to the kernel:
    the scale does not commute with them)."""
    parts = SCALABLE_CALLS.get(parent_call(type(layer), mixin))
    if (
        parts is None
        or getattr(layer, "lora_enabled", False)
        or not output_is_smaller(layer, inputs, layer.raw_kernels["kernel"])
    ):
        return None
    return parts


def scaled_call(layer, inputs, kernel, scale, parts):
    """φ(op(inputs, kernel)·scale + bias) for `parts = (op, add_bias)`
    from `SCALABLE_CALLS`. `scale(ndim)` gives the scale laid out to
    broadcast against the op's output of rank `ndim`."""
    linear, add_bias = parts
    outputs = linear(layer, inputs, ops.cast(kernel, layer.compute_dtype))
    factor = ops.cast(scale(len(outputs.shape)), layer.compute_dtype)
    outputs = add_bias(layer, ops.multiply(outputs, factor))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs
