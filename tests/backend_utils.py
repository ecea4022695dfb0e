"""Backend-neutral helpers for the tests: gradients and data parallelism.

The suite runs on TensorFlow, JAX and PyTorch (`KERAS_BACKEND`); these
helpers do with each backend's own tools what the tests need.
"""

import keras
import numpy as np

BACKEND = keras.backend.backend()

# `jit_compile` for a test that trains a fresh model for a step or two, when
# compiling is not what it tests: the cheapest mode per backend. TensorFlow
# traces a graph (XLA's compile would cost more than the steps); JAX
# compiles the step with XLA, as it does by default (without it, JAX
# compiles every op of the step on its own: ResNet-50's first `fit` step
# took 22.7 s op by op, 7.9 s compiled, AMD EPYC).
CHEAPEST_JIT = BACKEND == "jax"


def gradients(compute, variables, jit=False):
    """Gradients of the scalar `compute()` with respect to `variables`.

    `compute` calls layers (which read the variables) and may add their
    `losses`; it is called once, under the backend's autodiff. With `jit`
    (JAX only, e.g. `CHEAPEST_JIT`), the gradient is XLA-compiled as one
    computation instead of run op by op.

    Returns:
        A list of numpy arrays (zeros for a variable `compute` ignores).
    """
    variables = list(variables)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = compute()
        grads = tape.gradient(
            loss,
            variables,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
    elif BACKEND == "jax":
        import jax

        def function(values):
            with keras.StatelessScope(
                state_mapping=list(zip(variables, values, strict=True)),
                collect_losses=True,
            ):
                return compute()

        grad = jax.jit(jax.grad(function)) if jit else jax.grad(function)
        grads = grad([v.value for v in variables])
    else:
        import torch

        loss = compute()
        grads = torch.autograd.grad(
            loss,
            [v.value for v in variables],
            allow_unused=True,
            materialize_grads=True,
        )
    return [np.asarray(keras.ops.convert_to_numpy(g)) for g in grads]


def apply_gradients(optimizer, grads, variables):
    """`optimizer.apply` with numpy gradients (as backend tensors)."""
    optimizer.apply(
        [keras.ops.convert_to_tensor(g) for g in grads], list(variables)
    )


def total_loss(outputs, model=None):
    """Σ outputs² (every output) plus the model's `losses`, as a tensor."""
    loss = sum(
        keras.ops.sum(keras.ops.square(keras.ops.cast(y, "float32")))
        for y in keras.tree.flatten(outputs)
    )
    if model is not None and model.losses:
        loss = loss + keras.ops.sum(keras.ops.stack(model.losses))
    return loss


def data_parallel(devices=2):
    """A `keras.distribution.DataParallel` over the first CPU devices (JAX,
    run with `--xla_force_host_platform_device_count=2`, see conftest)."""
    cpus = keras.distribution.list_devices("cpu")[:devices]
    assert len(cpus) == devices, cpus
    return keras.distribution.DataParallel(devices=cpus)
