"""keras-wc: weight reparameterization for Keras 3.

Weight compander (WC), powerpropagation (PP), weight normalization (WN) with
data-dependent init, and mean-only batch norm, as drop-in subclasses of the
Keras kernel layers.
"""

from keras_wc import callbacks, companders, native, optimizers
from keras_wc.checkpoints import load_plain_weights, save_plain_weights
from keras_wc.conversion import ConversionReport, convert
from keras_wc.exporting import export
from keras_wc.folding import fold
from keras_wc.initialization import initialize
from keras_wc.layers.compander import SharedCompander
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.wc import (
    WCGRU,
    WCLSTM,
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
    WCGRUCell,
    WCLSTMCell,
    WCSeparableConv1D,
    WCSeparableConv2D,
    WCSimpleRNN,
    WCSimpleRNNCell,
)
from keras_wc.layers.weight_normalization import WeightNormalization
from keras_wc.layers.wn import (
    WNGRU,
    WNLSTM,
    WNConv1D,
    WNConv1DTranspose,
    WNConv2D,
    WNConv2DTranspose,
    WNConv3D,
    WNConv3DTranspose,
    WNDense,
    WNDepthwiseConv1D,
    WNDepthwiseConv2D,
    WNEinsumDense,
    WNGRUCell,
    WNLSTMCell,
    WNSeparableConv1D,
    WNSeparableConv2D,
    WNSimpleRNN,
    WNSimpleRNNCell,
)
from keras_wc.version import __version__
from keras_wc.weight_decay import l2_from_pytorch

__all__ = [
    "ConversionReport",
    "MeanOnlyBatchNorm",
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
    "WCGRU",
    "WCGRUCell",
    "WCLSTM",
    "WCLSTMCell",
    "WCSeparableConv1D",
    "WCSeparableConv2D",
    "WCSimpleRNN",
    "WCSimpleRNNCell",
    "WNConv1D",
    "WNConv1DTranspose",
    "WNConv2D",
    "WNConv2DTranspose",
    "WNConv3D",
    "WNConv3DTranspose",
    "WNDense",
    "WNDepthwiseConv1D",
    "WNDepthwiseConv2D",
    "WNEinsumDense",
    "WNGRU",
    "WNGRUCell",
    "WNLSTM",
    "WNLSTMCell",
    "WNSeparableConv1D",
    "WNSeparableConv2D",
    "WNSimpleRNN",
    "WNSimpleRNNCell",
    "WeightNormalization",
    "__version__",
    "callbacks",
    "companders",
    "convert",
    "export",
    "fold",
    "initialize",
    "l2_from_pytorch",
    "load_plain_weights",
    "native",
    "optimizers",
    "save_plain_weights",
]
