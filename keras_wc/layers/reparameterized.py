"""The one reparameterization mechanism shared by WC, PP and WN layers.

A reparameterized layer is a Keras kernel layer (`Dense`, `Conv2D`, ...) whose
kernel variable(s) are replaced by raw trainable variables, the effective
kernel being recomputed from them in float32 on every read, in the compute
path. The mechanism hooks the parent class at two public points:

* `add_weight`: when the parent's `build` asks for a kernel
  (`kernel`, `depthwise_kernel`, `pointwise_kernel`), the subclass creates its
  raw variables instead (`_create_kernel`) and the raw variable is handed
  back, so the parent's `build` runs unchanged;
* the kernel attributes: `kernel`, `depthwise_kernel` and `pointwise_kernel`
  are properties returning the effective kernel (`_effective_kernel`), so the
  parent's own `call` applies it.

Nothing is ever assigned to a kernel variable in the forward pass and the
effective kernel is never cached on the layer. Saving stores the raw
variables (the parents' `save_own_variables` would store the effective
kernel and load it into the raw variable).
"""

import keras
from keras import ops

KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")
# The raw variable that stands for each kernel: `v` for `kernel`,
# `depthwise_v` / `pointwise_v` for a separable convolution.
RAW_NAMES = {
    "kernel": "v",
    "depthwise_kernel": "depthwise_v",
    "pointwise_kernel": "pointwise_v",
}


# The docstring example of each supported parent: (constructor arguments,
# input shape, output shape), shared by the WC and WN docstrings.
DOC_EXAMPLES = {
    keras.layers.Dense: ("16", "(2, 8)", "(2, 16)"),
    keras.layers.EinsumDense: (
        '"ab,bc->ac", output_shape=16',
        "(2, 8)",
        "(2, 16)",
    ),
    keras.layers.Conv1D: ("16, 3", "(2, 10, 4)", "(2, 8, 16)"),
    keras.layers.Conv2D: ("16, 3", "(2, 10, 10, 4)", "(2, 8, 8, 16)"),
    keras.layers.Conv3D: ("16, 3", "(2, 6, 6, 6, 4)", "(2, 4, 4, 4, 16)"),
    keras.layers.Conv1DTranspose: ("16, 3", "(2, 8, 4)", "(2, 10, 16)"),
    keras.layers.Conv2DTranspose: (
        "16, 3",
        "(2, 8, 8, 4)",
        "(2, 10, 10, 16)",
    ),
    keras.layers.Conv3DTranspose: (
        "16, 3",
        "(2, 4, 4, 4, 4)",
        "(2, 6, 6, 6, 16)",
    ),
    keras.layers.DepthwiseConv1D: ("3", "(2, 10, 4)", "(2, 8, 4)"),
    keras.layers.DepthwiseConv2D: ("3", "(2, 10, 10, 4)", "(2, 8, 8, 4)"),
    keras.layers.SeparableConv1D: ("16, 3", "(2, 10, 4)", "(2, 8, 16)"),
    keras.layers.SeparableConv2D: ("16, 3", "(2, 10, 10, 4)", "(2, 8, 8, 16)"),
}


def _kernel_property(name):
    def getter(self):
        if name not in self._raw_kernels:
            raise AttributeError(
                f"Layer '{self.name}' has no `{name}` yet: build the layer "
                "(call it on an input) before reading it."
            )
        regularizer = self._call_regularizers.get(name)
        if regularizer is not None and self._in_call:
            kernel, penalty = self._kernel_and_penalty(name, regularizer)
            self.add_loss(penalty)
        else:
            kernel = self._effective_kernel(name)
        return ops.cast(kernel, self.compute_dtype)

    def setter(self, value):
        # The parent's `build` stores what `add_weight` returned, i.e. the
        # raw variable, which is already tracked in `_raw_kernels`.
        if value is not None and value is not self._raw_kernels.get(name):
            raise AttributeError(
                f"`{name}` of layer '{self.name}' is computed from the raw "
                f"variable `{RAW_NAMES[name]}` and cannot be set. Assign to "
                f"`{RAW_NAMES[name]}` instead, or `keras_wc.fold` the model."
            )

    return property(
        getter,
        setter,
        doc=f"The effective `{name}` (a tensor in the compute dtype).",
    )


def _raw_property(name):
    def getter(self):
        if name not in self._raw_kernels:
            raise AttributeError(
                f"Layer '{self.name}' has no `{RAW_NAMES[name]}`"
                + (
                    " yet: build the layer first."
                    if not self.built
                    else f"; its raw kernels are "
                    f"{[RAW_NAMES[k] for k in self._raw_kernels]}."
                )
            )
        return self._raw_kernels[name]

    return property(
        getter, doc=f"The raw trainable variable behind `{name}`."
    )


