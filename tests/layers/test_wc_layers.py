"""Every WC layer class through the shared harness, plus WC-specific checks."""

import pytest
from layer_harness import run_layer_test

from keras_wc.layers import wc_layers
from keras_wc.layers.layer_types import LAYER_TYPES

# (class, constructor arguments, input shape, output shape, kernels): the
# test case of each row of the table of layer types.
CASES = [
    (
        wc_layers.CLASSES["WC" + row.parent.__name__],
        row.case.kwargs,
        row.case.input_shape,
        row.case.output_shape,
        len(row.case.norm_axes),
    )
    for row in LAYER_TYPES
    if row.case is not None
]
IDS = [case[0].__name__ for case in CASES]


@pytest.mark.parametrize(
    "cls,kwargs,in_shape,out_shape,kernels", CASES, ids=IDS
)
def test_layer_harness_fixed(cls, kwargs, in_shape, out_shape, kernels):
    run_layer_test(
        cls,
        {**kwargs, "a": 1.0, "b": 0.6},
        in_shape,
        out_shape,
        expected_num_trainable_weights=kernels + 1,
    )


@pytest.mark.parametrize(
    "cls,kwargs,in_shape,out_shape,kernels", CASES[:4], ids=IDS[:4]
)
def test_layer_harness_learnable(cls, kwargs, in_shape, out_shape, kernels):
    run_layer_test(
        cls,
        {**kwargs, "a": 0.8, "b": 1.0, "learnable": True},
        in_shape,
        out_shape,
        expected_num_trainable_weights=kernels + 3,
    )
