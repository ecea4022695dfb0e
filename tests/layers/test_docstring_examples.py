"""Every WC/WN layer's docstring example runs and prints what it says."""

import doctest

import keras
import pytest

import keras_wc
from keras_wc.layers import wc_layers, wn_layers
from keras_wc.layers.layer_types import is_public

CLASSES = [
    cls
    for module in (wc_layers, wn_layers)
    for cls in module.CLASSES.values()
    if is_public(cls)
]


def test_every_layer_class_is_covered():
    # 12 kernel layers, 3 recurrent cells, 6 recurrent layers; WC and WN.
    assert len(CLASSES) == 42


def test_a_cell_keras_does_not_export_is_documented_but_not_exported():
    for cls in (wc_layers.WCConvLSTMCell, wn_layers.WNConvLSTMCell):
        assert not is_public(cls)
        assert "ConvLSTM1D" in cls.__doc__
        assert not hasattr(keras_wc, cls.__name__)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_docstring_example(cls):
    examples = doctest.DocTestParser().get_examples(cls.__doc__)
    assert len(examples) == 3
    namespace = {"keras": keras, "keras_wc": keras_wc}
    for example in examples[:2]:
        exec(example.source, namespace)
    got = repr(tuple(namespace["y"].shape))
    assert got == examples[2].want.strip(), (cls.__name__, got)
