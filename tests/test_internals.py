"""The assumptions `keras_wc.internals` makes about the private state of
Keras, TensorFlow, JAX and PyTorch, each checked directly: a release that
breaks one fails here, by name, before anything that depends on it. And no
other module of keras_wc touches that state (the grep test at the end)."""

import os
import pathlib
import re
import subprocess
import sys

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
    # The layout itself (Keras 3.15), or one equal to it (older Keras).
    chosen_layout = internals.variable_layout(chosen)
    assert tuple(chosen_layout.axes) == ("model", None)
    assert tuple(chosen_layout.device_mesh.axis_names) == ("model",)
    assert tuple(chosen_layout.device_mesh.shape) == (2,)
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


# -- What the backends are doing ---------------------------------------------


def test_keras_traces_a_layer_under_its_symbolic_scope():
    seen = []

    class Records(keras.layers.Layer):
        def call(self, x):
            seen.append(internals.in_symbolic_scope())
            return x

    layer = Records()
    layer(keras.Input((2,)))
    assert seen and all(seen)
    seen.clear()
    layer(np.zeros((1, 2), "float32"))
    assert seen == [False]
    assert internals.in_symbolic_scope() is False


@pytest.mark.backends("jax", reason="JAX tracers")
def test_values_jax_traces_are_jax_core_tracers():
    import jax

    seen = []

    def f(x):
        seen.append(internals.is_jax_tracer(x))
        return x

    jax.jit(f)(np.zeros(2, "float32"))
    jax.grad(lambda x: f(x).sum())(np.zeros(2, "float32"))
    assert seen == [True, True]
    assert internals.is_jax_tracer(jax.numpy.zeros(2)) is False


@pytest.mark.backends("torch", reason="PyTorch fake tensors")
def test_torch_tracing_tensors_are_fake_tensors():
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.zeros(2)
    assert internals.is_fake_tensor(fake) is True
    assert internals.is_fake_tensor(torch.zeros(2)) is False


@pytest.mark.backends("tensorflow", reason="TensorFlow's XLA context")
def test_tensorflow_graphs_know_whether_xla_compiles_them():
    import tensorflow as tf

    def f():
        return tf.constant(internals.tf_graph_in_xla())

    assert bool(tf.function(f, jit_compile=True)()) is True
    assert bool(tf.function(f)()) is False
    inner = tf.function(f)
    assert bool(tf.function(lambda: inner(), jit_compile=True)()) is True


# -- Variables ---------------------------------------------------------------


def test_a_variable_stores_its_backend_tensor_in_value():
    variable = keras.Variable(np.arange(3, dtype="float32"))
    variable.assign(np.ones(3, "float32"))
    stored = internals.stored_value(variable)
    assert keras.ops.is_tensor(stored) or hasattr(stored, "numpy")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stored), 1.0)


@pytest.mark.backends("jax", reason="the JAX trainer detaches values")
def test_the_jax_trainer_detaches_values_by_emptying_value():
    # What `fit` does to save memory while the jitted step holds the state
    # (and leaves so when it raises).
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert all(internals.stored_value(w) is not None for w in model.weights)
    model._purge_model_variables(trainable_variables=True)
    assert all(internals.stored_value(w) is None for w in model.weights)


def test_no_autocast_turns_off_the_autocast_scope_a_layer_call_opens():
    variable = keras.Variable(np.ones(2, "float32"))
    seen = []

    class Reads(keras.layers.Layer):
        def call(self, x):
            seen.append(keras.backend.standardize_dtype(variable.value.dtype))
            with internals.no_autocast():
                seen.append(
                    keras.backend.standardize_dtype(variable.value.dtype)
                )
            return x

    Reads(dtype="mixed_float16")(np.zeros((1, 2), "float16"))
    assert seen == ["float16", "float32"]


# -- A layer's tracking ------------------------------------------------------


def test_flatten_layers_lists_tracked_sublayers_once_in_order():
    inner = keras.layers.Dense(2, name="inner")

    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="block")
            self.first = keras.layers.Dense(2, name="first")
            self.inner = inner
            self.again = inner
            self.nested = keras.Sequential([keras.layers.Dense(1, name="n")])

    block = Block()
    names = [layer.name for layer in internals.sublayers(block)]
    assert names == ["first", "inner", block.nested.name]
    deep = internals.sublayers(block, include_self=True, recursive=True)
    assert deep[0] is block
    assert [layer.name for layer in deep[1:4]] == names
    assert deep[-1].name == "n"


