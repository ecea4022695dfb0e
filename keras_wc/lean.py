"""The lean path: the fast implementations of keras_wc's operations.

The layers (`keras_wc.layers.wc_base`, `keras_wc.layers.wn_base`)
hold the math of each reparameterization (Ψ, Ψ⁻¹, Ψ', the WN formula and
its data-dependent init) and the optimizers the modified update
(`keras_wc.optimizers`); what makes a training step fast is here, behind
one entry point per operation:

* `compander_kernel(compander, v, a, b, regularizer=None)`: Ψ(v) for fixed
  `a, b`, with its penalty when `regularizer` is given;
* `learnable_compander_kernel(compander, v, a, b)`: Ψ(v) with learnable
  `a, b`;
* `learnable_compander_direction(compander, v, b)`: f(v/b), the kernel of
  a layer whose output `a` scales;
* `weight_norm_kernel(v, g, norm_axes, epsilon, regularizer=None)`: WN's
  `g·v/‖v‖`, with its penalty when `regularizer` is given;
* `weight_norm_scale(v, norm_axes, epsilon)`: the per-unit `1/‖v‖` of a WN
  layer whose output the gain scales;
* `effective_gradient(compander, a, b, gradient, v)`: the modified
  optimizers' `g_w = ∂L/∂v / Ψ'(v)`;
* `adam_update(compander, a, b, gradient, v, moments, ...)`: the modified
  Adam's step, in place;
* `xla_in_tf_graph(owner, key, function, *tensors)`: a step (the modified
  optimizers' update of a kernel) as one XLA-compiled function nested in
  TensorFlow's graph.

Each entry point dispatches to one of three implementations:

* the reference: plain `keras.ops` and automatic differentiation, the
  penalty evaluated on the kernel separately; inside `reference_path()`
  (`enabled()` is then false), the path the others are tested against;
* the closed forms in `keras.ops`: custom gradients (Eq. 3 of each paper)
  instead of autodiff's chain, the L2 penalty fused into the function that
  computes the kernel, formulas chosen for the backend and for whether XLA
  compiles the step (`xla_in_tf_graph`, `ordered_after`, `recomputed`);
* the fused C kernels (`keras_wc.native`) on PyTorch, for the `arctan`
  compander and integer-α powerprop.

Every implementation computes the same quantities, to float32 round-off
(tests/layers/test_lean_path.py, tests/test_native.py).
"""

import contextlib
import contextvars
import math

import keras
from keras import ops

from keras_wc import backend, companders, native

# -- which path -------------------------------------------------------------

_REFERENCE = contextvars.ContextVar("keras_wc_reference", default=False)


