"""The table of the Keras layer types keras_wc reparameterizes: one row per
type, from which the `WC*` and `WN*` classes, their docstrings and the
layer test cases are generated (`keras_wc.layers.wc_layers`,
`keras_wc.layers.wn_layers`, `tests/layers`). Adding a layer type is
adding a row (and its numeric test); the mechanism (`reparameterized`,
`wc_base`, `wn_base`) reads the row and has no `isinstance` chain over
layer types.

A row (`LayerType`) says which variables of the layer are kernels (the
names its `build` passes to `add_weight`), which constructor arguments
constrain them, which kernel axes index output units (the axes weight
normalization keeps one gain per entry of), how weight normalization's
data-dependent init reads the layer's outputs, whether the layer's output
may be scaled instead of its kernel (`scaled_output`), and the docstring
example and test case of its keras_wc forms. A recurrent layer (`LSTM`,
`ConvLSTM2D`, ...) has a `RecurrentType` row naming its cell's row.
"""

import dataclasses

import keras

from keras_wc import internals
from keras_wc.layers import linear_ops


def einsum_specs(equation):
    """(kernel spec, output spec) of an EinsumDense equation."""
    inputs, output = equation.split("->")
    return inputs.split(",")[1], output


def _spec_positions(spec, ndim):
    """Position of each letter of an einsum output spec in a rank-`ndim`
    tensor, "..." standing for the dimensions no letter names."""
    if "..." not in spec:
        return {c: i for i, c in enumerate(spec)}
    head, tail = spec.split("...")
    positions = {c: i for i, c in enumerate(head)}
    positions.update({c: ndim - len(tail) + i for i, c in enumerate(tail)})
    return positions


# -- which kernel axes index output units: fn(layer, kernel name, rank) ----


def _last(layer, name, rank):
    return (rank - 1,)


def _transposed(layer, name, rank):
    # (*kernel_size, filters, input_channels): the filters are axis -2.
    return (rank - 2,)


def _depthwise(layer, name, rank):
    # (*kernel_size, input_channels, depth_multiplier): one output channel
    # per (input channel, multiplier) pair.
    return (rank - 2, rank - 1)


def _separable(layer, name, rank):
    if name == "depthwise_kernel":
        return _depthwise(layer, name, rank)
    return (rank - 1,)


def _einsum_units(layer, name, rank):
    # The kernel axes whose letters appear in the output.
    kernel_spec, output_spec = einsum_specs(layer.equation)
    return tuple(i for i, c in enumerate(kernel_spec) if c in output_spec)


# -- the rank of a kernel, known before `build`: fn(layer, kernel name) ----


def _matrix_rank(layer, name):
    return 2


def _conv_rank(layer, name):
    return layer.rank + 2


def _einsum_rank(layer, name):
    return len(einsum_specs(layer.equation)[0])


# -- where the units are in an output of rank `ndim`: fn(layer, ndim) ------
# returns (output positions of the units in output order, the permutation
# taking statistics over them to the order of the gain's axes).


def _channel_units(layer, ndim):
    if getattr(layer, "data_format", None) == "channels_first":
        return [1], [0]
    return [ndim - 1], [0]


def _einsum_output_units(layer, ndim):
    kernel_spec, output_spec = einsum_specs(layer.equation)
    positions = _spec_positions(output_spec, ndim)
    letters = [c for c in kernel_spec if c in output_spec]
    in_output_order = sorted(letters, key=positions.get)
    perm = [in_output_order.index(c) for c in letters]
    return [positions[c] for c in in_output_order], perm


# -- the output positions the bias spans: fn(layer, ndim) ------------------


def _unit_positions(layer, ndim):
    return _channel_units(layer, ndim)[0]


def _einsum_bias_positions(layer, ndim):
    _, output_spec = einsum_specs(layer.equation)
    positions = _spec_positions(output_spec, ndim)
    return [positions[c] for c in layer.bias_axes]


