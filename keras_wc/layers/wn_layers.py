"""The weight-normalized form of every Keras kernel layer.

Each class is its Keras parent with every kernel replaced by `g·v/‖v‖`
(`WeightNormMixin`); biases are never reparameterized. The classes are
generated from the table of layer types (`keras_wc.layers.layer_types`): `WN` +
the Keras class name, registered as `keras_wc>WN...`; `CLASSES` holds them
by name.
"""

import textwrap

from keras_wc.layers.layer_types import (
    RECURRENT_LAYERS,
    define_classes,
    example_call,
    example_of,
    layer_type_of,
    plain_parent,
    recurrent_layers_of,
)
from keras_wc.layers.recurrent import RecurrentMixin
from keras_wc.layers.wn_base import WeightNormCellMixin, WeightNormMixin

# The end of every WN docstring: its example and the paper.
_EXAMPLE = """
Example:

>>> layer = keras_wc.{name}({example})
>>> {call}
>>> y.shape
{output_shape}

Reference: Salimans, Kingma, "Weight Normalization: A Simple
Reparameterization to Accelerate Training of Deep Neural Networks",
NeurIPS 2016, arXiv:1602.07868.
"""

_DOC = """{parent} whose kernel{s} {are} weight-normalized: `w = g·v/‖v‖`.

Weight normalization (Salimans & Kingma, NeurIPS 2016, Eq. 2) splits the
weight vector of each output unit into a direction `v/‖v‖` and a gain `g`,
so that `‖w‖ = |g|` per unit. The gradients are those of Eq. 3:
`∇_g L = ∇_w L·v/‖v‖` and `∇_v L = (g/‖v‖)·∇_w L − (g·∇_g L/‖v‖²)·v`.
`v` and `g` are float32 and the effective kernel is computed from them in
float32 on every call (mixed precision included). The norm is
`‖v‖ = sqrt(max(Σv², 1e-12))`, so a zero `v` gives `w = 0`, never NaN.

{layout}

Initialization. By default `v = w₀`, drawn from the kernel initializer, and
`g = ‖w₀‖`: the layer starts as the plain `{parent}` would.
`keras_wc.initialize(model, x)` then performs the data-dependent init of
§3 (openai/weightnorm): per output unit, on the init batch,
`t = x·v/‖v‖` (pre-activation, without bias),
`g = init_scale/√(var(t) + ε)` and `b = −mean(t)·g`, so that the
pre-activations have mean 0 and standard deviation `init_scale` per unit
(ε = 1e-10 for dense, 1e-8 for convolutional layers). A dead unit,
`var(t) ≤ ε`, gets `g = init_scale` and `b = −mean(t)·init_scale` (it
outputs 0 on the init batch). Without a bias (`use_bias=False`, e.g.
before `keras_wc.MeanOnlyBatchNorm`) only `g` is set. The init state is
the persisted `initialized` variable: it is saved and loaded with the
model, and `initialize` never re-runs on an initialized layer.{init_note}

All arguments of `keras.layers.{parent}` keep their positions and
meaning; the arguments below are keyword-only.

Args:
    data_init: if `True` (default), the layer is meant to be initialized
        from data: training it (`fit`, or a call with `training=True`)
        before `keras_wc.initialize` raises `RuntimeError`. Inference is
        allowed. If `False`, it trains from the default init unless
        `keras_wc.initialize` is called (which initializes it all the same).
    init_scale: standard deviation (> 0) of the pre-activations after the
        data-dependent init.
    log_scale: if `True`, `g = exp(s)` with a raw trainable `s` (the
        paper's optional log-scale parameterization, §2.1); `g` is then
        always positive.
    **kwargs: the arguments of `keras.layers.{parent}`.

{regularizer}

Attributes:
    {raw}: the raw trainable direction{s} (float32).
    {gains}: the gain{s} (`exp(s)` when `log_scale`).
    raw_gains: dict from kernel name to the raw gain variable
        ({raw_gain_names}).
    {kernels}: the effective kernel{s}
        `g·v/‖v‖`, a tensor recomputed on read.
    initialized: the persisted, non-trainable boolean init flag.
""" + _EXAMPLE

_REGULARIZER_NOTE = (
    " on the effective kernel `w` (an L2 penalty on `w` is an L2 penalty on "
    "`g`). A constraint must be exactly satisfiable on `w = g·v/‖v‖`: "
    "`NonNeg` (applied to `v` and `g`), or `MaxNorm`, `MinMaxNorm`, "
    "`UnitNorm` whose `axis` is the norm axes (applied to `g`, since "
    "‖w‖ = |g| there). Any other constraint raises `ValueError` at "
    "construction. The data-dependent init ignores constraints; they act "
    "from the first optimizer step."
)