@contextlib.contextmanager
def reference_path():
    """Context in which reparameterized layers take the reference path:
    the effective kernel by plain `keras.ops` with automatic
    differentiation, and the regularizer evaluated on it separately
    (traced steps keep the path they were traced with)."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def enabled():
    """Whether the lean path is on (outside `reference_path()`)."""
    return not _REFERENCE.get()


def is_plain_l2(regularizer):
    """Whether `regularizer` is `l2·Σw²` and nothing else (`L2`, or
    `L1L2` with `l1 = 0`), which the lean path fuses."""
    return type(regularizer) is keras.regularizers.L2 or (
        type(regularizer) is keras.regularizers.L1L2 and regularizer.l1 == 0
    )


# -- entry points -----------------------------------------------------------


def compander_kernel(compander, v, a, b, regularizer=None):
    """Ψ(v) = `compander.forward(v, a, b)` for fixed `a, b` (float32 `v`),
    or with `regularizer`, (Ψ(v), regularizer(Ψ(v))).

    The lean path gives Ψ(v) the closed-form gradient Ψ'(v) (where the
    compander has `derivative`) and fuses an L2 penalty into the same
    function (Eq. 5), on PyTorch by the fused kernels.
    """
    if regularizer is not None:
        if (
            enabled()
            and is_plain_l2(regularizer)
            and _has_closed_form(compander)
        ):
            # Eq. 5's penalty l2·ΣΨ(v)² from the same function as Ψ(v):
            # its gradient joins Ψ'(v)·g in one expression of the backward
            # pass.
            return _fixed_forward(compander, v, a, b, l2=regularizer.l2)
        kernel = compander_kernel(compander, v, a, b)
        return kernel, regularizer(kernel)
    if enabled() and _has_closed_form(compander):
        return _fixed_forward(compander, v, a, b)
    return compander.forward(v, a, b)


def learnable_compander_kernel(compander, v, a, b):
    """Ψ(v) = `compander.forward(v, a, b)` for learnable `a, b` (scalar
    tensors), with the closed-form gradients of v, a and b on the lean
    path for the companders of the form a·f(v/b)."""
    if enabled() and companders.is_scale_family(compander):
        return _learnable_forward(compander, v, a, b)
    return compander.forward(v, a, b)


def learnable_compander_direction(compander, v, b):
    """f(v/b) = Ψ(v) for a = 1, the kernel of a layer whose output the
    learnable `a` scales (lean path only: the reference computes Ψ(v)),
    with its gradients in closed form."""
    return _learnable_direction(compander, v, b)


def weight_norm_kernel(v, g, norm_axes, epsilon, regularizer=None):
    """WN's `w = g·v/‖v‖` (Eq. 2; ‖v‖ = √max(Σv², ε) over `norm_axes`, `g`
    of the kernel's rank, 1 on those axes), or with `regularizer`,
    (w, regularizer(w)).

    The lean path computes the gradients in closed form (Eq. 3), and an L2
    penalty from the gains, without a pass over `w`.
    """
    if regularizer is not None:
        if enabled() and is_plain_l2(regularizer):
            # ‖w_j‖ = g_j for every unit, so L2(w) = l2·Σ g_j²
            # (·‖v_j‖²/max(‖v_j‖², ε), which is 1 but for an all-zero v_j).
            kernel, squares = _weight_norm(v, g, norm_axes, epsilon)
            return kernel, regularizer.l2 * squares
        kernel = weight_norm_kernel(v, g, norm_axes, epsilon)
        return kernel, regularizer(kernel)
    if not enabled():
        squares = ops.sum(ops.square(v), axis=norm_axes, keepdims=True)
        return g * v / ops.sqrt(ops.maximum(squares, epsilon))
    kernel, _ = _weight_norm(v, g, norm_axes, epsilon)
    return kernel


def weight_norm_scale(v, norm_axes, epsilon):
    """(1/‖v‖, ‖v‖²/max(‖v‖², ε)) per unit, for a WN layer whose output
    the gain scales (lean path only), with the gradient in one pass."""
    return _inverse_norm(v, norm_axes, epsilon)


def effective_gradient(compander, a, b, gradient, v):
    """`g_w = ∂L/∂v / Ψ'(v)` (`gradient` = ∂L/∂v of the kernel `v`), 0
    where Ψ'(v) = 0; by the fused kernels where they compute it."""
    kind = _native_kind(compander, gradient, v)
    if kind is not None:
        return native.effective_gradient(
            kind, *_floats(a, b), gradient, _value(v)
        )
    # Ψ'(v) by the expression the layer's backward pass evaluates, so
    # that XLA computes it once for both.
    scale = ops.cast(
        companders.derivative(compander, ops.cast(v, "float32"), a, b),
        gradient.dtype,
    )
    if getattr(compander, "positive_derivative", False):
        return ops.divide(gradient, scale)
    safe = ops.where(scale > 0, scale, ops.ones_like(scale))
    return ops.where(scale > 0, gradient / safe, ops.zeros_like(gradient))


def adam_update(
    compander,
    a,
    b,
    gradient,
    v,
    moments,
    *,
    learning_rate,
    iterations,
    beta_1,
    beta_2,
    epsilon,
    weight_decay=None,
):
    """Keras's Adam step on `gradient` = ∂L/∂Ψ(v), multiplied by Ψ'(v),
    with the decoupled decay of Ψ(v) by `weight_decay` (None: none), in
    place on the tensors of the kernel `v` and of its moments (`m`, `s`,
    which `moments()` returns: read only where the kernels run); by the
    fused kernels. Returns whether it ran (False where the kernels do not
    compute it: the caller takes the optimizer's `keras.ops` step)."""
    kind = _native_kind(compander, gradient, v)
    if kind is None:
        return False
    tensors = [v, *moments()]
    if not all(native.usable(t) and t.is_contiguous() for t in tensors):
        return False
    rate = float(ops.convert_to_numpy(learning_rate))
    step = float(ops.convert_to_numpy(iterations)) + 1.0
    step_size = rate * math.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step)
    decay = rate * float(weight_decay) if weight_decay is not None else 0.0
    native.adam(
        kind,
        *_floats(a, b),
        gradient,
        *tensors,
        float(beta_1),
        float(beta_2),
        step_size,
        float(epsilon),
        decay,
    )
    return True