@dataclasses.dataclass(frozen=True)
class Case:
    """A keras_wc form's test case (`tests/layers`): constructor arguments,
    input and output shapes, and the axes each kernel's WN norm is taken
    over, written out by hand from the Keras kernel layout (the tests'
    independent expectation)."""

    kwargs: dict
    input_shape: tuple
    output_shape: tuple
    norm_axes: dict


@dataclasses.dataclass(frozen=True)
class LayerType:
    """How one Keras kernel layer type holds its kernels, and the example
    and test case of its keras_wc forms.

    Attributes:
        parent: the Keras layer class.
        kernels: the kernel variable names, in the order `build` creates
            them.
        constraints: per kernel, the constructor attribute holding its
            constraint.
        unit_axes: `fn(layer, kernel name, rank) -> axes` of the kernel
            indexing output units (weight normalization keeps one gain per
            unit and takes the norm over the other axes).
        kernel_rank: `fn(layer, kernel name) -> rank`, known before
            `build`.
        data_init: how WN's data-dependent init reads the layer: `"dense"`
            (ε = 1e-10), `"conv"` (ε = 1e-8), or `None` (recurrent cells,
            which have no data-dependent init).
        output_units: `fn(layer, ndim) -> (positions, permutation)`: where
            the units are in an output of rank `ndim` (data init).
        bias_positions: `fn(layer, ndim) -> positions` the bias spans.
        recurrent: whether the layer is a recurrent cell, called once per
            time step inside its RNN layer.
        scaled: `(op, add_bias)` from `linear_ops` when the layer's `call`
            is that linear op of (inputs, kernel), then the bias, then the
            activation, so that a scale of the kernel may scale the output
            instead (`scaled_output`); `None` otherwise.
        norm_doc: the WN docstring's paragraph on the norm axes.
        example: the docstring example `(constructor arguments, input
            shape, output shape)`, or `None` for a class Keras does not
            export (a cell only its recurrent layer builds).
        case: the `Case` the layer tests run (`None`: tested through its
            recurrent layer).
        states: a cell's number of state tensors (its docstring example
            passes them); 0 for a layer.
    """

    parent: type
    kernels: tuple = ("kernel",)
    constraints: tuple = ("kernel_constraint",)
    unit_axes: object = _last
    kernel_rank: object = _conv_rank
    data_init: object = "conv"
    output_units: object = _channel_units
    bias_positions: object = _unit_positions
    recurrent: bool = False
    scaled: object = None
    norm_doc: str = ""
    example: tuple = None
    case: Case = None
    states: int = 0


@dataclasses.dataclass(frozen=True)
class RecurrentType:
    """A recurrent layer whose cell is a `LayerType`'s: its keras_wc form
    is the layer with the keras_wc cell (`keras_wc.layers.recurrent`)."""

    parent: type
    cell: type
    example: tuple


_CONV_DOC = (
    "The kernel `(*kernel_size, input_channels/groups, filters)` is "
    "normalized over all axes but the last; `g` has shape `(filters,)`."
)
_TRANSPOSE_DOC = (
    "The kernel `(*kernel_size, filters, input_channels)` is normalized "
    "over all axes but axis -2; `g` has shape `(filters,)`."
)
_DEPTHWISE_DOC = (
    "The kernel `(*kernel_size, input_channels, depth_multiplier)` is "
    "normalized over the spatial axes; `g` has shape "
    "`(input_channels, depth_multiplier)`, one gain per output channel."
)
_SEPARABLE_DOC = (
    "Both kernels are weight-normalized. The depthwise kernel "
    "`(*kernel_size, input_channels, depth_multiplier)` is normalized "
    "over the spatial axes, `depthwise_g` having shape "
    "`(input_channels, depth_multiplier)`; the pointwise kernel "
    "`(1, ..., input_channels·depth_multiplier, filters)` over all axes "
    "but the last, `pointwise_g` having shape `(filters,)`."
)


