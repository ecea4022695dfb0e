"""Wide residual networks (WRN-d-k) for CIFAR.

Pre-activation basic blocks (normalization, ReLU, 3x3 convolution, twice)
in three groups of `(d - 4) / 6` blocks with `16k`, `32k`, `64k` filters
after a 3x3 stem with 16 filters; a final normalization and ReLU, global
average pooling and a dense classifier. Where a block changes the shape,
its shortcut is a 1x1 convolution of the block's pre-activated input (as in
the authors' code); otherwise it is the identity. Dropout sits between the
two convolutions of a block, after the second ReLU (the WRN paper's
"conv-dropout-conv", as in the authors' Torch code).

Reference: Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016,
arXiv:1605.07146.
"""

import keras

from models import _layers

# === Blocks ===


def apply_wide_block(x, filters, strides, *, dropout, norm, initializer, name):
    """A pre-activation basic block with dropout between its convolutions.

    Args:
        x: the input tensor.
        filters: the output channels of both convolutions.
        strides: the stride of the first convolution and the shortcut.
        dropout: the dropout rate (0 adds no dropout layer).
        norm: `"bn"`, `"mobn"` or `"none"`.
        initializer: a function returning a fresh kernel initializer.
        name: the prefix of every sub-layer name.

    Returns:
        The output tensor (the residual sum, not activated).
    """
    use_bias = norm == "none"
    preact = _layers.apply_norm(x, norm, f"{name}_{norm}1")
    preact = keras.layers.ReLU(name=f"{name}_relu1")(preact)
    if strides == 1 and x.shape[-1] == filters:
        shortcut = x
    else:
        shortcut = _layers.apply_conv(
            preact,
            filters,
            1,
            strides=strides,
            use_bias=use_bias,
            initializer=initializer,
            name=f"{name}_shortcut_conv",
        )
    y = _layers.apply_conv(
        preact,
        filters,
        3,
        strides=strides,
        use_bias=use_bias,
        initializer=initializer,
        name=f"{name}_conv1",
    )
    y = _layers.apply_norm(y, norm, f"{name}_{norm}2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    if dropout > 0:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = _layers.apply_conv(
        y,
        filters,
        3,
        use_bias=use_bias,
        initializer=initializer,
        name=f"{name}_conv2",
    )
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


# === Backbone ===


def wide_resnet(
    depth,
    widen_factor,
    *,
    num_classes,
    input_shape,
    norm,
    dropout,
    kernel_initializer,
    name,
):
    """Build WRN-`depth`-`widen_factor`.

    Args:
        depth: the network depth `d`; `(d - 4)` must be divisible by 6.
        widen_factor: the width multiplier `k` (a positive integer).
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`.
        norm: `"bn"`, `"mobn"` or `"none"`; convolutions have a bias only
            with `"none"`.
        dropout: the rate of the dropout inside every block.
        kernel_initializer: the initializer of every convolution and of the
            classifier.
        name: the model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(
            "`depth` must be an integer >= 10 with (depth - 4) divisible "
            f"by 6. Received: depth={depth!r}"
        )
    if not isinstance(widen_factor, int) or widen_factor < 1:
        raise ValueError(
            "`widen_factor` must be a positive integer. "
            f"Received: widen_factor={widen_factor!r}"
        )
    _layers.check_num_classes(num_classes)
    input_shape = _layers.check_input_shape(input_shape)
    _layers.check_norm(norm)
    _layers.check_rate(dropout, "dropout")
    initializer = _layers.initializer_factory(kernel_initializer)
    blocks_per_group = (depth - 4) // 6

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="input")
    x = _layers.apply_conv(
        inputs,
        16,
        3,
        use_bias=norm == "none",
        initializer=initializer,
        name="stem_conv",
    )
    for group, filters in enumerate(
        (16 * widen_factor, 32 * widen_factor, 64 * widen_factor), start=1
    ):
        for index in range(1, blocks_per_group + 1):
            x = apply_wide_block(
                x,
                filters,
                2 if group > 1 and index == 1 else 1,
                dropout=dropout,
                norm=norm,
                initializer=initializer,
                name=f"group{group}_block{index}",
            )
    x = _layers.apply_norm(x, norm, f"final_{norm}")
    x = keras.layers.ReLU(name="final_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _layers.apply_dense(
        x, num_classes, initializer=initializer, name="predictions"
    )
    return keras.Model(inputs, outputs, name=name)


# === Variants ===


def wrn_28_10(
    num_classes=10,
    input_shape=(32, 32, 3),
    *,
    norm="bn",
    dropout=0.3,
    kernel_initializer="kaiming_uniform",
):
    """WRN-28-10: 4 blocks per group, widths 160/320/640, dropout 0.3.

    36,479,194 trainable parameters for 10 classes (= the PyTorch WRN-28-10
    count).

    Args:
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`, channels last.
        norm: `"bn"` (default), `"mobn"` or `"none"`.
        dropout: the in-block dropout rate, default 0.3 (WC paper §IV-A).
        kernel_initializer: default `"kaiming_uniform"` (He-uniform), the WC
            paper's ResNet initializer.

    Returns:
        A `keras.Model` named `"wrn_28_10"` returning logits.
    """
    return wide_resnet(
        28,
        10,
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
        dropout=dropout,
        kernel_initializer=kernel_initializer,
        name="wrn_28_10",
    )
