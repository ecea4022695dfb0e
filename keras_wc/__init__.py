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
from keras_wc.layers import layer_types as _layer_types
from keras_wc.layers import wc_layers as _wc_layers
from keras_wc.layers import wn_layers as _wn_layers
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm
from keras_wc.layers.tfa_compat import WeightNormalization
from keras_wc.layers.wc_base import SharedCompander
from keras_wc.version import __version__
from keras_wc.weight_decay import l2_from_pytorch

__all__ = [
    "ConversionReport",
    "MeanOnlyBatchNorm",
    "SharedCompander",
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

# The WC* and WN* layer classes, one per row of the table of layer types
# (`keras_wc.layers.layer_types`) that Keras exports.
_LAYERS = {
    name: cls
    for name, cls in {**_wc_layers.CLASSES, **_wn_layers.CLASSES}.items()
    if _layer_types.is_public(cls)
}
globals().update(_LAYERS)
__all__ = sorted(__all__ + list(_LAYERS))