def _conv(parent, scaled, norm_doc, example, case, unit_axes=_last):
    return LayerType(
        parent,
        unit_axes=unit_axes,
        scaled=scaled,
        norm_doc=norm_doc,
        example=example,
        case=case,
    )


def _transpose(parent, example, case):
    return _conv(
        parent,
        (linear_ops.conv_transpose, linear_ops.add_channel_bias),
        _TRANSPOSE_DOC,
        example,
        case,
        unit_axes=_transposed,
    )


def _depthwise_type(parent, example, case):
    return LayerType(
        parent,
        constraints=("depthwise_constraint",),
        unit_axes=_depthwise,
        norm_doc=_DEPTHWISE_DOC,
        example=example,
        case=case,
    )


def _separable_type(parent, example, case):
    return LayerType(
        parent,
        kernels=("depthwise_kernel", "pointwise_kernel"),
        constraints=("depthwise_constraint", "pointwise_constraint"),
        unit_axes=_separable,
        norm_doc=_SEPARABLE_DOC,
        example=example,
        case=case,
    )


def _cell(parent, example, states, kernel_rank=_matrix_rank):
    # Cells hold their gates side by side along the last axis
    # ((input_dim, k·units) and (units, k·units); a ConvLSTM cell's
    # (*kernel_size, channels, 4·filters)): every last-axis entry is one
    # output unit of one gate.
    return LayerType(
        parent,
        kernels=("kernel", "recurrent_kernel"),
        constraints=("kernel_constraint", "recurrent_constraint"),
        kernel_rank=kernel_rank,
        data_init=None,
        recurrent=True,
        example=example,
        states=states,
    )


