"""VGG-16 and VGG-19 with batch normalization, for CIFAR.

The CIFAR variant the WC paper describes (§IV-A): the convolutional part of
VGG configurations D and E (3x3 convolution, normalization, ReLU; 2x2
max-pooling after each stage), which reduces a 32x32 image to 1x1x512,
then the classifier of chengyangfu/pytorch-vgg-cifar10, the PyTorch CIFAR
VGG whose initialization the paper quotes:

    Flatten -> Dropout(0.5) -> Dense(512) -> ReLU
            -> Dropout(0.5) -> Dense(512) -> ReLU -> Dense(num_classes)

That head has the "dropout in the fully connected layers" the paper
mentions (the single-`Linear` head of other CIFAR VGGs has none). As in that
code (and torchvision's `vgg16_bn`), the convolutions keep their bias under
batch normalization, so the parameter counts match PyTorch's.

Reference: Simonyan, Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015, arXiv:1409.1556.
"""

import keras

from models import _layers

_CONFIGS = {
    "vgg16_bn": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19_bn": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
_CLASSIFIER_UNITS = 512


# === Backbone ===


def vgg(
    stages,
    *,
    num_classes,
    input_shape,
    norm,
    dropout,
    kernel_initializer,
    dense_initializer,
    name,
):
    """Build a CIFAR VGG.

    Args:
        stages: the filters of every convolution, one tuple per stage; each
            stage ends with a 2x2 max-pooling.
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`; height and width must be
            at least `2 ** len(stages)`.
        norm: `"bn"`, `"mobn"` or `"none"`, after every convolution. The
            convolutions have a bias except with `"mobn"`, whose `beta` is
            the bias.
        dropout: the rate of the two classifier dropouts (0 removes them).
        kernel_initializer: the initializer of the convolutions.
        dense_initializer: the initializer of the dense layers.
        name: the model name.

    Returns:
        A functional `keras.Model` mapping images to logits.
    """
    _layers.check_num_classes(num_classes)
    input_shape = _layers.check_input_shape(
        input_shape, min_size=2 ** len(stages)
    )
    _layers.check_norm(norm)
    _layers.check_rate(dropout, "dropout")
    conv_initializer = _layers.initializer_factory(kernel_initializer)
    fc_initializer = _layers.initializer_factory(
        dense_initializer, "dense_initializer"
    )

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for stage, filters_list in enumerate(stages, start=1):
        for index, filters in enumerate(filters_list, start=1):
            prefix = f"block{stage}"
            x = _layers.apply_conv(
                x,
                filters,
                3,
                use_bias=norm != "mobn",
                initializer=conv_initializer,
                name=f"{prefix}_conv{index}",
            )
            x = _layers.apply_norm(x, norm, f"{prefix}_{norm}{index}")
            x = keras.layers.ReLU(name=f"{prefix}_relu{index}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"fc{index}_dropout")(x)
        x = _layers.apply_dense(
            x,
            _CLASSIFIER_UNITS,
            initializer=fc_initializer,
            name=f"fc{index}",
        )
        x = keras.layers.ReLU(name=f"fc{index}_relu")(x)
    outputs = _layers.apply_dense(
        x, num_classes, initializer=fc_initializer, name="predictions"
    )
    return keras.Model(inputs, outputs, name=name)


# === Variants ===


def vgg16_bn(
    num_classes=10,
    input_shape=(32, 32, 3),
    *,
    norm="bn",
    dropout=0.5,
    kernel_initializer="kaiming_normal_fan_out",
    dense_initializer="kaiming_uniform",
):
    """VGG-16 (configuration D) with batch normalization, for CIFAR.

    15,253,578 trainable parameters for 10 classes at 32x32 (= PyTorch's
    count for the same network).

    Args:
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`, height and width >= 32.
        norm: `"bn"` (default), `"mobn"` or `"none"`.
        dropout: the rate of the two classifier dropouts, default 0.5.
        kernel_initializer: the convolutions' initializer, default
            `"kaiming_normal_fan_out"`: N(0, sqrt(2/n)) with
            n = 3 * 3 * out_channels (WC paper §IV-A).
        dense_initializer: the dense layers' initializer, default
            `"kaiming_uniform"` (He-uniform, WC paper §IV-A).

    Returns:
        A `keras.Model` named `"vgg16_bn"` returning logits.
    """
    return vgg(
        _CONFIGS["vgg16_bn"],
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
        dropout=dropout,
        kernel_initializer=kernel_initializer,
        dense_initializer=dense_initializer,
        name="vgg16_bn",
    )


def vgg19_bn(
    num_classes=10,
    input_shape=(32, 32, 3),
    *,
    norm="bn",
    dropout=0.5,
    kernel_initializer="kaiming_normal_fan_out",
    dense_initializer="kaiming_uniform",
):
    """VGG-19 (configuration E) with batch normalization, for CIFAR.

    20,565,834 trainable parameters for 10 classes at 32x32 (= PyTorch's
    count for the same network). Arguments as in `vgg16_bn`.
    """
    return vgg(
        _CONFIGS["vgg19_bn"],
        num_classes=num_classes,
        input_shape=input_shape,
        norm=norm,
        dropout=dropout,
        kernel_initializer=kernel_initializer,
        dense_initializer=dense_initializer,
        name="vgg19_bn",
    )
