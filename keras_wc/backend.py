"""The few things keras_wc does differently per Keras backend.

Everything else in keras_wc is written with `keras.ops` and Keras APIs and
runs unchanged on TensorFlow, JAX and PyTorch. What cannot be, lives here:

* `custom_gradient`: one signature on every backend, several outputs
  included (Keras's `ops.custom_gradient` passes the upstream gradient
  differently per backend, and supports one output on PyTorch);
* `derivative`: the derivative of an elementwise function by automatic
  differentiation (for user companders without a closed form);
* `eager_scope`, `concrete_value`, `executing_eagerly`: running eagerly and
  reading a variable's
  value while a training step is being traced (TensorFlow's `tf.function`,
  a JAX `jit`);
* `cross_replica_sum`: sums over the replicas of a `tf.distribute`
  strategy (on JAX, `keras.distribution.DataParallel` computes global sums
  by itself; PyTorch runs on one device here);
* `compiled_by_xla`, `sum_of_squares`, `inner_product`, `norm`, `after`,
  `fused_by_xla`: what the lean training step needs to pick its formulas
  (whether XLA compiles the step being traced), reductions in one pass
  over a kernel, the order XLA runs them in, and XLA fusion nested in
  TensorFlow's graph mode.

TensorFlow is imported only when it is the backend (or when exporting).
"""

import contextlib

import keras
import numpy as np

from keras_wc import internals


def name():
    """The Keras backend: `"tensorflow"`, `"jax"` or `"torch"`."""
    return keras.backend.backend()


def custom_gradient(forward):
    """Decorator: `forward(*inputs) -> (outputs, grad)` with a custom
    gradient, on every backend.

    `outputs` is a tensor or a tuple of tensors; `grad(*upstreams)` gets one
    upstream gradient per output and returns one gradient per input (a
    tuple, or a tensor for one input). Inputs must be tensors (a fixed
    Python number belongs in the closure).
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.custom_gradient(forward)
    if backend == "jax":
        return _jax_custom_gradient(forward)
    if backend == "torch":
        return _torch_custom_gradient(forward)
    raise NotImplementedError(
        f"keras_wc supports the tensorflow, jax and torch backends. "
        f"Received: KERAS_BACKEND={backend!r}"
    )


def _jax_custom_gradient(forward):
    import jax

    def function(*inputs):
        outputs, grad = forward(*inputs)

        def vjp(upstream):
            upstreams = upstream if isinstance(outputs, tuple) else (upstream,)
            grads = grad(*upstreams)
            return grads if isinstance(grads, tuple) else (grads,)

        return outputs, vjp

    wrapped = jax.custom_gradient(function)

    def call(*inputs):
        return wrapped(*(_value(x) for x in inputs))

    return call


def _torch_custom_gradient(forward):
    import torch

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            outputs, ctx.grad = forward(*inputs)
            ctx.several = isinstance(outputs, tuple)
            return outputs

        @staticmethod
        def backward(ctx, *upstreams):
            grads = ctx.grad(*upstreams)
            return grads if isinstance(grads, tuple) else (grads,)

    def call(*inputs):
        return Function.apply(*(_value(x) for x in inputs))

    return call


def _value(x):
    """A Keras variable's tensor (custom gradients take tensors)."""
    return x.value if isinstance(x, keras.Variable) else x


def compiled_by_xla(tensor):
    """Whether `tensor` belongs to a computation XLA compiles: a JAX trace
    (Keras jits every JAX training step), or a TensorFlow function traced
    with `jit_compile=True` (or called from one). Not a PyTorch tensor
    (`torch.compile` fuses with its own compiler)."""
    backend = name()
    if backend == "jax":
        return internals.is_jax_tracer(tensor)
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly() and internals.tf_graph_in_xla()
    return False


