"""Every WC/WN layer's docstring example runs and prints what it says."""

import doctest

import keras
import pytest

import keras_wc
from keras_wc.layers import wc, wn

CLASSES = [
    getattr(module, name)
    for module in (wc, wn)
    for name in dir(module)
    if name.startswith(("WC", "WN"))
]


def test_every_layer_class_is_covered():
    # 12 kernel layers, 3 recurrent cells, 3 recurrent layers; WC and WN.
    assert len(CLASSES) == 36


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_docstring_example(cls):
    examples = doctest.DocTestParser().get_examples(cls.__doc__)
    assert len(examples) == 3
    namespace = {"keras": keras, "keras_wc": keras_wc}
    for example in examples[:2]:
        exec(example.source, namespace)
    got = repr(tuple(namespace["y"].shape))
    assert got == examples[2].want.strip(), (cls.__name__, got)