L = keras.layers
LAYER_TYPES = (
    LayerType(
        L.Dense,
        kernel_rank=_matrix_rank,
        data_init="dense",
        scaled=(linear_ops.matmul, linear_ops.add_bias),
        norm_doc=(
            "The kernel `(input_dim, units)` is normalized over axis 0; "
            "`g` has shape `(units,)`."
        ),
        example=("16", "(2, 8)", "(2, 16)"),
        case=Case({"units": 5}, (2, 3), (2, 5), {"kernel": (0,)}),
    ),
    LayerType(
        L.EinsumDense,
        unit_axes=_einsum_units,
        kernel_rank=_einsum_rank,
        data_init="dense",
        output_units=_einsum_output_units,
        bias_positions=_einsum_bias_positions,
        scaled=(linear_ops.einsum, linear_ops.add_bias),
        norm_doc=(
            "The kernel axes whose letters appear in the output spec index "
            "the output units: `g` has their shape and the norm is over the "
            'other kernel axes (for `"abc,cd->abd"`: norm over `c`, `g` of '
            "shape `(d,)`). If `bias_axes` omits a unit axis, data init sets "
            "the bias to the average of `−mean(t)·g` over that axis (the "
            "closest bias in mean square)."
        ),
        example=('"ab,bc->ac", output_shape=16', "(2, 8)", "(2, 16)"),
        case=Case(
            {
                "equation": "abc,cd->abd",
                "output_shape": (4, 5),
                "bias_axes": "d",
            },
            (2, 4, 3),
            (2, 4, 5),
            {"kernel": (0,)},
        ),
    ),
    _conv(
        L.Conv1D,
        (linear_ops.conv1d, linear_ops.add_channel_bias),
        _CONV_DOC,
        ("16, 3", "(2, 10, 4)", "(2, 8, 16)"),
        Case(
            {"filters": 4, "kernel_size": 3},
            (2, 6, 3),
            (2, 4, 4),
            {"kernel": (0, 1)},
        ),
    ),
    _conv(
        L.Conv2D,
        (linear_ops.conv, linear_ops.add_channel_bias),
        _CONV_DOC,
        ("16, 3", "(2, 10, 10, 4)", "(2, 8, 8, 16)"),
        Case(
            {"filters": 4, "kernel_size": 3, "padding": "same"},
            (2, 5, 5, 3),
            (2, 5, 5, 4),
            {"kernel": (0, 1, 2)},
        ),
    ),
    _conv(
        L.Conv3D,
        (linear_ops.conv, linear_ops.add_channel_bias),
        _CONV_DOC,
        ("16, 3", "(2, 6, 6, 6, 4)", "(2, 4, 4, 4, 16)"),
        Case(
            {"filters": 2, "kernel_size": 2},
            (2, 3, 3, 3, 2),
            (2, 2, 2, 2, 2),
            {"kernel": (0, 1, 2, 3)},
        ),
    ),
    _transpose(
        L.Conv1DTranspose,
        ("16, 3", "(2, 8, 4)", "(2, 10, 16)"),
        Case(
            {"filters": 4, "kernel_size": 3},
            (2, 4, 3),
            (2, 6, 4),
            {"kernel": (0, 2)},
        ),
    ),
    _transpose(
        L.Conv2DTranspose,
        ("16, 3", "(2, 8, 8, 4)", "(2, 10, 10, 16)"),
        Case(
            {"filters": 4, "kernel_size": 2, "strides": 2},
            (2, 3, 3, 3),
            (2, 6, 6, 4),
            {"kernel": (0, 1, 3)},
        ),
    ),
    _transpose(
        L.Conv3DTranspose,
        ("16, 3", "(2, 4, 4, 4, 4)", "(2, 6, 6, 6, 16)"),
        Case(
            {"filters": 2, "kernel_size": 2},
            (2, 2, 2, 2, 2),
            (2, 3, 3, 3, 2),
            {"kernel": (0, 1, 2, 4)},
        ),
    ),
    _depthwise_type(
        L.DepthwiseConv1D,
        ("3", "(2, 10, 4)", "(2, 8, 4)"),
        Case(
            {"kernel_size": 3, "depth_multiplier": 2},
            (2, 6, 3),
            (2, 4, 6),
            {"kernel": (0,)},
        ),
    ),
    _depthwise_type(
        L.DepthwiseConv2D,
        ("3", "(2, 10, 10, 4)", "(2, 8, 8, 4)"),
        Case(
            {"kernel_size": 3, "depth_multiplier": 2},
            (2, 5, 5, 3),
            (2, 3, 3, 6),
            {"kernel": (0, 1)},
        ),
    ),
    _separable_type(
        L.SeparableConv1D,
        ("16, 3", "(2, 10, 4)", "(2, 8, 16)"),
        Case(
            {"filters": 4, "kernel_size": 3, "depth_multiplier": 2},
            (2, 6, 3),
            (2, 4, 4),
            {"depthwise_kernel": (0,), "pointwise_kernel": (0, 1)},
        ),
    ),
    _separable_type(
        L.SeparableConv2D,
        ("16, 3", "(2, 10, 10, 4)", "(2, 8, 8, 16)"),
        Case(
            {"filters": 4, "kernel_size": 3},
            (2, 5, 5, 3),
            (2, 3, 3, 4),
            {"depthwise_kernel": (0, 1), "pointwise_kernel": (0, 1, 2)},
        ),
    ),
    _cell(L.LSTMCell, ("16", "(2, 8)", "(2, 16)"), 2),
    _cell(L.GRUCell, ("16", "(2, 8)", "(2, 16)"), 1),
    _cell(L.SimpleRNNCell, ("16", "(2, 8)", "(2, 16)"), 1),
    _cell(internals.conv_lstm_cell_class(), None, 2, kernel_rank=_conv_rank),
)

