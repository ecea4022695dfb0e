"""The assumptions `keras_wc.internals` makes about Keras's private state,
each checked directly: a Keras release that breaks one fails here, by
name, before anything that depends on it."""

import keras
import numpy as np
import pytest

from keras_wc import internals


def test_layer_new_binds_build_and_quantize_wrappers_closing_over_them():
    layer = keras.layers.Dense(2)
    for name in ("build", "quantize"):
        wrapper = vars(layer)[name]
        wrapped = wrapper.__wrapped__
        assert wrapped.__func__ is getattr(keras.layers.Dense, name)
        cells = [c for c in wrapper.__closure__ if c.cell_contents is wrapped]
        assert len(cells) == 1


def test_layer_init_derives_the_call_attributes_change_class_rederives():
    class TakesTraining(keras.layers.Layer):
        def call(self, inputs, training=None, mask=None):
            return inputs

    conv = keras.layers.Conv1D(2, 1)
    assert conv.call_signature_parameters == ["inputs"]
    assert list(conv._call_signature.parameters) == ["inputs"]
    assert conv._call_has_training_arg is False
    assert conv._call_has_mask_arg is False
    assert conv._call_context_args == {"training"}
    assert conv._call_has_context_arg == {"training": False}
    internals.change_class(conv, type("Conv1DT", (TakesTraining,), {}))
    assert conv._call_has_training_arg is True
    assert conv._call_has_mask_arg is True
    assert conv._call_has_context_arg == {"training": True}
    assert list(conv._call_signature.parameters) == [
        "inputs",
        "training",
        "mask",
    ]


def test_change_class_repoints_build():
    class Marked(keras.layers.Dense):
        def build(self, input_shape):
            super().build(input_shape)
            self.marked = True

    layer = keras.layers.Dense(2)
    internals.change_class(layer, Marked)
    layer(np.zeros((1, 3), "float32"))
    assert layer.marked and layer.built


def test_one_call_context_spans_a_call_and_its_nested_calls():
    seen = []

    class Inner(keras.layers.Layer):
        def call(self, x):
            seen.append(internals.current_call())
            return x

    class Outer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def call(self, x):
            seen.append(internals.current_call())
            return self.inner(self.inner(x))

    assert internals.current_call() is None
    outer = Outer()
    x = np.zeros((1, 2), "float32")
    outer(x)  # builds (tracing `call` outside any call context), then calls
    seen.clear()
    outer(x)
    first = seen[:]
    assert first[0] is not None and all(c is first[0] for c in first)
    outer(x)
    assert seen[3] is not first[0]
    assert internals.current_call() is None


@pytest.mark.backends("jax", reason="keras.distribution lays out on JAX only")
def test_a_variable_takes_the_layout_the_current_distribution_gives_it():
    devices = keras.distribution.list_devices("cpu")[:2]
    mesh = keras.distribution.DeviceMesh((2,), ("model",), devices)
    layout = keras.distribution.TensorLayout(("model", None), mesh)
    asked = []

    def choose(variable):
        asked.append(variable.path)
        return layout if variable.name == "chosen" else None

    with internals.laid_out(choose):
        chosen = keras.Variable(np.zeros((4, 2), "float32"), name="chosen")
        other = keras.Variable(np.zeros((4, 2), "float32"), name="other")
    assert asked == ["chosen", "other"]
    assert internals.variable_layout(chosen) is layout
    assert tuple(chosen.value.sharding.spec) == ("model", None)
    assert internals.variable_layout(other) is None
    assert keras.distribution.distribution() is None


def test_own_variables_are_the_layers_not_its_sublayers():
    class Outer(keras.layers.Layer):
        def build(self, shape):
            self.inner = keras.layers.Dense(2)
            self.inner.build(shape)
            self.scale = self.add_weight(
                shape=(), name="scale", trainable=False
            )

    outer = Outer()
    outer.build((None, 3))
    assert [v.name for v in internals.own_variables(outer)] == ["scale"]
    assert [v.name for v in internals.own_variables(outer.inner)] == [
        "kernel",
        "bias",
    ]
    assert len(outer.weights) == 3
