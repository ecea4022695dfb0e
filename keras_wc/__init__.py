"""keras-wc: weight reparameterization for Keras 3.

Weight compander (WC), powerpropagation (PP), weight normalization (WN) with
data-dependent init, and mean-only batch norm, as drop-in subclasses of the
Keras kernel layers.
"""

from keras_wc import companders, optimizers
from keras_wc.layers.compander import SharedCompander
from keras_wc.layers.wc import (
    WCConv1D,
    WCConv1DTranspose,
    WCConv2D,
    WCConv2DTranspose,
    WCConv3D,
    WCConv3DTranspose,
    WCDense,
    WCDepthwiseConv1D,
    WCDepthwiseConv2D,
    WCEinsumDense,
    WCSeparableConv1D,
    WCSeparableConv2D,
)
from keras_wc.version import __version__
from keras_wc.weight_decay import l2_from_pytorch

__all__ = [
    "SharedCompander",
    "WCConv1D",
    "WCConv1DTranspose",
    "WCConv2D",
    "WCConv2DTranspose",
    "WCConv3D",
    "WCConv3DTranspose",
    "WCDense",
    "WCDepthwiseConv1D",
    "WCDepthwiseConv2D",
    "WCEinsumDense",
    "WCSeparableConv1D",
    "WCSeparableConv2D",
    "__version__",
    "companders",
    "l2_from_pytorch",
    "optimizers",
]