def _built_dense():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    return layer


def test_a_built_layer_locks_its_tracker_unlocked_tracking_unlocks_it():
    layer = _built_dense()
    with pytest.raises(ValueError):
        layer.add_weight(shape=(), name="late")
    with internals.unlocked_tracking(layer):
        late = layer.add_weight(shape=(), name="late")
    assert layer.weights[-1] is late
    with pytest.raises(ValueError):
        layer.add_weight(shape=(), name="later")


def test_the_tracker_holds_a_layers_variable_lists():
    layer = _built_dense()
    kernel, bias = layer.kernel, layer.bias
    with internals.unlocked_tracking(layer):
        extra = layer.add_weight(shape=(), name="extra")
        internals.move_tracked_variable_last(layer, bias)
        assert layer.weights == [kernel, extra, bias]
        internals.replace_tracked_variable(layer, kernel, [bias, extra])
        assert layer.weights == [bias, extra]
        internals.untrack_variable(layer, extra)
    assert layer.weights == [bias]
    assert layer.trainable_weights == [bias]
    assert layer.non_trainable_weights == []


@pytest.mark.backends("torch", reason="PyTorch's layer lists parameters")
def test_torch_layers_drop_an_untracked_variable_from_their_parameters():
    layer = _built_dense()
    assert len(list(layer.parameters())) == 2
    with internals.unlocked_tracking(layer):
        internals.untrack_variable(layer, layer.bias)
    assert len(list(layer.parameters())) == 1


def test_keras_kernel_properties_read_the_private_kernel_attribute():
    assert isinstance(keras.layers.Dense.kernel, property)
    dense = _built_dense()
    conv = keras.layers.Conv1D(2, 1)
    conv.build((None, 4, 3))
    for layer in (dense, conv):
        replacement = keras.Variable(np.ones((1, 3, 2), "float32"))
        with internals.unlocked_tracking(layer):
            internals.point_kernel_attribute(
                layer, type(layer), "kernel", replacement
            )
        assert layer.kernel is replacement


def test_delete_attribute_bypasses_layer_delattr_and_drops_tf_tracking():
    layer = _built_dense()
    layer.holder = {"v": layer.kernel}
    tracked = getattr(layer, "_tracked", None)
    if keras.backend.backend() == "tensorflow":
        assert "holder" in tracked
    internals.delete_attribute(layer, "holder")
    assert not hasattr(layer, "holder")
    assert tracked is None or "holder" not in tracked
    # Not untracked, unlike `del layer.attribute` for a variable.
    layer.alias = layer.bias
    internals.delete_attribute(layer, "alias")
    assert layer.weights[-1] is layer.bias


def test_own_attribute_names_leave_out_every_layers_and_tf_bookkeeping():
    layer = keras.layers.Dense(3)
    names = internals.own_attribute_names(layer)
    assert {"units", "activation", "use_bias"} <= names
    assert not names & set(vars(keras.layers.Layer()))
    assert not any(name.startswith("_self_") for name in names)


# -- Models ------------------------------------------------------------------


def test_layer_call_marks_a_model_called():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def build(self, shape):
            self.dense.build(shape)

        def call(self, x):
            return self.dense(x)

    model = Sub()
    model.build((None, 2))
    assert internals.has_been_called(model) is False
    model(np.zeros((1, 2), "float32"))
    assert internals.has_been_called(model) is True


def test_sequential_keeps_its_input_layer_first_out_of_layers():
    dense = keras.layers.Dense(1)
    model = keras.Sequential([keras.Input((2,), name="x"), dense])
    first = internals.sequential_input_layer(model)
    assert isinstance(first, keras.layers.InputLayer)
    assert first.name == "x" and model.layers == [dense]
    assert internals.sequential_input_layer(keras.Sequential([dense])) is None