# -- what XLA and the backends fuse -------------------------------------------


def sum_of_squares(x):
    """Σx² over every entry, in one pass where the backend has the kernel
    (TensorFlow's `l2_loss`, PyTorch's `dot`; XLA fuses the square into
    the sum by itself)."""
    backend_name = backend.name()
    if backend_name == "tensorflow":
        import tensorflow as tf

        return 2.0 * tf.nn.l2_loss(x)
    if backend_name == "torch":
        import torch

        flat = x.reshape(-1)
        return torch.dot(flat, flat)
    return keras.ops.sum(keras.ops.square(x))


def inner_product(x, y):
    """Σ x·y over every entry: one pass without a temporary product on
    PyTorch (`dot`); XLA fuses the product into the sum. (TensorFlow's
    one-pass candidates, `tensordot` and `einsum`, are matrix-vector
    products there, 4x slower than the product and the sum.)"""
    if backend.name() == "torch":
        import torch

        return torch.dot(x.reshape(-1), y.reshape(-1))
    return keras.ops.sum(keras.ops.multiply(x, y))


def xla_in_tf_graph(owner, key, function, *tensors):
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
    if backend.name() != "tensorflow" or backend.in_xla_step(tensors[0]):
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


def ordered_after(value, *reductions):
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
    if not reductions or not backend.in_xla_step(value):
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
    if backend.name() != "jax" or not backend.in_xla_step(x):
        return value
    import jax

    return function(jax.lax.optimization_barrier(x))


def norm(x, axes):
    """‖x‖ = √(Σx²) over `axes` (kept, of size 1), in one pass on
    TensorFlow outside XLA (its `EuclideanNorm`, which XLA has no kernel
    for; XLA fuses the square into the sum by itself). Not PyTorch's
    `vector_norm`: over a leading axis it is ten times slower than the
    square and the sum (14 ms against 1.3 ms on a 2048² kernel)."""
    if backend.name() == "tensorflow" and not backend.in_xla_step(x):
        import tensorflow as tf

        return tf.math.reduce_euclidean_norm(
            x, axis=tuple(axes), keepdims=True
        )
    return keras.ops.sqrt(
        keras.ops.sum(keras.ops.square(x), axis=axes, keepdims=True)
    )


# -- the closed forms and the fused kernels -----------------------------------


def _has_closed_form(compander):
    return callable(getattr(compander, "derivative", None))


def _floats(*scales):
    """`a, b` as Python floats (the fused kernels take numbers)."""
    return tuple(float(ops.convert_to_numpy(s)) for s in scales)


def _value(x):
    """A Keras variable's tensor."""
    return x.value if isinstance(x, keras.Variable) else x


def _forward(compander, v, a, b):
    """Ψ(v) by the formula fastest where it runs: `f_for_xla` inside an
    XLA-compiled step (the polynomial arctan), `f` elsewhere."""
    if backend.in_xla_step(v) and companders.is_scale_family(
        compander
    ):
        return compander.forward_for_xla(v, a, b)
    return compander.forward(v, a, b)


