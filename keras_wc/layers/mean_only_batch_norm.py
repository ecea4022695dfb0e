"""Mean-only batch normalization (Salimans & Kingma 2016, §4)."""

import math

import keras
import numpy as np
from keras import ops

from keras_wc import backend
from keras_wc.layers.wn_base import in_init_pass


def _get(module, name, identifier, owner):
    """`module.get(identifier)`, with an error naming the argument."""
    try:
        return module.get(identifier)
    except (ValueError, TypeError) as error:
        kind = module.__name__.split(".")[-1][:-1]  # "initializer", ...
        raise type(error)(
            f"{owner}: `{name}` must be a Keras {kind} (a name, a config "
            f"or an instance). Received: {name}={identifier!r}"
        ) from error


@keras.saving.register_keras_serializable(package="keras_wc")
class MeanOnlyBatchNorm(keras.layers.Layer):
    """Subtracts the batch mean per channel and adds a learned bias.

    Mean-only batch normalization (Salimans & Kingma, NeurIPS 2016, §4),
    meant to follow a weight-normalized layer built with `use_bias=False`:

    * training: `y = x − μ_batch + β`, and the moving mean is updated as
      `m ← momentum·m + (1 − momentum)·μ_batch`;
    * inference: `y = x − m + β`.

    There is no division by a standard deviation and `β` is the only
    trainable weight. The mean is computed in float32 (also under mixed
    precision) over every axis but `axis`. Under a `tf.distribute` strategy
    the batch mean is synchronized: sums and counts are all-reduced over
    the replicas, so each replica normalizes with the global-batch mean and
    the moving mean stays identical on all replicas.

    Inside `keras_wc.initialize`'s init pass the layer uses the batch mean
    (as the reference code's init pass) and does not update its moving
    mean; a preceding WN layer then gets only its `g` from data init (it
    has no bias), so the block's pre-activations have mean 0 and standard
    deviation `init_scale` per channel on the init batch. As in Keras
    `BatchNormalization`, a layer with `trainable=False` uses its moving
    mean also in training.

    Args:
        axis: the channel axis (an int, not the batch axis 0).
        momentum: momentum of the moving mean, in [0, 1).
        center: whether to add the learned bias `β`.
        beta_initializer: initializer of `β`.
        moving_mean_initializer: initializer of the moving mean.
        beta_regularizer: optional regularizer of `β`.
        beta_constraint: optional constraint of `β`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Attributes:
        beta: the bias variable, `None` if `center=False`.
        moving_mean: the non-trainable float32 moving mean.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras_wc.WNConv2D(16, 3, use_bias=False, name="conv"),
    ...     keras_wc.MeanOnlyBatchNorm(),
    ...     keras.layers.LeakyReLU(0.1),
    ... ])
    >>> keras_wc.initialize(model, np.random.rand(32, 8, 8, 3))
    ['conv']

    Reference: Salimans, Kingma, "Weight Normalization: A Simple
    Reparameterization to Accelerate Training of Deep Neural Networks",
    NeurIPS 2016, arXiv:1602.07868.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.9,
        center=True,
        beta_initializer="zeros",
        moving_mean_initializer="zeros",
        beta_regularizer=None,
        beta_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = f"MeanOnlyBatchNorm '{self.name}'"
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(
                f"{owner}: `axis` must be an int. Received: axis={axis!r}"
            )
        if isinstance(momentum, bool) or not isinstance(
            momentum, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"{owner}: `momentum` must be a number in [0, 1). "
                f"Received: momentum={momentum!r}"
            )
        if not (math.isfinite(momentum) and 0 <= momentum < 1):
            raise ValueError(
                f"{owner}: `momentum` must be in [0, 1). "
                f"Received: momentum={momentum}"
            )
        if not isinstance(center, bool):
            raise TypeError(
                f"{owner}: `center` must be True or False. "
                f"Received: center={center!r}"
            )
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.center = center
        self.beta_initializer = _get(
            keras.initializers, "beta_initializer", beta_initializer, owner
        )
        self.moving_mean_initializer = _get(
            keras.initializers,
            "moving_mean_initializer",
            moving_mean_initializer,
            owner,
        )
        self.beta_regularizer = _get(
            keras.regularizers, "beta_regularizer", beta_regularizer, owner
        )
        self.beta_constraint = _get(
            keras.constraints, "beta_constraint", beta_constraint, owner
        )
        self.beta = None
        self.moving_mean = None

    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"MeanOnlyBatchNorm '{self.name}': `axis` must be a channel "
                f"axis of the input of rank {rank}, not the batch axis. "
                f"Received: axis={self.axis}"
            )
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(
                f"MeanOnlyBatchNorm '{self.name}': the channel axis "
                f"{self.axis} must have a known size. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        self._channel_axis = self.axis % rank
        self._reduction_axes = [
            a for a in range(rank) if a != self._channel_axis
        ]
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=(channels,),
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )
        self.moving_mean = self.add_weight(
            name="moving_mean",
            shape=(channels,),
            initializer=self.moving_mean_initializer,
            dtype="float32",
            trainable=False,
            autocast=False,
        )

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        init_pass = in_init_pass(x)
        if init_pass or (training and self.trainable):
            mean = self._batch_mean(x)
            if training and not init_pass:
                self.moving_mean.assign(
                    self.moving_mean * self.momentum
                    + mean * (1.0 - self.momentum)
                )
        else:
            mean = ops.cast(self.moving_mean, "float32")
        shape = [1] * len(x.shape)
        shape[self._channel_axis] = -1
        y = x - ops.reshape(mean, shape)
        if self.center:
            y = y + ops.reshape(ops.cast(self.beta, "float32"), shape)
        return ops.cast(y, self.compute_dtype)

    def _batch_mean(self, x):
        total = ops.sum(x, axis=self._reduction_axes)
        count = ops.cast(ops.size(x), "float32") / x.shape[self._channel_axis]
        # In a replica context (e.g. `fit` under MirroredStrategy) the sums
        # and counts of all replicas are added, so every replica sees the
        # global-batch mean and the moving means stay identical. Under JAX's
        # DataParallel the sums are over the global batch already.
        total, count = backend.cross_replica_sum(total, count)
        return ops.divide_no_nan(total, count)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "momentum": self.momentum,
                "center": self.center,
                "beta_initializer": keras.initializers.serialize(
                    self.beta_initializer
                ),
                "moving_mean_initializer": keras.initializers.serialize(
                    self.moving_mean_initializer
                ),
                "beta_regularizer": keras.regularizers.serialize(
                    self.beta_regularizer
                ),
                "beta_constraint": keras.constraints.serialize(
                    self.beta_constraint
                ),
            }
        )
        return config
