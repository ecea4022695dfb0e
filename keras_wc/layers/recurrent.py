"""Recurrent layers (`LSTM`, `GRU`, `SimpleRNN`, `ConvLSTM1D/2D/3D`) with a
reparameterized cell.

Keras builds the cell of an `LSTM` inside the layer's constructor from the
layer's own arguments, and the layer's config holds those arguments, not the
cell's. The keras_wc form of each recurrent layer therefore takes the
method's arguments too, turns its cell into the matching keras_wc cell
(`WCLSTMCell`, `WNGRUCell`, ...) and writes the arguments into its config.

It also computes the cell's effective kernels once per call, before the
loop over time steps (`ReparameterizedLayer.call_scope`): the cell reads
`kernel` and `recurrent_kernel` at every step, several times per step for
`implementation=1`.
"""

from keras_wc import internals
from keras_wc.layers.layer_types import RECURRENT_LAYERS, plain_parent
from keras_wc.layers.reparameterized import check_adoptable, mark_change


class RecurrentMixin:
    """Mixin for a recurrent layer of the table of layer types (`LSTM`,
    `GRU`, `SimpleRNN`, `ConvLSTM1D/2D/3D`) with a reparameterized cell.

    Subclasses set `CELL_CLASS`, the keras_wc cell class (e.g.
    `WCLSTMCell`); every constructor argument of `CELL_CLASS`'s method
    (`a`, `b`, ... or `init_scale`, ...) is passed on to the cell.
    """

    CELL_CLASS = None

    def __init__(self, *args, **kwargs):
        options = {
            name: kwargs.pop(name)
            for name in self.CELL_CLASS._OPTION_NAMES
            if name in kwargs
        }
        super().__init__(*args, **kwargs)
        self.CELL_CLASS.adopt(self.cell, **options)

    def get_config(self):
        return {
            **super().get_config(),
            **self.cell.reparameterization_config(),
        }

    def inner_loop(self, sequences, initial_state, mask, training=False):
        with self.cell.call_scope():
            return super().inner_loop(
                sequences, initial_state, mask, training=training
            )

    @classmethod
    def adopt(cls, layer, *, keep_function=True, **options):
        """Turns a plain `LSTM`/`GRU`/`SimpleRNN` into `cls`, in place (its
        cell with `CELL_CLASS.adopt`); see `ReparameterizedLayer.adopt`."""
        parent = check_adoptable(cls, layer)
        if type(layer.cell) is not RECURRENT_LAYERS[parent]:
            raise TypeError(
                f"{cls.__name__}.adopt: the cell of '{layer.name}' is a "
                f"{type(layer.cell).__name__}, not a "
                f"{RECURRENT_LAYERS[parent].__name__}."
            )
        cls.CELL_CLASS.adopt(
            layer.cell, keep_function=keep_function, **options
        )
        internals.change_class(layer, cls)
        mark_change(layer, "adopted")
        return layer

    def release(self):
        """Turns the layer and its cell back into the plain Keras classes,
        in place; see `ReparameterizedLayer.release`."""
        self.cell.release()
        internals.change_class(self, plain_parent(type(self)))
        mark_change(self, "released")
        return self


def kernel_holder(layer):
    """The layer holding `layer`'s kernels: a recurrent layer's cell (a
    Keras `LSTM`/`GRU`/`SimpleRNN` or a keras_wc one), else `layer`."""
    if isinstance(layer, RecurrentMixin) or type(layer) in RECURRENT_LAYERS:
        return layer.cell
    return layer