def _fixed_forward(compander, v, a, b, l2=None):
    """Ψ(v) for fixed a, b with the closed-form Ψ'(v) as its gradient, and
    with `l2`, also the penalty l2·ΣΨ(v)².

    One expression for the backward pass (Eq. 3), (g + 2·l2·g_p·Ψ(v))·Ψ'(v)
    for the upstream gradients g of Ψ(v) and g_p of the penalty, instead of
    the chain of elementwise gradients autodiff would build through
    `a·f(v/b)` and the separate passes of a penalty's own gradient. On
    PyTorch, `arctan`'s and powerprop's forward and backward passes are one
    fused kernel each (`keras_wc.native`).
    """
    kind = _native_kind(compander, v)
    if kind is not None:
        return _native_fixed_forward(kind, v, a, b, l2)

    def forward(v, a, b):
        return _forward(compander, v, a, b)

    def backward(upstream, v, a, b):
        return upstream * compander.derivative(v, a, b)

    def penalized_backward(upstream, upstream_penalty, w, v, a, b):
        upstream = upstream + (2.0 * l2 * upstream_penalty) * w
        return backward(upstream, v, a, b)

    @backend.custom_gradient
    def psi(v):
        # On TensorFlow's graph mode each pass is one XLA-compiled loop
        # nested in the graph (the polynomial arctan, ~2× TensorFlow's
        # `atan` and its ops one pass each on a 2048² kernel).
        w = xla_in_tf_graph(compander, "forward", forward, v, a, b)

        def grad(upstream, upstream_penalty=None):
            if upstream_penalty is None:
                return xla_in_tf_graph(
                    compander, "backward", backward, upstream, v, a, b
                )
            # Ψ(v) recomputed where XLA fuses it into the update: the
            # forward's Ψ(v) kept for this term would be alive with
            # ∂L/∂Ψ(v), a second kernel-sized temporary per layer.
            again = recomputed(lambda v: forward(v, a, b), v, w)
            return xla_in_tf_graph(
                compander,
                ("penalized backward", l2),
                penalized_backward,
                upstream,
                upstream_penalty,
                again,
                v,
                a,
                b,
            )

        if l2 is None:
            return w, grad
        return (w, l2 * sum_of_squares(w)), grad

    return psi(v)


def _native_kind(compander, *tensors):
    """The fused C kernels' kind of `compander` if they compute it on
    `tensors` here (`keras_wc.native.kind`), else None."""
    kind = native.kind(compander)
    values = [_value(t) for t in tensors]
    return kind if kind is not None and native.usable(*values) else None


def _native_fixed_forward(kind, v, a, b, l2):
    """`_fixed_forward` by the fused kernels: Ψ(v) (and l2·ΣΨ(v)²) in one
    pass, the backward pass in one pass (Ψ(v) recomputed there instead of
    kept alive)."""

    @backend.custom_gradient
    def psi(v):
        w, total = native.forward(kind, a, b, v, penalty=l2 is not None)

        def grad(upstream, upstream_penalty=None):
            penalty = 0.0
            if upstream_penalty is not None:
                penalty = 2.0 * l2 * float(upstream_penalty)
            return native.backward(kind, a, b, upstream, v, penalty)

        if l2 is None:
            return w, grad
        return (w, l2 * total), grad

    return psi(v)


def _learnable_forward(compander, v, a, b):
    """Ψ(v) = a·f(v/b) with its gradients in closed form (§III-B).

    ∂L/∂v = g·Ψ'(v), ∂L/∂a = Σ g·Ψ(v)/a, ∂L/∂b = −Σ (∂L/∂v)·v/b, where
    g = ∂L/∂Ψ(v): the last two hold for every compander of the form
    a·f(v/b), since ∂Ψ/∂a = f(v/b) and ∂Ψ/∂b = −(v/b)·Ψ'(v).
    """
    kind = _native_kind(compander, v)
    if kind is not None:
        return _native_learnable(kind, v, a, b, scaled=True)

    @backend.custom_gradient
    def psi(v, a, b):
        w = _forward(compander, v, a, b)

        def grad(upstream):
            grad_v = upstream * compander.derivative(v, a, b)
            grad_a = inner_product(upstream, w) / a
            grad_b = -inner_product(grad_v, v) / b
            return ordered_after(grad_v, grad_a, grad_b), grad_a, grad_b

        return w, grad

    return psi(v, a, b)


def _learnable_direction(compander, v, b):
    """f(v/b), the kernel of a layer whose output `a` scales, with its
    gradients in closed form (§III-B).

    For the upstream gradient g̃ = ∂L/∂f(v/b) = a·∂L/∂Ψ(v): ∂L/∂v =
    g̃·f'(v/b)/b = ∂L/∂Ψ(v)·Ψ'(v), and ∂L/∂b = −Σ (∂L/∂v)·v/b.
    """
    kind = _native_kind(compander, v)
    if kind is not None:
        return _native_learnable(kind, v, 1.0, b, scaled=False)

    @backend.custom_gradient
    def direction(v, b):
        def grad(upstream):
            grad_v = upstream * compander.derivative(v, 1.0, b)
            grad_b = -inner_product(grad_v, v) / b
            return ordered_after(grad_v, grad_b), grad_b

        return _forward(compander, v, 1.0, b), grad

    return direction(v, b)


