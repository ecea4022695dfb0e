"""Every WC layer class through the shared harness, plus WC-specific checks."""

import pytest
from layer_harness import run_layer_test

import keras_wc

# (class, constructor arguments, input shape, output shape, kernels)
CASES = [
    (keras_wc.WCDense, {"units": 5}, (2, 3), (2, 5), 1),
    (
        keras_wc.WCEinsumDense,
        {"equation": "abc,cd->abd", "output_shape": (4, 5), "bias_axes": "d"},
        (2, 4, 3),
        (2, 4, 5),
        1,
    ),
    (
        keras_wc.WCConv1D,
        {"filters": 4, "kernel_size": 3},
        (2, 6, 3),
        (2, 4, 4),
        1,
    ),
    (
        keras_wc.WCConv2D,
        {"filters": 4, "kernel_size": 3, "padding": "same"},
        (2, 5, 5, 3),
        (2, 5, 5, 4),
        1,
    ),
    (
        keras_wc.WCConv3D,
        {"filters": 2, "kernel_size": 2},
        (2, 3, 3, 3, 2),
        (2, 2, 2, 2, 2),
        1,
    ),
    (
        keras_wc.WCConv1DTranspose,
        {"filters": 4, "kernel_size": 3},
        (2, 4, 3),
        (2, 6, 4),
        1,
    ),
    (
        keras_wc.WCConv2DTranspose,
        {"filters": 4, "kernel_size": 2, "strides": 2},
        (2, 3, 3, 3),
        (2, 6, 6, 4),
        1,
    ),
    (
        keras_wc.WCConv3DTranspose,
        {"filters": 2, "kernel_size": 2},
        (2, 2, 2, 2, 2),
        (2, 3, 3, 3, 2),
        1,
    ),
    (
        keras_wc.WCDepthwiseConv1D,
        {"kernel_size": 3, "depth_multiplier": 2},
        (2, 6, 3),
        (2, 4, 6),
        1,
    ),
    (
        keras_wc.WCDepthwiseConv2D,
        {"kernel_size": 3, "depth_multiplier": 2},
        (2, 5, 5, 3),
        (2, 3, 3, 6),
        1,
    ),
    (
        keras_wc.WCSeparableConv1D,
        {"filters": 4, "kernel_size": 3},
        (2, 6, 3),
        (2, 4, 4),
        2,
    ),
    (
        keras_wc.WCSeparableConv2D,
        {"filters": 4, "kernel_size": 3},
        (2, 5, 5, 3),
        (2, 3, 3, 4),
        2,
    ),
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