class ReparameterizedLayer:
    """Mixin for a Keras kernel layer with reparameterized kernel(s).

    Put it first in the bases: `class WCDense(CompanderMixin, Dense)`.
    Subclasses implement:

    * `_create_kernel(name, shape, initializer, regularizer, constraint)`:
      create the raw variable(s) for one kernel with `_add_raw_weight` and
      return the variable that stands for the kernel;
    * `_effective_kernel(name)`: the effective kernel as a float32 tensor;
    * `_assign_kernel(name, value)`: set the raw variables so that the
      effective kernel is `value` (the right inverse).
    """

    kernel = _kernel_property("kernel")
    depthwise_kernel = _kernel_property("depthwise_kernel")
    pointwise_kernel = _kernel_property("pointwise_kernel")
    v = _raw_property("kernel")
    depthwise_v = _raw_property("depthwise_kernel")
    pointwise_v = _raw_property("pointwise_kernel")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self, "lora_rank", None):
            raise ValueError(
                f"Layer '{self.name}': LoRA is not supported on a "
                "reparameterized kernel. `keras_wc.fold` the model first. "
                f"Received: lora_rank={self.lora_rank}"
            )
        if getattr(self, "quantization_mode", None):
            raise ValueError(
                f"Layer '{self.name}': quantized dtype policies are not "
                "supported on a reparameterized kernel. `keras_wc.fold` the "
                "model, then quantize it."
            )
        self._raw_kernels = {}
        # Regularizers of the effective kernel, evaluated on the kernel the
        # forward pass computes (one evaluation of the reparameterization per
        # step instead of a second one for the penalty).
        self._call_regularizers = {}
        self._in_call = False

    @property
    def raw_kernels(self):
        """Dict from kernel name to the raw variable that stands for it."""
        return dict(self._raw_kernels)

    def add_weight(self, *args, **kwargs):
        name = kwargs.get("name")
        if name not in KERNEL_NAMES or args:
            return super().add_weight(*args, **kwargs)
        variable = self._create_kernel(
            name,
            shape=tuple(kwargs["shape"]),
            initializer=keras.initializers.get(kwargs.get("initializer")),
            regularizer=keras.regularizers.get(kwargs.get("regularizer")),
            constraint=keras.constraints.get(kwargs.get("constraint")),
        )
        self._raw_kernels[name] = variable
        return variable

    # `__call__`, not `call`: Keras reads the parent's `call` signature
    # (input names, `training`), which an override with *args would hide.
    def __call__(self, *args, **kwargs):
        self._in_call = True
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._in_call = False

    def _add_raw_weight(self, name, shape, initializer, **kwargs):
        # Raw variables stay float32 and are never autocast: the effective
        # kernel is computed from them in float32 (mixed precision included).
        return super().add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            dtype="float32",
            autocast=False,
            **kwargs,
        )

    def _create_kernel(self, name, shape, initializer, regularizer, constraint):
        raise NotImplementedError

    def _effective_kernel(self, name):
        raise NotImplementedError

    def assign_effective_kernel(self, name, value):
        """Sets the raw variables so that the effective `name` equals `value`.

        The right inverse of the reparameterization (PyTorch parametrize's
        `right_inverse`), used by `keras_wc.convert` to start from existing
        weights without changing the layer's function.

        Args:
            name: `"kernel"`, `"depthwise_kernel"` or `"pointwise_kernel"`.
            value: array of the kernel's shape.
        """
        if name not in self._raw_kernels:
            raise ValueError(
                f"Layer '{self.name}' has no kernel {name!r} (built: "
                f"{self.built}). Its kernels: {list(self._raw_kernels)}"
            )
        expected = tuple(self._raw_kernels[name].shape)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"Layer '{self.name}': `{name}` has shape {expected}. "
                f"Received: value with shape {tuple(value.shape)}"
            )
        self._assign_kernel(name, ops.cast(value, "float32"))

    def _assign_kernel(self, name, value):
        raise NotImplementedError

    def _kernel_and_penalty(self, name, regularizer):
        """The effective kernel and `regularizer` of it, for the forward
        pass; subclasses may compute the penalty more cheaply."""
        kernel = self._effective_kernel(name)
        return kernel, regularizer(kernel)

    def effective_kernels(self):
        """Dict from kernel name to its effective value (float32 tensor).

        These are the weights `keras_wc.fold` writes into the plain layer.
        """
        return {k: self._effective_kernel(k) for k in self._raw_kernels}

    # The parents' versions store `self.kernel` (the effective kernel) and
    # load it into the raw variable; the generic `Layer` ones store every
    # variable of the layer as it is.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def enable_lora(self, *args, **kwargs):
        raise NotImplementedError(
            f"Layer '{self.name}': LoRA is not supported on a "
            "reparameterized kernel. `keras_wc.fold` the model first."
        )

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(
            f"Layer '{self.name}': quantization is not supported on a "
            "reparameterized kernel. `keras_wc.fold` the model first."
        )
