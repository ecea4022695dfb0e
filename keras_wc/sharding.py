"""Where the raw variables of a reparameterized layer live under
`keras.distribution` (JAX).

A layout map is written for the plain model: its keys are regular
expressions over variable paths such as
`decoder_block_0/attention/query/kernel` (keras-hub's
`GemmaBackbone.get_layout_map`, a user's `".*dense.*kernel"`). A
reparameterized layer has no variable at that path: its kernel is computed
from raw variables (`.../query/v`, `.../query/g`) that no such key matches.
They take the layout the kernel itself has or would have instead:

* `v` (`depthwise_v`, `recurrent_v`, ...), of the kernel's shape: the
  kernel's layout;
* WN's gain `g`, one entry per output unit: the kernel's layout on the
  output-unit axes it keeps (`(model, None)` for a Gemma query kernel laid
  out `(model, batch, None)` over `(heads, hidden, head_dim)`);
* the scalars (learnable `a`, `b`, a `SharedCompander`'s, WN's
  `initialized`) are replicated.

The kernel's layout is the one of the kernel variable a layer held when it
was converted in place, else the one the current distribution gives the
kernel's path (`<layer path>/kernel`): the same whether the model was built
from keras_wc layers, converted, copied or loaded inside the
distribution's scope; a layer converted outside the scope puts all its
new variables on its kernels' devices. Folding gives the plain kernel the
layout of `v`. A kernel the current distribution replicates leaves its raw
variables to the distribution (a key on their own paths applies).
"""

import keras

from keras_wc import internals


class _KernelPath:
    """What a distribution reads of a variable to lay it out."""

    def __init__(self, path, shape):
        self.path = path
        self.shape = tuple(shape)


def kernel_layout(layer, name, shape):
    """The layout the current distribution gives kernel `name` (of `shape`)
    of `layer`, or None (no distribution, not JAX, or replicated)."""
    distribution = keras.distribution.distribution()
    if distribution is None or keras.backend.backend() != "jax":
        return None
    path = f"{layer.path or layer.name}/{name}"
    layout = distribution.get_variable_layout(_KernelPath(path, shape))
    return layout if _sharded(layout) else None


def on_axes(layout, axes=None):
    """For `internals.laid_out`: `layout` on the kernel axes `axes` (None:
    all of them), or None if there is no layout."""
    if layout is None:
        return None
    if axes is not None:
        layout = keras.distribution.TensorLayout(
            tuple(layout.axes[a] for a in axes), layout.device_mesh
        )
    return lambda variable: layout


def replicated_with(layouts):
    """For `internals.laid_out`: a variable replicated over the mesh of
    the first of `layouts` (the kernels' layouts of a layer) that has one,
    so that a layer's other variables (learnable `a`, `b`, WN's
    `initialized`) live on its kernels' devices even when the layer is
    converted outside the distribution's scope; None if none has."""
    mesh = next((x.device_mesh for x in layouts if x is not None), None)
    if mesh is None:
        return None
    return lambda variable: keras.distribution.TensorLayout(
        (None,) * len(variable.shape), mesh
    )


def existing_layout(variable):
    """The layout `variable` was created with on a device mesh, or None."""
    layout = internals.variable_layout(variable)
    return layout if getattr(layout, "device_mesh", None) else None


def _sharded(layout):
    return layout is not None and any(a is not None for a in layout.axes)