RECURRENT_TYPES = (
    RecurrentType(L.LSTM, L.LSTMCell, ("16", "(2, 5, 8)", "(2, 16)")),
    RecurrentType(L.GRU, L.GRUCell, ("16", "(2, 5, 8)", "(2, 16)")),
    RecurrentType(L.SimpleRNN, L.SimpleRNNCell, ("16", "(2, 5, 8)", "(2, 16)")),
    *(
        RecurrentType(
            getattr(L, f"ConvLSTM{rank}D"),
            internals.conv_lstm_cell_class(),
            ("16, 3", f"(2, 5, {space}4)", f"(2, {out}16)"),
        )
        for rank, space, out in (
            (1, "10, ", "8, "),
            (2, "10, 10, ", "8, 8, "),
            (3, "6, 6, 6, ", "4, 4, 4, "),
        )
    ),
)
del L

BY_PARENT = {row.parent: row for row in LAYER_TYPES}

# The built-in kernel layers, in the order of `LAYER_TYPES`.
KERNEL_LAYERS = tuple(BY_PARENT)

# The recurrent layers whose cell is one of the cells above. Their config
# holds the cell's arguments, so `keras_wc` has a form of each.
RECURRENT_LAYERS = {row.parent: row.cell for row in RECURRENT_TYPES}


# The built-in layers keras_wc has a reparameterized form of: the kernel
# layers, the recurrent cells and the recurrent layers (which stand for
# their cell).
SUPPORTED_LAYERS = KERNEL_LAYERS + tuple(RECURRENT_LAYERS)


def plain_parent(cls):
    """The built-in kernel (or recurrent) layer class `cls` derives from."""
    for base in cls.__mro__:
        if base in BY_PARENT or base in RECURRENT_LAYERS:
            return base
    return None


def layer_type_of(layer_or_class):
    """The `LayerType` of a kernel layer (or class), `None` if unsupported;
    a recurrent layer has its cell's."""
    cls = (
        layer_or_class
        if isinstance(layer_or_class, type)
        else type(layer_or_class)
    )
    parent = plain_parent(cls)
    return BY_PARENT.get(RECURRENT_LAYERS.get(parent, parent))


def example_of(parent):
    """The docstring example of the keras_wc forms of `parent`."""
    for row in LAYER_TYPES + RECURRENT_TYPES:
        if row.parent is parent:
            return row.example
    raise KeyError(parent)


def example_call(parent, input_shape):
    """The call line of the docstring example of the keras_wc forms of
    `parent` (a cell takes and returns its states too)."""
    x = f"keras.random.normal({input_shape})"
    row = BY_PARENT.get(parent)
    if row is None or not row.states:
        return f"y = layer({x})"
    states = f"[keras.ops.zeros((2, 16))] * {row.states}"
    return f"y, states = layer({x}, {states})"


def recurrent_layers_of(cell):
    """The names of the recurrent layers built on the cell class `cell`."""
    return [row.parent.__name__ for row in RECURRENT_TYPES if row.cell is cell]


def is_public(cls):
    """Whether `cls` (a keras_wc layer class) is exported: its Keras parent
    is (a cell Keras does not export is built only by its layer)."""
    return hasattr(keras.layers, plain_parent(cls).__name__)


def define_classes(prefix, module, mixin_of, recurrent_mixin, document):
    """The keras_wc classes of every row, by name: `prefix` + the Keras
    class name, with bases `(mixin_of(row), row.parent)` for a layer type
    and `(recurrent_mixin, row.parent)` with the cell's class as
    `CELL_CLASS` for a recurrent layer; defined in `module`, documented by
    `document(cls)` and registered as `keras_wc>` + name."""
    classes = {}

    def define(name, bases, namespace):
        cls = type(name, bases, {"__module__": module, **namespace})
        document(cls)
        classes[name] = keras.saving.register_keras_serializable(
            package="keras_wc"
        )(cls)

    for row in LAYER_TYPES:
        define(prefix + row.parent.__name__, (mixin_of(row), row.parent), {})
    for row in RECURRENT_TYPES:
        define(
            prefix + row.parent.__name__,
            (recurrent_mixin, row.parent),
            {"CELL_CLASS": classes[prefix + row.cell.__name__]},
        )
    return classes