_RECURRENT_DOC = """{parent} whose kernel and recurrent kernel are
weight-normalized: `w = g·v/‖v‖` per output unit of each gate.

Weight normalization (Salimans & Kingma, NeurIPS 2016, Eq. 2) of a
recurrent cell. The cell holds its gates side by side along the last axis
of `kernel` `(input_dim, k·units)` and `recurrent_kernel` `(units,
k·units)` (k = 4 for LSTM, 3 for GRU, 1 for SimpleRNN; a ConvLSTM's are
`(*kernel_size, channels, 4·filters)` and `(*kernel_size, filters,
4·filters)`), so every last-axis entry is one output unit of one gate;
each is normalized over the other axes on its own, with its own gain (`g`
of shape `(k·units,)` and `recurrent_g` of the same shape). This is
PyTorch's `weight_norm(lstm, "weight_ih_l0")` and `weight_norm(lstm,
"weight_hh_l0")` (norm per row of its transposed layout): the input and
the recurrent weights of a gate unit are scaled independently, which
keeps their relative scale trainable. Gradients are those of Eq. 3; `v`
and `g` are float32 and the kernels are computed in float32 (mixed
precision included).{cell_note}

Initialization: `v = w₀` from the initializers and `g = ‖w₀‖`, so the layer
starts as the plain `{parent}` would. There is no data-dependent init for
recurrent layers (`keras_wc.initialize` leaves them as they are): their
inputs at one step depend on the previous steps. Weight decay
(`kernel_regularizer`, `recurrent_regularizer`) acts on the effective
kernels, evaluated once per training step. Constraints as for `WNDense`:
`NonNeg`, or a norm constraint over the norm axes (every axis but the
last: axis 0 for an LSTM, GRU or SimpleRNN kernel).

All arguments of `keras.layers.{parent}` keep their positions and meaning;
the arguments below are keyword-only.

Args:
    init_scale: kept for symmetry with the other WN layers (> 0).
    log_scale: if `True`, `g = exp(s)` with a raw trainable `s`.
    **kwargs: the arguments of `keras.layers.{parent}`.
""" + _EXAMPLE


_CELL_DOC = """{parent} whose kernels are weight-normalized: `w = g·v/‖v‖`
per output unit of each gate: the cell Keras's `{layers}` build, turned
into this by their keras_wc forms. See `keras_wc.WNLSTMCell`.
"""


def _document(cls):
    parent_cls = plain_parent(cls)
    if example_of(parent_cls) is None:
        cls.__doc__ = _CELL_DOC.format(
            parent=parent_cls.__name__,
            layers="`, `".join(recurrent_layers_of(parent_cls)),
        )
        return
    example, input_shape, output_shape = example_of(parent_cls)
    if parent_cls in RECURRENT_LAYERS or layer_type_of(parent_cls).recurrent:
        cell = parent_cls not in RECURRENT_LAYERS
        cls.__doc__ = _RECURRENT_DOC.format(
            parent=parent_cls.__name__,
            name=cls.__name__,
            cell_note=(
                ""
                if cell
                else " The cell is the matching keras_wc cell "
                "(`layer.cell`); the kernels are computed once per call, "
                "before the loop over time steps."
            ),
            example=example,
            call=example_call(parent_cls, input_shape),
            output_shape=output_shape,
        )
        return
    parent = parent_cls.__name__
    row = layer_type_of(parent_cls)
    separable = len(row.kernels) > 1
    layout = row.norm_doc
    cls.__doc__ = _DOC.format(
        parent=parent,
        name=cls.__name__,
        layout=textwrap.fill("Norm axes. " + layout, 76),
        s="s" if separable else "",
        are="are" if separable else "is",
        init_note=(
            "\n\n"
            + textwrap.fill(
                "Data init sets `pointwise_g`, the gain that scales the "
                "output channels; `depthwise_g` keeps its value and `t` is "
                "computed with the current effective depthwise kernel.",
                76,
            )
            if separable
            else ""
        ),
        regularizer=textwrap.fill(
            "Weight decay and constraints. "
            + (
                "`depthwise_regularizer` and `pointwise_regularizer` act"
                if separable
                else (
                    "`depthwise_regularizer` acts"
                    if row.constraints == ("depthwise_constraint",)
                    else "`kernel_regularizer` acts"
                )
            )
            + _REGULARIZER_NOTE,
            76,
        ),
        raw="depthwise_v, pointwise_v" if separable else "v",
        gains="depthwise_g, pointwise_g" if separable else "g",
        raw_gain_names=(
            "`depthwise_g`, `pointwise_g`; or `depthwise_s`, `pointwise_s`"
            if separable
            else "`g`, or `s`"
        ),
        kernels=(
            "depthwise_kernel, pointwise_kernel" if separable else "kernel"
        ),
        example=example,
        call=example_call(parent_cls, input_shape),
        output_shape=output_shape,
    )


def _mixin(row):
    return WeightNormCellMixin if row.recurrent else WeightNormMixin


CLASSES = define_classes("WN", __name__, _mixin, RecurrentMixin, _document)
globals().update(CLASSES)
