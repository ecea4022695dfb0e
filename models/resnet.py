"""CIFAR-style ResNet-18/34/50.

The variant used by the WC paper (§IV-A) and by the common PyTorch CIFAR
code (kuangliu/pytorch-cifar): a 3x3 stride-1 stem with 64 filters and no
max-pool, four stages of 64/128/256/512 filters (stride 2 from stage 2 on,
in the first block of the stage, on its 3x3 convolution), a projection
shortcut (1x1 convolution + normalization) wherever the shape changes,
global average pooling and a dense classifier.

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016, arXiv:1512.03385.
"""

import keras

from models import _layers

_STAGE_FILTERS = (64, 128, 256, 512)
_BOTTLENECK_EXPANSION = 4


# === Blocks ===


def apply_basic_block(x, filters, strides, *, norm, initializer, name):
    """Two 3x3 convolutions with an identity or projection shortcut.

    Args:
        x: the input tensor.
        filters: the output channels of both convolutions.
        strides: the stride of the first convolution and the shortcut.
        norm: `"bn"`, `"mobn"` or `"none"`.
        initializer: a function returning a fresh kernel initializer.
        name: the prefix of every sub-layer name.

    Returns:
        The output tensor, `filters` channels.
    """
    use_bias = norm == "none"
    shortcut = _apply_shortcut(
        x, filters, strides, norm=norm, initializer=initializer, name=name
    )
    y = _layers.apply_conv(
        x,
        filters,
        3,
        strides=strides,
        use_bias=use_bias,
        initializer=initializer,
        name=f"{name}_conv1",
    )
    y = _layers.apply_norm(y, norm, f"{name}_{norm}1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _layers.apply_conv(
        y,
        filters,
        3,
        use_bias=use_bias,
        initializer=initializer,
        name=f"{name}_conv2",
    )
    y = _layers.apply_norm(y, norm, f"{name}_{norm}2")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def apply_bottleneck_block(x, filters, strides, *, norm, initializer, name):
    """1x1 reduce, 3x3 (strided), 1x1 expand to `4 * filters` channels.

    Args:
        x: the input tensor.
        filters: the channels of the inner convolutions; the block outputs
            `4 * filters` channels.
        strides: the stride of the 3x3 convolution and the shortcut.
        norm: `"bn"`, `"mobn"` or `"none"`.
        initializer: a function returning a fresh kernel initializer.
        name: the prefix of every sub-layer name.

    Returns:
        The output tensor, `4 * filters` channels.
    """
    use_bias = norm == "none"
    out_filters = _BOTTLENECK_EXPANSION * filters
    shortcut = _apply_shortcut(
        x,
        out_filters,
        strides,
        norm=norm,
        initializer=initializer,
        name=name,
    )
    y = _layers.apply_conv(
        x,
        filters,
        1,
        use_bias=use_bias,
        initializer=initializer,
        name=f"{name}_conv1",
    )
    y = _layers.apply_norm(y, norm, f"{name}_{norm}1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _layers.apply_conv(
        y,
        filters,
        3,
        strides=strides,
        use_bias=use_bias,
        initializer=initializer,
        name=f"{name}_conv2",
    )
    y = _layers.apply_norm(y, norm, f"{name}_{norm}2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _layers.apply_conv(
        y,
        out_filters,
        1,
        use_bias=use_bias,
        initializer=initializer,
        name=f"{name}_conv3",
    )
    y = _layers.apply_norm(y, norm, f"{name}_{norm}3")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _apply_shortcut(x, filters, strides, *, norm, initializer, name):
    if strides == 1 and x.shape[-1] == filters:
        return x
    shortcut = _layers.apply_conv(
        x,
        filters,
        1,
        strides=strides,
        use_bias=norm == "none",
        initializer=initializer,
        name=f"{name}_shortcut_conv",
    )
    return _layers.apply_norm(shortcut, norm, f"{name}_shortcut_{norm}")


# === Backbone ===


