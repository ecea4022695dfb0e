"""Where the kernels of each supported Keras layer are, and how they are laid
out: one small table instead of `isinstance` chains in every mixin.

A `Layout` tells the reparameterization mechanism which variables of a
built-in layer are kernels (the names its `build` passes to `add_weight`),
which constructor arguments constrain them, which kernel axes index output
units (the axes weight normalization keeps one gain per entry of), and how
weight normalization's data-dependent init reads the layer's outputs.
"""

import dataclasses

import keras


def _last(name, rank):
    return (rank - 1,)


def _transposed(name, rank):
    # (*kernel_size, filters, input_channels): the filters are axis -2.
    return (rank - 2,)


def _depthwise(name, rank):
    # (*kernel_size, input_channels, depth_multiplier): one output channel
    # per (input channel, multiplier) pair.
    return (rank - 2, rank - 1)


def _separable(name, rank):
    return _depthwise(name, rank) if name == "depthwise_kernel" else (rank - 1,)


def einsum_specs(equation):
    """(kernel spec, output spec) of an EinsumDense equation."""
    inputs, output = equation.split("->")
    return inputs.split(",")[1], output


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one family of Keras layers holds its kernels.

    Attributes:
        kernels: the kernel variable names, in the order `build` creates
            them.
        constraints: per kernel, the constructor attribute holding its
            constraint.
        unit_axes: `fn(kernel name, rank) -> axes` of the kernel indexing
            output units (weight normalization keeps one gain per unit and
            takes the norm over the other axes); `None` for EinsumDense,
            whose units follow from the equation.
        data_init: how WN's data-dependent init reads the layer: `"dense"`
            (ε = 1e-10), `"conv"` (ε = 1e-8), or `None` (recurrent cells,
            which have no data-dependent init).
        recurrent: whether the layer is a recurrent cell, called once per
            time step inside its RNN layer.
    """

    kernels: tuple
    constraints: tuple
    unit_axes: object
    data_init: object
    recurrent: bool = False


_DENSE = Layout(("kernel",), ("kernel_constraint",), _last, "dense")
_CONV = Layout(("kernel",), ("kernel_constraint",), _last, "conv")
_TRANSPOSED = Layout(("kernel",), ("kernel_constraint",), _transposed, "conv")
_DEPTHWISE = Layout(("kernel",), ("depthwise_constraint",), _depthwise, "conv")
_SEPARABLE = Layout(
    ("depthwise_kernel", "pointwise_kernel"),
    ("depthwise_constraint", "pointwise_constraint"),
    _separable,
    "conv",
)
# Cells hold their gates side by side along the last axis
# ((input_dim, k·units) and (units, k·units)): every column is one output
# unit of one gate.
_CELL = Layout(
    ("kernel", "recurrent_kernel"),
    ("kernel_constraint", "recurrent_constraint"),
    _last,
    None,
    recurrent=True,
)

LAYOUTS = {
    keras.layers.Dense: _DENSE,
    keras.layers.EinsumDense: Layout(
        ("kernel",), ("kernel_constraint",), None, "dense"
    ),
    keras.layers.Conv1D: _CONV,
    keras.layers.Conv2D: _CONV,
    keras.layers.Conv3D: _CONV,
    keras.layers.Conv1DTranspose: _TRANSPOSED,
    keras.layers.Conv2DTranspose: _TRANSPOSED,
    keras.layers.Conv3DTranspose: _TRANSPOSED,
    keras.layers.DepthwiseConv1D: _DEPTHWISE,
    keras.layers.DepthwiseConv2D: _DEPTHWISE,
    keras.layers.SeparableConv1D: _SEPARABLE,
    keras.layers.SeparableConv2D: _SEPARABLE,
    keras.layers.LSTMCell: _CELL,
    keras.layers.GRUCell: _CELL,
    keras.layers.SimpleRNNCell: _CELL,
}

# The built-in kernel layers, in the order of `LAYOUTS`.
KERNEL_LAYERS = tuple(LAYOUTS)

# The recurrent layers whose cell is one of the cells above. Their config
# holds the cell's arguments, so `keras_wc` has a form of each.
RECURRENT_LAYERS = {
    keras.layers.LSTM: keras.layers.LSTMCell,
    keras.layers.GRU: keras.layers.GRUCell,
    keras.layers.SimpleRNN: keras.layers.SimpleRNNCell,
}


# The built-in layers keras_wc has a reparameterized form of: the kernel
# layers, the recurrent cells and the recurrent layers (which stand for
# their cell).
SUPPORTED_LAYERS = KERNEL_LAYERS + tuple(RECURRENT_LAYERS)


def plain_parent(cls):
    """The built-in kernel (or recurrent) layer class `cls` derives from."""
    for base in cls.__mro__:
        if base in LAYOUTS or base in RECURRENT_LAYERS:
            return base
    return None


def layout_of(layer_or_class):
    """The `Layout` of a kernel layer (or class), `None` if unsupported; a
    recurrent layer has its cell's."""
    cls = (
        layer_or_class
        if isinstance(layer_or_class, type)
        else type(layer_or_class)
    )
    parent = plain_parent(cls)
    return LAYOUTS.get(RECURRENT_LAYERS.get(parent, parent))
