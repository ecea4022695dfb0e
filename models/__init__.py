"""Reference models of the keras-wc experiments, by name.

Functional Keras models built from plain `keras.layers` (plus
`keras_wc.MeanOnlyBatchNorm` for `norm="mobn"`), returning logits. WC, PP
and WN are applied afterwards with `keras_wc.convert(model, method=...)`.

Example:

>>> import models
>>> model = models.build("resnet18", num_classes=100)
>>> model.output_shape
(None, 100)
>>> models.build("small_cnn", input_shape=(8, 8, 1)).output_shape
(None, 10)
"""

import inspect

from models.convpool import convpool_cnn_c
from models.resnet import resnet18, resnet34, resnet50, resnet50_imagenet
from models.small import mlp, small_cnn
from models.vgg import vgg16_bn, vgg19_bn
from models.wide_resnet import wrn_28_10

_REGISTRY = {
    "convpool_cnn_c": convpool_cnn_c,
    "mlp": mlp,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet50_imagenet": resnet50_imagenet,
    "small_cnn": small_cnn,
    "vgg16_bn": vgg16_bn,
    "vgg19_bn": vgg19_bn,
    "wrn_28_10": wrn_28_10,
}


def available():
    """Return the sorted names `build` accepts."""
    return sorted(_REGISTRY)


def defaults(name):
    """Return the keyword options of model `name` and their defaults.

    Args:
        name: a name from `available()`.

    Returns:
        A dict `{option: default}`, without `num_classes` and `input_shape`.
    """
    parameters = inspect.signature(_builder(name)).parameters
    return {
        key: parameter.default
        for key, parameter in parameters.items()
        if key not in ("num_classes", "input_shape")
    }


def build(name, num_classes=10, input_shape=None, **options):
    """Build the model registered as `name`.

    Args:
        name: a name from `available()`.
        num_classes: the number of output logits.
        input_shape: `(height, width, channels)`; `None` uses the model's
            natural input, (32, 32, 3) for the CIFAR models and
            (28, 28, 1) for `small_cnn` and `mlp`.
        **options: the model's keyword options (see `defaults(name)`), e.g.
            `norm="mobn"`, `dropout=0.0`, `kernel_initializer="he_normal"`.

    Returns:
        A functional `keras.Model` named `name`, mapping images to logits.

    Raises:
        ValueError: `name` is not registered, or an option value is invalid.
        TypeError: an option is not one of the model's options.
    """
    builder = _builder(name)
    valid = sorted(defaults(name))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"Model {name!r} got unknown option(s) {unknown}. "
            f"Valid options: {valid}."
        )
    if input_shape is not None:
        options["input_shape"] = input_shape
    return builder(num_classes=num_classes, **options)


def _builder(name):
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"`name` must be one of {available()}. Received: name={name!r}"
        )
    return _REGISTRY[name]


__all__ = ["available", "build", "defaults"]