def sum_of_squares(x):
    """Σx² over every entry, in one pass where the backend has the kernel
    (TensorFlow's `l2_loss`, PyTorch's `dot`; XLA fuses the square into
    the sum by itself)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return 2.0 * tf.nn.l2_loss(x)
    if backend == "torch":
        import torch

        flat = x.reshape(-1)
        return torch.dot(flat, flat)
    return keras.ops.sum(keras.ops.square(x))


def inner_product(x, y):
    """Σ x·y over every entry: one pass without a temporary product on
    PyTorch (`dot`); XLA fuses the product into the sum. (TensorFlow's
    one-pass candidates, `tensordot` and `einsum`, are matrix-vector
    products there, 4x slower than the product and the sum.)"""
    if name() == "torch":
        import torch

        return torch.dot(x.reshape(-1), y.reshape(-1))
    return keras.ops.sum(keras.ops.multiply(x, y))


def fused_by_xla(owner, key, function, *tensors):
    """`function(*tensors)`, compiled by XLA on TensorFlow in graph mode.

    TensorFlow's graph mode (a `tf.function` without `jit_compile`, the
    Keras default on CPU) runs one kernel per op, each a pass over its
    operands; an XLA-compiled function nested in the graph fuses its
    elementwise ops into one loop (`function` may assign variables: XLA
    updates them in place). One compiled function per `(owner, key)`,
    kept on `owner`, traced once. Elsewhere (eagerly, inside an
    XLA-compiled step, on JAX and PyTorch, and under a `tf.distribute`
    strategy, whose per-device variables a nested XLA function does not
    take) `function` is called as it is.
    """
    if name() != "tensorflow" or compiled_by_xla(tensors[0]):
        return function(*tensors)
    import tensorflow as tf

    if tf.executing_eagerly() or tf.distribute.has_strategy():
        return function(*tensors)
    cache = owner.__dict__.get("_keras_wc_xla_functions")
    if cache is None:
        cache = {}
        object.__setattr__(owner, "_keras_wc_xla_functions", cache)
    if key not in cache:
        cache[key] = tf.function(function, jit_compile=True, autograph=False)
    return cache[key](*(tf.convert_to_tensor(t) for t in tensors))


def after(value, *reductions):
    """`value`, made to depend on the scalars `reductions` where XLA
    compiles the step (elsewhere `value` itself).

    A reduction that reads a variable (∂L/∂b = −Σ(∂L/∂v)·v/b reads `v`)
    and the optimizer's update of that variable are siblings in the step's
    graph; XLA then copies the variable so that the update can write it in
    place while the reduction may still read it (on CPU: a full copy of the
    kernel per step). With the gradient that the update consumes computed
    after the reduction, the update runs after it and no copy is made.
    `value + 0·r` is a dependency XLA does not fold away (`0·r` is not 0
    for a non-finite `r`: then `value` is NaN, as the step that reads `r`
    is already non-finite).
    """
    if not reductions or not compiled_by_xla(value):
        return value
    total = reductions[0]
    for reduction in reductions[1:]:
        total = total + reduction
    return keras.ops.add(
        value, keras.ops.multiply(keras.ops.cast(total, value.dtype), 0.0)
    )


def recomputed(function, x, value):
    """`function(x)` computed again in JAX's compiled step, else `value`
    (`function(x)` computed before).

    Where a backward pass reads a value of the forward pass, XLA keeps it
    alive until then; a kernel-sized one then shares the step's memory with
    the kernel's gradient, which grows the step's temporaries by a kernel
    (and past glibc's 32 MiB mmap threshold, the step maps fresh pages
    every call: measured 2.3× the plain step on a 2048² MLP). Computed
    again from `x`, an elementwise `function` fuses into its consumer.
    The optimization barrier keeps XLA from merging the two computations
    back into one. TensorFlow has no such barrier; elsewhere nothing is
    compiled and `value` is as cheap.
    """
    if name() != "jax" or not compiled_by_xla(x):
        return value
    import jax

    return function(jax.lax.optimization_barrier(x))


def norm(x, axes):
    """‖x‖ = √(Σx²) over `axes` (kept, of size 1), in one pass on
    TensorFlow outside XLA (its `EuclideanNorm`, which XLA has no kernel
    for; XLA fuses the square into the sum by itself). Not PyTorch's
    `vector_norm`: over a leading axis it is ten times slower than the
    square and the sum (14 ms against 1.3 ms on a 2048² kernel)."""
    if name() == "tensorflow" and not compiled_by_xla(x):
        import tensorflow as tf

        return tf.math.reduce_euclidean_norm(
            x, axis=tuple(axes), keepdims=True
        )
    return keras.ops.sqrt(
        keras.ops.sum(keras.ops.square(x), axis=axes, keepdims=True)
    )


def derivative(function, x):
    """d function(x) / dx for an elementwise `function`, by autodiff."""
    backend = name()
    x = keras.ops.convert_to_tensor(x)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return tape.gradient(y, x)
    if backend == "jax":
        import jax

        return jax.grad(lambda t: keras.ops.sum(function(t)))(x)
    import torch

    with torch.enable_grad():
        t = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(keras.ops.sum(function(t)), t)
    return grad


@contextlib.contextmanager
def eager_scope():
    """Runs its body eagerly, also while a training step is traced (lifts
    out of a `tf.function` on TensorFlow; a no-op elsewhere, where variables
    are created and initializers run outside traces)."""
    if name() == "tensorflow":
        import tensorflow as tf

        with tf.init_scope():
            yield
    else:
        yield


def executing_eagerly(tensor=None):
    """Whether ops run eagerly here: not while Keras traces a layer to build
    it or infer shapes (its `SymbolicScope`), not inside a `tf.function`,
    and `tensor` (if given) holds values (`is_concrete`)."""
    if internals.in_symbolic_scope():
        return False
    return is_concrete(tensor)


def is_concrete(tensor=None):
    """Whether `tensor` holds values: not a JAX tracer, a shape-only
    PyTorch tensor or a `tf.function` tensor (with `tensor=None`: whether
    TensorFlow runs eagerly here)."""
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if tensor is None:
        return True
    if name() == "jax":
        return not internals.is_jax_tracer(tensor)
    return tensor.device.type != "meta" and not internals.is_fake_tensor(tensor)


def concrete_value(variable):
    """A variable's stored value as numpy, also inside a traced step (where
    reading it gives a symbolic tensor or tracer), or `None` where it cannot
    be read: during `fit` on JAX, Keras detaches the variables' values and
    passes them to the jitted step as arguments."""
    if name() == "tensorflow":
        with eager_scope():
            return keras.ops.convert_to_numpy(variable)
    if name() == "jax":
        stored = internals.stored_value(variable)
        return None if stored is None else np.asarray(stored)
    return keras.ops.convert_to_numpy(variable.value)


def assign(variable, value):
    """`variable.assign(value)`, also inside a layer's call under mixed
    precision: there Keras autocasts float variables, and on PyTorch
    (Keras 3.15) the assignment then lands in the float16 copy and is lost.
    """
    with internals.no_autocast():
        variable.assign(value)


def detached_variables(model):
    """Paths of `model`'s variables holding no value: on JAX, Keras's
    trainer takes the values out of the variables during `fit` and puts them
    back at the end of an epoch, so a `fit` that raises leaves them empty."""
    if name() != "jax":
        return []
    return [
        v.path for v in model.variables if internals.stored_value(v) is None
    ]


JAX_FIT_NOTE = (
    " On the JAX backend, Keras's trainer detaches a model's variable values "
    "during `fit` and a `fit` that raises leaves them detached: build or "
    "load the model again before `keras_wc.initialize`."
)


def cross_replica_sum(*tensors):
    """Sums each tensor over the replicas of a `tf.distribute` strategy (in
    a replica context); returns them as they are otherwise."""
    if name() != "tensorflow":
        return tensors
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return tensors
    return tuple(
        context.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors))
    )


def check_cross_replica_context(function):
    """Raises inside a `tf.function` or a `tf.distribute` replica context,
    where `function` (an eager, global operation) cannot run."""
    if not executing_eagerly():
        raise RuntimeError(
            f"`keras_wc.{function}` must run eagerly, not inside a "
            "`tf.function`."
        )
    if name() != "tensorflow":
        return
    import tensorflow as tf

    if (
        tf.distribute.has_strategy()
        and not tf.distribute.in_cross_replica_context()
    ):
        raise RuntimeError(
            f"`keras_wc.{function}` must be called in the cross-replica "
            "context (outside `strategy.run`), so that the statistics are "
            "those of the global batch and every replica is assigned."
        )