def _native_learnable(kind, v, a, b, scaled):
    """`_learnable_forward` (`scaled`: a·f(v/b), gradients for v, a, b) or
    `_learnable_direction` (f(v/b), gradients for v, b) by the fused
    kernels: ∂L/∂v and the sums of ∂L/∂a and ∂L/∂b in one pass."""

    def values(*scales):
        return [float(scale) for scale in scales]

    if scaled:

        @backend.custom_gradient
        def psi(v, a, b):
            a_value, b_value = values(a, b)
            w, _ = native.forward(kind, a_value, b_value, v, penalty=False)

            def grad(upstream):
                grad_v, sum_a, sum_b = native.learnable_backward(
                    kind, a_value, b_value, upstream, v, want_a=True
                )
                return grad_v, _scalar(sum_a, a), _scalar(-sum_b / b_value, b)

            return w, grad

        return psi(v, a, b)

    @backend.custom_gradient
    def direction(v, b):
        (b_value,) = values(b)
        d, _ = native.forward(kind, 1.0, b_value, v, penalty=False)

        def grad(upstream):
            grad_v, _, sum_b = native.learnable_backward(
                kind, 1.0, b_value, upstream, v, want_a=False
            )
            return grad_v, _scalar(-sum_b / b_value, b)

        return d, grad

    return direction(v, b)


def _scalar(value, like):
    """`value` as a 0-d tensor of `like`'s dtype (a gradient of `like`)."""
    return ops.cast(ops.convert_to_tensor(value), like.dtype)


# -- weight normalization ----------------------------------------------------


def _weight_norm(v, g, norm_axes, epsilon):
    """(w = g·v/‖v‖, Σw²) with the WN paper's gradients in closed form.

    Eq. 3: ∇_g L = ∇_w L·v/‖v‖ and ∇_v L = (g/‖v‖)∇_w L − (g∇_g L/‖v‖²)v,
    computed in two passes over the kernel instead of autodiff's chain
    through the norm. `g` has the kernel's rank (1 on the norm axes).
    Σw² = Σ g²·‖v‖²/max(‖v‖², ε) per unit costs no pass over the kernel.
    """

    @backend.custom_gradient
    def wn(v, g):
        squares = ops.sum(ops.square(v), axis=norm_axes, keepdims=True)
        alive = squares > epsilon
        inv = ops.rsqrt(ops.maximum(squares, epsilon))
        scale = g * inv
        ratio = squares * ops.square(inv)
        total = ops.sum(ops.square(g) * ratio)

        def grad(upstream, upstream_total):
            if upstream_total is None:  # the penalty is not used (torch)
                upstream_total = ops.zeros_like(total)
            projection = ops.sum(upstream * v, axis=norm_axes, keepdims=True)
            grad_g = projection * inv + 2.0 * upstream_total * g * ratio
            along_v = ops.where(
                alive,
                scale * ops.square(inv) * projection,
                -2.0 * upstream_total * ops.square(g) / epsilon,
            )
            grad_v = scale * upstream - along_v * v
            return grad_v, grad_g

        return (v * scale, total), grad

    return wn(v, g)


def _inverse_norm(v, norm_axes, epsilon):
    """(1/‖v‖, ‖v‖²/max(‖v‖², ε)) per unit, with the gradient in one pass.

    The scale of WN applied to a layer's output (`g/‖v‖`, Eq. 2) needs the
    kernel only through these two per-unit numbers. ∂(1/‖v‖)/∂v =
    −v/‖v‖³; the ratio (1 but for an all-zero `v`, where it is ‖v‖²/ε)
    has the gradient 2v/ε there and 0 elsewhere. The backward pass is one
    broadcast product with `v`, instead of autodiff's chain through the
    square, the sum and the root.
    """

    @backend.custom_gradient
    def inverse_norm(v):
        squares = ops.square(norm(v, norm_axes))
        alive = squares > epsilon
        inv = ops.rsqrt(ops.maximum(squares, epsilon))
        ratio = squares * ops.square(inv)

        def grad(upstream_inv, upstream_ratio=None):
            dead = (
                0.0
                if upstream_ratio is None  # the ratio is not used (torch)
                else 2.0 * upstream_ratio / epsilon
            )
            along_v = ops.where(
                alive, -upstream_inv * inv * ops.square(inv), dead
            )
            return along_v * v

        return (inv, ratio), grad

    return inverse_norm(v)
