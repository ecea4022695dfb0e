"""The weight-compander form of every Keras kernel layer.

Each class is its Keras parent with every kernel replaced by `Ψ(v)`
(`CompanderMixin`); biases and normalization layers are never
reparameterized (WC paper, §III-A). The classes are generated from the
table of layer types (`keras_wc.layers.layer_types`): `WC` + the Keras class
name, registered as `keras_wc>WC...`; `CLASSES` holds them by name.
"""


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
from keras_wc.layers.reparameterized import RAW_NAMES
from keras_wc.layers.wc_base import CompanderMixin, LinearCompanderMixin

_DOC = """{parent} whose kernel{s} {are} reparameterized as `w = a·f(v/b)`.

Weight compander (Cakaj et al., IJCNN 2023): with the default
`compander="arctan"`, `w = a·arctan(v/b)` (Eq. 1), so `|w| < a·π/2`, and the
gradient reaching `v` is `∂L/∂w · a·b/(b² + v²)` (Eq. 3). `v` starts at
`Ψ⁻¹(w₀) = b·tan(w₀/a)` (Eq. 4) where `w₀` is drawn from
`kernel_initializer`, so the layer starts as the plain `{parent}` would.
`compander="powerprop"` (or `keras_wc.companders.Powerprop(alpha)`) gives
powerpropagation, `w = v·|v|^(α−1)`.

All arguments of `keras.layers.{parent}` keep their positions and meaning;
the arguments below are keyword-only.

Args:
    a: scale of Ψ (> 0); bounds `|w| < a·sup|f|`. Initial value if learnable.
    b: stretch of Ψ along `v` (> 0). Initial value if learnable.
    compander: `"arctan"` (default), `"arsinh"`, `"erf"`, `"powerprop"`, or a
        `keras_wc.companders.Compander` instance.
    learnable: `False` or `"none"` (default): fixed `a, b`. `True` or
        `"fine"`: `a` and `b` are trainable scalars of this layer (the
        paper's "fine" learnable WC, §III-B). `"coarse"`: they come from
        `shared`.
    shared: a `keras_wc.SharedCompander` holding `(a, b)` shared by many
        layers (the "coarse" version); leave `a`, `b` and `compander` at
        their defaults when given.
    **kwargs: the arguments of `keras.layers.{parent}`.

Weight decay: with fixed `a, b`, `kernel_regularizer` acts on `w = Ψ(v)`
(Eq. 5); with learnable `a, b` it acts on `v` only, and `a, b` are never
regularized. `kernel_constraint` constrains `w`: `v ← Ψ⁻¹(c(Ψ(v)))`.

Attributes:
    {raw}: the raw trainable variable{s} (float32).
    {kernels}: the effective kernel{s} `Ψ(v)`, a tensor recomputed on read.
    a, b: the current values (floats when fixed, tensors when learnable).

Example:

>>> layer = keras_wc.{name}({example}, a=1.0, b=0.6)
>>> {call}
>>> y.shape
{output_shape}

Reference: Cakaj, Mehnert, Yang, "Weight Compander: A Simple Weight
Reparameterization for Regularization", IJCNN 2023, arXiv:2306.16993.
"""

_RECURRENT_NOTE = """
The cell is the matching keras_wc cell (`layer.cell`), which holds the
variables; the effective kernels are computed once per call of the layer,
before the loop over time steps. On a recurrent cell the weight decay of
the effective kernels is evaluated once per training step.
"""


_CELL_DOC = """{parent} whose kernels are reparameterized as `w = a·f(v/b)`:
the cell Keras's `{layers}` build, turned into this by their keras_wc
forms. See `keras_wc.WCLSTMCell` for the arguments.
"""


def _document(cls):
    parent = plain_parent(cls)
    example = example_of(parent)
    if example is None:
        cls.__doc__ = _CELL_DOC.format(
            parent=parent.__name__,
            layers="`, `".join(recurrent_layers_of(parent)),
        )
        return
    arguments, input_shape, output_shape = example
    kernels = layer_type_of(parent).kernels
    several = len(kernels) > 1
    cls.__doc__ = _DOC.format(
        parent=parent.__name__,
        name=cls.__name__,
        s="s" if several else "",
        are="are" if several else "is",
        raw=", ".join(RAW_NAMES[k] for k in kernels),
        kernels=", ".join(kernels),
        example=arguments,
        call=example_call(parent, input_shape),
        output_shape=output_shape,
    ) + (_RECURRENT_NOTE if parent in RECURRENT_LAYERS else "")


def _mixin(row):
    return LinearCompanderMixin if row.scaled else CompanderMixin


CLASSES = define_classes("WC", __name__, _mixin, RecurrentMixin, _document)
globals().update(CLASSES)
