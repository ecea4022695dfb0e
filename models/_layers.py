"""Layer factories and argument checks shared by the model builders.

Every builder in `models/` creates its layers through these helpers, so the
conventions below hold for all of them:

- Batch normalization uses PyTorch's defaults (`momentum=0.9` in Keras terms,
  i.e. PyTorch `momentum=0.1`, and `epsilon=1e-5`), because the WC paper's
  numbers come from PyTorch models.
- A strided convolution pads symmetrically like PyTorch (`ZeroPadding2D`
  followed by a `"valid"` convolution). Keras' `padding="same"` would pad
  only bottom/right for even inputs, which shifts the sampling grid by one
  pixel against a strided 1x1 shortcut.
- Every kernel layer gets its own initializer instance, so no two layers
  share one seed.
"""

import keras

NORMS = ("none", "bn", "mobn")

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

INITIALIZER_ALIASES = {
    # He et al. 2015 uniform: U(-sqrt(6/fan_in), sqrt(6/fan_in)).
    "kaiming_uniform": {"class_name": "HeUniform", "config": {}},
    # N(0, sqrt(2/n)), n = kernel_h * kernel_w * out_channels (VGG, WC §IV).
    "kaiming_normal_fan_out": {
        "class_name": "VarianceScaling",
        "config": {
            "scale": 2.0,
            "mode": "fan_out",
            "distribution": "untruncated_normal",
        },
    },
    # PyTorch's nn.Conv2d / nn.Linear default, kaiming_uniform_(a=sqrt(5)):
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    "torch_default": {
        "class_name": "VarianceScaling",
        "config": {
            "scale": 1.0 / 3.0,
            "mode": "fan_in",
            "distribution": "uniform",
        },
    },
}


# === Argument checks ===


def check_num_classes(num_classes):
    if (
        not isinstance(num_classes, int)
        or isinstance(num_classes, bool)
        or num_classes < 1
    ):
        raise ValueError(
            "`num_classes` must be a positive integer. "
            f"Received: num_classes={num_classes!r}"
        )


def check_input_shape(input_shape, min_size=1):
    """Return `input_shape` as a tuple `(height, width, channels)`.

    Args:
        input_shape: a length-3 sequence of positive integers (channels
            last).
        min_size: the smallest height and width the architecture accepts.
    """
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1
            for d in input_shape
        )
    ):
        raise ValueError(
            "`input_shape` must be a tuple of three positive integers "
            "(height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"`input_shape` must have height and width >= {min_size} for "
            f"this model. Received: input_shape={tuple(input_shape)!r}"
        )
    return tuple(input_shape)


def check_norm(norm):
    if norm not in NORMS:
        raise ValueError(
            f"`norm` must be one of {NORMS}. Received: norm={norm!r}"
        )


def check_rate(rate, arg_name):
    if (
        not isinstance(rate, (int, float))
        or isinstance(rate, bool)
        or not 0.0 <= rate < 1.0
    ):
        raise ValueError(
            f"`{arg_name}` must be a number in [0, 1). "
            f"Received: {arg_name}={rate!r}"
        )


def initializer_factory(identifier, arg_name="kernel_initializer"):
    """Return a function that makes a fresh initializer on every call.

    Keras 3 initializers draw the same values on every call of one instance,
    so a single instance shared by two layers of equal kernel shape would
    give them identical weights. Each layer therefore gets its own copy.

    Args:
        identifier: a name from `INITIALIZER_ALIASES` (`"kaiming_uniform"`,
            `"kaiming_normal_fan_out"`, `"torch_default"`), or anything
            `keras.initializers.get` accepts (a name such as
            `"glorot_uniform"`, a config dict, an unseeded
            `keras.initializers.Initializer`).
        arg_name: the argument name used in error messages.

    Returns:
        A function of no arguments returning a new initializer.
    """
    if isinstance(identifier, str) and identifier in INITIALIZER_ALIASES:
        config = INITIALIZER_ALIASES[identifier]
        return lambda: keras.initializers.deserialize(config)
    try:
        initializer = keras.initializers.get(identifier)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`{arg_name}` must be one of {sorted(INITIALIZER_ALIASES)} or a "
            "Keras initializer identifier. "
            f"Received: {arg_name}={identifier!r}"
        ) from error
    if not isinstance(initializer, keras.initializers.Initializer):
        raise ValueError(
            f"`{arg_name}` must be one of {sorted(INITIALIZER_ALIASES)} or a "
            "Keras initializer identifier. "
            f"Received: {arg_name}={identifier!r}"
        )
    config = keras.initializers.serialize(initializer)
    if config["config"].get("seed") is not None:
        raise ValueError(
            f"`{arg_name}` must be unseeded: a seeded initializer gives every "
            "layer of the same kernel shape identical weights. Seed the "
            "build with `keras.utils.set_random_seed` instead. "
            f"Received: {arg_name}={identifier!r}"
        )
    return lambda: keras.initializers.deserialize(config)


# === Layer factories ===


def apply_norm(x, norm, name):
    """Apply the normalization selected by `norm` ("none" returns `x`)."""
    if norm == "bn":
        return keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
        )(x)
    if norm == "mobn":
        # Imported here so that the other norms work without this layer.
        from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm

        return MeanOnlyBatchNorm(momentum=BN_MOMENTUM, name=name)(x)
    return x


def apply_conv(
    x,
    filters,
    kernel_size,
    *,
    strides=1,
    padding="same",
    use_bias,
    initializer,
    name,
):
    """A `Conv2D` with PyTorch-style symmetric padding when strided.

    Args:
        x: the input tensor (channels last).
        filters: the number of output channels.
        kernel_size: an odd integer.
        strides: an integer.
        padding: `"same"` (pad `kernel_size // 2` on every side, as PyTorch's
            `padding=k//2`) or `"valid"`.
        use_bias: whether the convolution has a bias.
        initializer: a function returning a fresh kernel initializer.
        name: the layer name; a padding layer is named `f"{name}_pad"`.
    """
    if padding == "same" and strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(
            padding=kernel_size // 2, name=f"{name}_pad"
        )(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=initializer(),
        name=name,
    )(x)


def apply_dense(x, units, *, use_bias=True, initializer, name):
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=initializer(),
        name=name,
    )(x)