def test_symbolic_tensors_know_the_layer_that_made_them():
    inputs = keras.Input((2,), name="x")
    dense = keras.layers.Dense(1)
    outputs = dense(inputs)
    assert internals.producing_layer(outputs) is dense
    made = internals.producing_layer(inputs)
    assert isinstance(made, keras.layers.InputLayer) and made.name == "x"


# -- Optimizers --------------------------------------------------------------

HOOK_PARAMETERS = {
    "_backend_apply_gradients": ["grads", "trainable_variables"],
    "_use_weight_decay": ["variable"],
    "_apply_weight_decay": ["variables"],
    "_update_model_variables_moving_average": ["trainable_variables"],
}


@pytest.mark.parametrize("hook", internals.OPTIMIZER_HOOKS)
def test_optimizer_hook_exists_with_its_signature(hook):
    import inspect

    method = getattr(keras.optimizers.Optimizer, hook)
    parameters = list(inspect.signature(method).parameters)
    assert parameters == ["self"] + HOOK_PARAMETERS[hook]


def test_optimizer_apply_calls_the_hooks_gradients_first_then_clipping():
    calls = []

    class Recording(keras.optimizers.SGD):
        def _backend_apply_gradients(self, grads, trainable_variables):
            calls.append("_backend_apply_gradients")
            # Scaled before clipping (clipvalue 0.1 then does not bind).
            grads = [keras.ops.multiply(g, 0.01) for g in grads]
            return super()._backend_apply_gradients(grads, trainable_variables)

        def _use_weight_decay(self, variable):
            calls.append("_use_weight_decay")
            return super()._use_weight_decay(variable)

        def _apply_weight_decay(self, variables):
            calls.append("_apply_weight_decay")
            return super()._apply_weight_decay(variables)

        def _update_model_variables_moving_average(self, trainable_variables):
            calls.append("_update_model_variables_moving_average")
            return super()._update_model_variables_moving_average(
                trainable_variables
            )

    variable = keras.Variable(np.ones(2, "float32"))
    optimizer = Recording(
        learning_rate=1.0, clipvalue=0.1, weight_decay=0.5, use_ema=True
    )
    optimizer.apply([keras.ops.ones(2)], [variable])
    assert set(calls) == set(internals.OPTIMIZER_HOOKS)
    assert calls[0] == "_backend_apply_gradients"
    # Decayed (1 - 0.5), then the scaled gradient, unclipped.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(variable), 0.49, rtol=1e-6
    )


def test_an_optimizer_files_slots_by_var_key():
    variables = [keras.Variable(np.ones(2, "float32")) for _ in range(2)]
    optimizer = keras.optimizers.Adam(use_ema=True)
    optimizer.build(variables)
    assert internals.optimizer_trainable_variables(optimizer) == variables
    keys = [internals.optimizer_key(optimizer, v) for v in variables]
    assert len(set(keys)) == 2
    assert keys[0] == internals.optimizer_key(optimizer, variables[0])
    averages = internals.ema_slots(optimizer)
    assert len(averages) == 2
    assert all(tuple(a.shape) == (2,) for a in averages)


def test_adam_keeps_a_momentum_and_a_velocity_per_variable():
    variables = [keras.Variable(np.ones(n, "float32")) for n in (2, 3)]
    optimizer = keras.optimizers.Adam(beta_1=0.9, beta_2=0.99)
    grads = [np.full(2, 2.0, "float32"), np.full(3, 4.0, "float32")]
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    for variable, grad in zip(variables, grads, strict=True):
        momentum, velocity = internals.adam_slots(optimizer, variable)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(momentum), 0.1 * grad, rtol=1e-6
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(velocity), 0.01 * grad**2, rtol=1e-5
        )


# -- Only `keras_wc/internals.py` touches framework internals ----------------

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_wc"

