"""The weight-compander form of every Keras kernel layer.

Each class is its Keras parent with every kernel replaced by `Ψ(v)`
(`CompanderMixin`); biases and normalization layers are never
reparameterized (WC paper, §III-A).
"""

import keras

from keras_wc.layers.compander import CompanderMixin
from keras_wc.layers.reparameterized import DOC_EXAMPLES

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
    learnable: `True` makes `a` and `b` trainable scalars of this layer (the
        paper's "fine" learnable WC, §III-B).
    shared: a `keras_wc.SharedCompander` holding `(a, b)` shared by many
        layers (the "coarse" version); leave `a`, `b`, `compander`,
        `learnable` at their defaults when given.
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
>>> y = layer(keras.random.normal({input_shape}))
>>> y.shape
{output_shape}

Reference: Cakaj, Mehnert, Yang, "Weight Compander: A Simple Weight
Reparameterization for Regularization", IJCNN 2023, arXiv:2306.16993.
"""


def _document(cls):
    parent = cls.__bases__[-1].__name__
    example, input_shape, output_shape = DOC_EXAMPLES[cls.__bases__[-1]]
    separable = "Separable" in parent
    cls.__doc__ = _DOC.format(
        parent=parent,
        name=cls.__name__,
        s="s" if separable else "",
        are="are" if separable else "is",
        raw="depthwise_v, pointwise_v" if separable else "v",
        kernels=(
            "depthwise_kernel, pointwise_kernel" if separable else "kernel"
        ),
        example=example,
        input_shape=input_shape,
        output_shape=output_shape,
    )
    return keras.saving.register_keras_serializable(package="keras_wc")(cls)


class WCDense(CompanderMixin, keras.layers.Dense):
    pass


class WCEinsumDense(CompanderMixin, keras.layers.EinsumDense):
    pass


class WCConv1D(CompanderMixin, keras.layers.Conv1D):
    pass


class WCConv2D(CompanderMixin, keras.layers.Conv2D):
    pass


class WCConv3D(CompanderMixin, keras.layers.Conv3D):
    pass


class WCConv1DTranspose(CompanderMixin, keras.layers.Conv1DTranspose):
    pass


class WCConv2DTranspose(CompanderMixin, keras.layers.Conv2DTranspose):
    pass


class WCConv3DTranspose(CompanderMixin, keras.layers.Conv3DTranspose):
    pass


class WCDepthwiseConv1D(CompanderMixin, keras.layers.DepthwiseConv1D):
    pass


class WCDepthwiseConv2D(CompanderMixin, keras.layers.DepthwiseConv2D):
    pass


class WCSeparableConv1D(CompanderMixin, keras.layers.SeparableConv1D):
    pass


class WCSeparableConv2D(CompanderMixin, keras.layers.SeparableConv2D):
    pass


for _cls in (
    WCDense,
    WCEinsumDense,
    WCConv1D,
    WCConv2D,
    WCConv3D,
    WCConv1DTranspose,
    WCConv2DTranspose,
    WCConv3DTranspose,
    WCDepthwiseConv1D,
    WCDepthwiseConv2D,
    WCSeparableConv1D,
    WCSeparableConv2D,
):
    _document(_cls)
