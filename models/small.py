"""Small networks for CPU studies on 28x28x1 Fashion-MNIST and 8x8x1 digits.

Not from a paper: two cheap models that keep the layer types the WC paper
reparameterizes (`Conv2D`, `Dense`), so that WC, PP and WN can be compared
in seconds per epoch on two CPU cores.
"""

import keras

from models import _layers


def small_cnn(
    num_classes=10,
    input_shape=(28, 28, 1),
    *,
    norm="bn",
    dropout=0.0,
    kernel_initializer="kaiming_uniform",
):
    """A two-block CNN with a dense head.

        2 x [conv 3x3 same (32, then 64 filters), norm, ReLU, MaxPool 2x2]
        Flatten -> Dense(128) -> norm -> ReLU -> [Dropout] -> Dense

    421,866 trainable parameters at 28x28x1 and 53,226 at 8x8x1 for 10
    classes (with `norm="bn"`).

    Args:
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`, height and width >= 4.
        norm: `"bn"` (default), `"mobn"` or `"none"`, after the convolutions
            and the hidden dense layer; those layers have a bias only with
            `"none"`.
        dropout: the rate of a dropout before the classifier, default 0
            (no layer).
        kernel_initializer: default `"kaiming_uniform"` (He-uniform).

    Returns:
        A `keras.Model` named `"small_cnn"` returning logits.
    """
    _layers.check_num_classes(num_classes)
    input_shape = _layers.check_input_shape(input_shape, min_size=4)
    _layers.check_norm(norm)
    _layers.check_rate(dropout, "dropout")
    initializer = _layers.initializer_factory(kernel_initializer)
    use_bias = norm == "none"

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for stage, filters in ((1, 32), (2, 64)):
        x = _layers.apply_conv(
            x,
            filters,
            3,
            use_bias=use_bias,
            initializer=initializer,
            name=f"block{stage}_conv",
        )
        x = _layers.apply_norm(x, norm, f"block{stage}_{norm}")
        x = keras.layers.ReLU(name=f"block{stage}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _layers.apply_dense(
        x, 128, use_bias=use_bias, initializer=initializer, name="fc1"
    )
    x = _layers.apply_norm(x, norm, f"fc1_{norm}")
    x = keras.layers.ReLU(name="fc1_relu")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="fc1_dropout")(x)
    outputs = _layers.apply_dense(
        x, num_classes, initializer=initializer, name="predictions"
    )
    return keras.Model(inputs, outputs, name="small_cnn")


def mlp(
    num_classes=10,
    input_shape=(28, 28, 1),
    *,
    norm="none",
    kernel_initializer="kaiming_uniform",
):
    """A one-hidden-layer perceptron.

        Flatten -> Dense(256) -> [norm] -> ReLU -> Dense(num_classes)

    203,530 trainable parameters at 28x28x1 and 19,210 at 8x8x1 for 10
    classes.

    Args:
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`.
        norm: `"none"` (default), `"bn"` or `"mobn"` after the hidden dense
            layer, which then has no bias.
        kernel_initializer: default `"kaiming_uniform"` (He-uniform).

    Returns:
        A `keras.Model` named `"mlp"` returning logits.
    """
    _layers.check_num_classes(num_classes)
    input_shape = _layers.check_input_shape(input_shape)
    _layers.check_norm(norm)
    initializer = _layers.initializer_factory(kernel_initializer)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = _layers.apply_dense(
        x, 256, use_bias=norm == "none", initializer=initializer, name="fc1"
    )
    x = _layers.apply_norm(x, norm, f"fc1_{norm}")
    x = keras.layers.ReLU(name="fc1_relu")(x)
    outputs = _layers.apply_dense(
        x, num_classes, initializer=initializer, name="predictions"
    )
    return keras.Model(inputs, outputs, name="mlp")