def resnet(
    block,
    stack_sizes,
    *,
    num_classes,
    input_shape,
    norm,
    kernel_initializer,
    name,
    stem="cifar",
):
    """Build a ResNet (CIFAR-style stem by default).

    Args:
        block: `"basic"` or `"bottleneck"`.
        stack_sizes: the number of blocks in each of the four stages.
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`.
        norm: `"bn"`, `"mobn"` or `"none"`; applied after every convolution.
            Convolutions have a bias only with `"none"`.
        kernel_initializer: the initializer of every convolution and of the
            classifier (see `models._layers.initializer_factory`).
        name: the model name.
        stem: `"cifar"` (3×3 stride-1 conv, no max-pool) or `"imagenet"`
            (7×7 stride-2 conv + 3×3 stride-2 max-pool, He et al. 2016),
            for 224-pixel inputs.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    if stem not in ("cifar", "imagenet"):
        raise ValueError(
            f"`stem` must be 'cifar' or 'imagenet'. Received: stem={stem!r}"
        )
    if block not in ("basic", "bottleneck"):
        raise ValueError(
            "`block` must be 'basic' or 'bottleneck'. "
            f"Received: block={block!r}"
        )
    _layers.check_num_classes(num_classes)
    input_shape = _layers.check_input_shape(input_shape)
    _layers.check_norm(norm)
    initializer = _layers.initializer_factory(kernel_initializer)
    apply_block = (
        apply_basic_block if block == "basic" else apply_bottleneck_block
    )

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="input")
    x = _layers.apply_conv(
        inputs,
        64,
        3 if stem == "cifar" else 7,
        strides=1 if stem == "cifar" else 2,
        use_bias=norm == "none",
        initializer=initializer,
        name="stem_conv",
    )
    x = _layers.apply_norm(x, norm, f"stem_{norm}")
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem == "imagenet":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for stage, (filters, num_blocks) in enumerate(
        zip(_STAGE_FILTERS, stack_sizes, strict=True), start=1
    ):
        for index in range(1, num_blocks + 1):
            x = apply_block(
                x,
                filters,
                2 if stage > 1 and index == 1 else 1,
                norm=norm,
                initializer=initializer,
                name=f"stage{stage}_block{index}",
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _layers.apply_dense(
        x, num_classes, initializer=initializer, name="predictions"
    )
    return keras.Model(inputs, outputs, name=name)


# === Variants ===


def resnet18(
    num_classes=10,
    input_shape=(32, 32, 3),
    *,
    norm="bn",
    kernel_initializer="kaiming_uniform",
):
    """ResNet-18 for CIFAR: basic blocks [2, 2, 2, 2].

    11,173,962 trainable parameters for 10 classes, exactly the PyTorch
    CIFAR model's parameter count (BN moving statistics are non-trainable in
    Keras and are not parameters in PyTorch).

    Args:
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`, channels last.
        norm: `"bn"` (default), `"mobn"` or `"none"`.
        kernel_initializer: default `"kaiming_uniform"`, He-uniform as in
            the WC paper (§IV-A, citing He et al.); `"torch_default"` gives
            PyTorch's layer default instead.

    Returns:
        A `keras.Model` named `"resnet18"` returning logits.
    """
    return resnet(
        "basic",
        (2, 2, 2, 2),
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
        kernel_initializer=kernel_initializer,
        name="resnet18",
    )


def resnet34(
    num_classes=10,
    input_shape=(32, 32, 3),
    *,
    norm="bn",
    kernel_initializer="kaiming_uniform",
):
    """ResNet-34 for CIFAR: basic blocks [3, 4, 6, 3].

    21,282,122 trainable parameters for 10 classes (= PyTorch's count).
    Arguments as in `resnet18`.
    """
    return resnet(
        "basic",
        (3, 4, 6, 3),
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
        kernel_initializer=kernel_initializer,
        name="resnet34",
    )


def resnet50(
    num_classes=10,
    input_shape=(32, 32, 3),
    *,
    norm="bn",
    kernel_initializer="kaiming_uniform",
):
    """ResNet-50 for CIFAR: bottleneck blocks [3, 4, 6, 3], expansion 4.

    23,520,842 trainable parameters for 10 classes (= PyTorch's count).
    Arguments as in `resnet18`.
    """
    return resnet(
        "bottleneck",
        (3, 4, 6, 3),
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
        kernel_initializer=kernel_initializer,
        name="resnet50",
    )


def resnet50_imagenet(
    num_classes=1000,
    input_shape=(224, 224, 3),
    *,
    norm="bn",
    kernel_initializer="kaiming_uniform",
):
    """ResNet-50 with the ImageNet stem (7×7/2 conv + 3×3/2 max-pool).

    The network of the WC paper's TinyImageNet and ImageNet runs (Tables IV,
    V) on 224-pixel crops; 25,557,032 trainable parameters for 1000 classes
    (= torchvision's `resnet50`). Arguments as in `resnet18`.
    """
    return resnet(
        "bottleneck",
        (3, 4, 6, 3),
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
        kernel_initializer=kernel_initializer,
        name="resnet50_imagenet",
        stem="imagenet",
    )