PRIVATE_MODULE = re.compile(
    r"\b(?:keras\.src|tensorflow\.python|torch\._\w|jax\._src|jax\.core)\b"
)
# The private attributes and methods of Keras, TensorFlow, JAX and PyTorch
# objects that `keras_wc.internals` reads and writes for the rest of the
# package (`keras_wc`'s own private attributes are not listed).
PRIVATE_ATTRIBUTES = (
    "_call_context_args",
    "_call_has_context_arg",
    "_call_has_mask_arg",
    "_call_has_training_arg",
    "_call_signature",
    "_called",
    "_dtype_policy",
    "_flatten_layers",
    "_get_variable_index",
    "_keras_history",
    "_layers",
    "_layout",
    "_model_variables_moving_average",
    "_momentums",
    "_non_trainable_variables",
    "_post_untrack_variable",
    "_self_",
    "_tracked",
    "_tracker",
    "_trainable_variables",
    "_untrack_variable",
    "_value",
    "_var_key",
    "_velocities",
)
PRIVATE_ATTRIBUTE = re.compile(
    r"\.(" + "|".join(PRIVATE_ATTRIBUTES) + r")\b"
    r"|[\"'](" + "|".join(PRIVATE_ATTRIBUTES) + r")[\"']"
    r"|super\(keras\.layers\.Layer\b"
    r"|\bglobal_state\b|\bAutocastScope\b|\bFakeTensor\b"
)
# An override of a hook in `internals.OPTIMIZER_HOOKS` (or its call to the
# parent's), in the one module allowed to override them.
HOOK_FILE = "optimizers.py"
HOOK = re.compile(
    r"(?:def |super\(\)\.|self\.)("
    + "|".join(internals.OPTIMIZER_HOOKS)
    + r")\b"
)


def _private_uses(package=PACKAGE):
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "internals.py" and path.parent == package:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            where = f"{path.relative_to(package.parent)}:{number}"
            if PRIVATE_MODULE.search(code) or PRIVATE_ATTRIBUTE.search(code):
                found.append(f"{where}: {line.strip()}")
            if HOOK.search(code) and path.name != HOOK_FILE:
                found.append(f"{where}: {line.strip()}")
    return found


def test_framework_internals_are_touched_in_keras_wc_internals_only():
    uses = _private_uses()
    assert not uses, (
        "Private Keras/TensorFlow/JAX/PyTorch state is used outside "
        "keras_wc/internals.py; add a named function there (with the "
        "missing public API) and call it:\n" + "\n".join(uses)
    )


def test_the_hooks_named_are_the_ones_overridden():
    from keras_wc import optimizers

    overridden = {
        name
        for name, value in vars(optimizers.ModifiedOptimizerMixin).items()
        if name.startswith("_")
        and not name.startswith("__")
        and callable(value)
        and hasattr(keras.optimizers.Optimizer, name)
    }
    assert overridden == set(internals.OPTIMIZER_HOOKS)


def test_the_conv_lstm_layers_build_one_unexported_cell_class():
    cell_class = internals.conv_lstm_cell_class()
    for layer in (
        keras.layers.ConvLSTM1D(2, 2),
        keras.layers.ConvLSTM2D(2, 2),
        keras.layers.ConvLSTM3D(2, 2),
    ):
        assert type(layer.cell) is cell_class
    # Once Keras exports it, keras_wc should take the public class.
    assert not hasattr(keras.layers, cell_class.__name__)


IMPORT_STARTS_NOTHING = """
import random
import keras
random.seed(0)
expected = random.random()
random.seed(0)
import keras_wc
assert random.random() == expected, "importing keras_wc drew random numbers"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
print("ok")
"""


@pytest.mark.backend_independent
def test_importing_keras_wc_starts_no_backend_runtime():
    # A user (and `python -m train --logical-cpus`) configures devices
    # after importing keras_wc: the import must not build a layer, which
    # creates variables and starts TensorFlow's runtime.
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_STARTS_NOTHING],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_the_dtype_policy_setter_writes_into_a_map_keep_own_replaces_it():
    policy_map = keras.dtype_policies.DTypePolicyMap()
    layer = keras.layers.Dense(2, dtype=policy_map, name="held")
    layer.build((None, 3))
    assert layer.dtype_policy is policy_map  # the map, not a policy of it
    layer.dtype_policy = "float32"  # the public setter: into the map
    assert layer.dtype_policy is policy_map
    assert layer.path in policy_map
    source = keras.layers.Dense(2, dtype="float32")
    internals.keep_own_dtype_policy(layer, source)
    assert layer.dtype_policy is source.dtype_policy
