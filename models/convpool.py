"""ConvPool-CNN-C as modified by Salimans & Kingma for CIFAR-10.

The network of the weight normalization paper's CIFAR-10 experiment (WN
report Fig. 8; research/algorithms.md §C.4, from the authors' Lasagne
code), with leaky ReLU `max(x, 0.1 x)`:

    GaussianNoise(0.15)
    3 x [conv 3x3, 96, same]   MaxPool 2x2 / 2   Dropout(0.5)
    3 x [conv 3x3, 192, same]  MaxPool 2x2 / 2   Dropout(0.5)
    conv 3x3, 192, valid       2 x [conv 1x1, 192]
    GlobalAveragePooling       Dense(num_classes)

Every convolution and the dense layer is followed by the selected
normalization, before the activation. Weight normalization is not an
option here: build with `norm="none"` (the layers keep their bias) or
`norm="mobn"`, then apply `keras_wc.convert(model, method="wn")`.

Reference: Salimans, Kingma, "Weight Normalization: A Simple
Reparameterization to Accelerate Training of Deep Neural Networks",
NeurIPS 2016, arXiv:1602.07868.
"""

import keras

from models import _layers

_LEAKY_SLOPE = 0.1


def convpool_cnn_c(
    num_classes=10,
    input_shape=(32, 32, 3),
    *,
    norm="none",
    dropout=0.5,
    noise_stddev=0.15,
    kernel_initializer="random_normal",
):
    """ConvPool-CNN-C (WN paper, §5.1).

    1,406,794 trainable parameters for 10 classes with `norm="none"`.

    Args:
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`, height and width >= 12.
        norm: `"none"` (default; the standard parameterization, or WN after
            conversion), `"bn"` or `"mobn"`, applied to every convolution
            and to the dense layer before the activation. With `"bn"` and
            `"mobn"` those layers have no bias (the normalization's `beta`
            is the bias).
        dropout: the rate of the two dropout layers, default 0.5.
        noise_stddev: the standard deviation of the Gaussian input noise,
            default 0.15 (0 removes the layer).
        kernel_initializer: default `"random_normal"`, Keras' N(0, 0.05),
            the `V` initializer of the authors' code.

    Returns:
        A `keras.Model` named `"convpool_cnn_c"` returning logits.
    """
    _layers.check_num_classes(num_classes)
    input_shape = _layers.check_input_shape(input_shape, min_size=12)
    _layers.check_norm(norm)
    _layers.check_rate(dropout, "dropout")
    if (
        not isinstance(noise_stddev, (int, float))
        or isinstance(noise_stddev, bool)
        or noise_stddev < 0
    ):
        raise ValueError(
            "`noise_stddev` must be a non-negative number. "
            f"Received: noise_stddev={noise_stddev!r}"
        )
    initializer = _layers.initializer_factory(kernel_initializer)
    use_bias = norm == "none"

    def conv_norm_act(x, filters, kernel_size, padding, prefix, index):
        x = _layers.apply_conv(
            x,
            filters,
            kernel_size,
            padding=padding,
            use_bias=use_bias,
            initializer=initializer,
            name=f"{prefix}_conv{index}",
        )
        x = _layers.apply_norm(x, norm, f"{prefix}_{norm}{index}")
        return keras.layers.LeakyReLU(
            negative_slope=_LEAKY_SLOPE, name=f"{prefix}_lrelu{index}"
        )(x)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if noise_stddev > 0:
        x = keras.layers.GaussianNoise(noise_stddev, name="noise")(x)
    for stage, filters in ((1, 96), (2, 192)):
        for index in (1, 2, 3):
            x = conv_norm_act(x, filters, 3, "same", f"block{stage}", index)
        x = keras.layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"block{stage}_dropout")(x)
    x = conv_norm_act(x, 192, 3, "valid", "block3", 1)
    x = conv_norm_act(x, 192, 1, "valid", "block3", 2)
    x = conv_norm_act(x, 192, 1, "valid", "block3", 3)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _layers.apply_dense(
        x,
        num_classes,
        use_bias=use_bias,
        initializer=initializer,
        name="predictions",
    )
    outputs = _layers.apply_norm(outputs, norm, f"predictions_{norm}")
    return keras.Model(inputs, outputs, name="convpool_cnn_c")
