"""The linear op of (inputs, kernel) and the bias of the Keras layers whose
`call` is that op, then the bias, then the activation (`Dense`,
`EinsumDense`, the (transposed) convolutions): what `scaled_output`
computes when it scales a layer's output instead of its kernel. Each
function takes the layer, and computes what Keras's own `call` does
before (`op`) and after (`add_bias`) the product with the kernel.
"""

from keras import ops


def matmul(layer, inputs, kernel):
    return ops.matmul(inputs, kernel)


def einsum(layer, inputs, kernel):
    return ops.einsum(layer.equation, inputs, kernel)


def conv(layer, inputs, kernel):
    return layer.convolution_op(inputs, kernel)


def conv1d(layer, inputs, kernel):
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


def conv_transpose(layer, inputs, kernel):
    return ops.conv_transpose(
        inputs,
        kernel,
        strides=list(layer.strides),
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


def add_bias(layer, outputs):
    return outputs if layer.bias is None else ops.add(outputs, layer.bias)


def add_channel_bias(layer, outputs):
    if not layer.use_bias:
        return outputs
    shape = [1] * len(outputs.shape)
    shape[-1 if layer.data_format == "channels_last" else 1] = layer.filters
    return ops.add(outputs, ops.reshape(layer.bias, shape))
