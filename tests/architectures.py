"""Small plain Keras models covering the topologies `convert` must handle.

Shared by test_conversion, test_folding and test_export. Each builder returns
a new plain model whose every bias and normalization statistic is set to a
non-trivial value, so that copying them (or not) shows in the outputs.
"""

import functools

import keras
import numpy as np

from keras_wc import tree
from keras_wc.layers.mean_only_batch_norm import MeanOnlyBatchNorm

L = keras.layers


def sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3), name="image"),
            L.Conv2D(4, 3, activation="relu", name="conv"),
            L.BatchNormalization(name="bn"),
            L.MaxPooling2D(name="pool"),
            L.Flatten(name="flatten"),
            L.Dropout(0.1, name="dropout"),
            L.Dense(5, name="logits"),
        ],
        name="sequential",
    )


def functional():
    image = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="stem")(image)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    y = L.SeparableConv2D(4, 3, padding="same", name="separable")(y)
    x = L.Add(name="add")([x, y])
    x = L.Conv2DTranspose(3, 3, strides=2, name="upsample")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, L.Dense(5, name="logits")(x), name="functional")


def nested():
    """A Functional model holding a Sequential holding a Functional model."""
    inner_input = keras.Input((6, 6, 4), name="inner_input")
    inner_output = L.Conv2D(4, 3, padding="same", name="conv")(inner_input)
    inner = keras.Model(inner_input, inner_output, name="inner")
    block = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            inner,
            L.BatchNormalization(name="bn"),
            L.Conv2D(6, 1, name="conv"),
        ],
        name="block",
    )
    image = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, name="stem")(image)
    x = block(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, L.Dense(5, name="logits")(x), name="nested")


def shared():
    """A Dense layer and a nested model, each called on two inputs."""
    encoder = keras.Sequential(
        [keras.Input((6,)), L.Dense(8, activation="tanh", name="enc")],
        name="encoder",
    )
    projection = L.Dense(6, name="projection")
    left = keras.Input((7,), name="left")
    right = keras.Input((7,), name="right")
    a = encoder(projection(left))
    b = encoder(projection(right))
    x = L.Concatenate(name="concat")([a, b])
    return keras.Model([left, right], L.Dense(3, name="head")(x), name="shared")


def multi_io():
    image = keras.Input((8, 8, 3), name="image")
    meta = keras.Input((4,), name="meta")
    x = L.Conv2D(4, 3, name="conv")(image)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Concatenate(name="concat")([x, L.Dense(4, name="meta_fc")(meta)])
    logits = L.Dense(5, name="logits")(x)
    score = L.Dense(1, activation="sigmoid", name="score")(x)
    return keras.Model(
        {"image": image, "meta": meta},
        {"logits": logits, "score": score},
        name="multi_io",
    )


def sequence_volume():
    """1-D and 3-D convolutions of every kind, and an EinsumDense."""
    sequence = keras.Input((12, 4), name="sequence")
    volume = keras.Input((4, 4, 4, 2), name="volume")
    s = L.Conv1D(4, 3, name="conv1d")(sequence)
    s = L.DepthwiseConv1D(3, name="depthwise1d")(s)
    s = L.SeparableConv1D(4, 3, name="separable1d")(s)
    s = L.Conv1DTranspose(3, 3, name="transpose1d")(s)
    s = L.GlobalAveragePooling1D(name="pool1d")(s)
    v = L.Conv3D(3, 2, name="conv3d")(volume)
    v = L.Conv3DTranspose(2, 2, name="transpose3d")(v)
    v = L.GlobalAveragePooling3D(name="pool3d")(v)
    x = L.Concatenate(name="concat")([s, v])
    x = L.EinsumDense("ab,bc->ac", 5, bias_axes="c", name="einsum")(x)
    return keras.Model([sequence, volume], x, name="sequence_volume")


def mean_only():
    """Mean-only batch norms `fold` absorbs into a bias, and others."""
    image = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, use_bias=False, name="conv")(image)
    x = MeanOnlyBatchNorm(name="conv_mobn")(x)  # folds into conv
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(4, 1, activation="relu", name="conv_relu")(x)
    x = MeanOnlyBatchNorm(name="relu_mobn")(x)  # after an activation
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dense(6, name="fc")(x)
    x = MeanOnlyBatchNorm(name="fc_mobn")(x)  # folds into fc
    return keras.Model(image, L.Dense(3, name="logits")(x), name="mean_only")


FAST = {
    "sequential": sequential,
    "functional": functional,
    "nested": nested,
    "shared": shared,
    "multi_io": multi_io,
    "sequence_volume": sequence_volume,
    "mean_only": mean_only,
}


def mobilenet_v2():
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10
    )


def resnet50():
    return keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10
    )


APPLICATIONS = {"mobilenet_v2": mobilenet_v2, "resnet50": resnet50}


def leaf_layers(model):
    """(path, layer) for every layer of a model's Sequential/Functional
    graphs at any depth (nested graph models entered, not listed)."""
    return [
        (node.path, node.layer)
        for node in tree.walk(
            model, enter=lambda node: tree.is_graph_model(node.layer)
        )
        if not tree.is_graph_model(node.layer)
    ]


def build(name, seed=0):
    """A new plain model `name` with randomized biases and statistics."""
    keras.utils.set_random_seed(seed)
    model = {**FAST, **APPLICATIONS}[name]()
    randomize_non_kernels(model, seed)
    return model


def randomize_non_kernels(model, seed=0):
    """Gives every non-kernel variable a distinctive value.

    Biases and normalization offsets get N(0, 0.1); scales and variances
    U(0.5, 1.5). Kernels keep their initializer's values.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.path.split("/")[-1]
        if name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, variable.shape)
        elif name in ("bias", "beta", "moving_mean"):
            value = rng.normal(0.0, 0.1, variable.shape)
        else:
            continue
        variable.assign(value.astype(variable.dtype))


def sample_inputs(model, batch_size, seed=0):
    """Random inputs in the structure `model` expects."""
    rng = np.random.default_rng(seed)
    arrays = [
        rng.normal(size=(batch_size, *x.shape[1:])).astype(x.dtype)
        for x in model.inputs
    ]
    if isinstance(model, keras.Sequential):
        return arrays[0]
    return keras.tree.pack_sequence_as(model.input, arrays)


def named_inputs(model, inputs):
    """The inputs as a dict keyed by the model's input names."""
    return {
        x.name: value
        for x, value in zip(
            model.inputs, keras.tree.flatten(inputs), strict=True
        )
    }


def predict(model, inputs):
    """Inference outputs as a flat list of numpy arrays (eager call)."""
    return [
        keras.ops.convert_to_numpy(y)
        for y in keras.tree.flatten(model(inputs, training=False))
    ]


def max_relative_difference(expected, actual):
    """max |a − e| / max |e| over all outputs."""
    return max(
        float(np.max(np.abs(a - e)) / np.max(np.abs(e)))
        for e, a in zip(expected, actual, strict=True)
    )


def train_step(model, inputs, learning_rate=0.01):
    """One eager training step with Adam on an MSE loss towards 0.5."""
    targets = keras.tree.map_structure(
        lambda y: np.full(y.shape, 0.5, "float32"),
        model(inputs, training=False),
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="mse",
        run_eagerly=True,
    )
    model.train_on_batch(inputs, targets)


@functools.cache
def converted_and_trained(name, method):
    """`(plain, converted, inputs)`: `name` converted by `method`, then
    trained one step on `inputs` (a batch of 3). Cached: do not mutate."""
    from keras_wc.conversion import convert

    plain = build(name)
    inputs = sample_inputs(plain, 3)
    converted = convert(plain, method)
    train_step(converted, inputs)
    return plain, converted, inputs


def graph_signature(model):
    """A canonical description of a model's layers and graph.

    Two models have the same signature when they hold the same layers (class
    and config) wired the same way, whatever the order in which shared
    layers were called while building them.
    """
    if isinstance(model, keras.Sequential):
        return [_layer_signature(layer) for layer in model.layers]
    config = model.get_config()
    layers = {entry["name"]: entry for entry in config["layers"]}

    def expression(ref):
        name, node_index, tensor_index = ref
        entry = layers[name]
        if entry["class_name"] == "InputLayer":
            return name
        node = entry["inbound_nodes"][node_index]
        args = ", ".join(expression(r) for r in _tensor_refs(node))
        return f"{name}[{tensor_index}]({args})"

    outputs = [expression(ref) for ref in _tensor_refs(config["output_layers"])]
    return {
        "layers": sorted(
            (
                _layer_signature(model.get_layer(name))
                for name in layers
                if layers[name]["class_name"] != "InputLayer"
            ),
            key=str,
        ),
        "outputs": outputs,
    }


def _layer_signature(layer):
    if isinstance(layer, keras.Model):
        return (layer.name, graph_signature(layer))
    return (type(layer).__name__, layer.get_config())


def _tensor_refs(item):
    """The [layer, node, tensor] triples in a serialized structure."""
    if isinstance(item, dict):
        if item.get("class_name") == "__keras_tensor__":
            return [tuple(item["config"]["keras_history"])]
        return [r for value in item.values() for r in _tensor_refs(value)]
    if isinstance(item, (list, tuple)):
        if len(item) == 3 and isinstance(item[0], str):
            return [tuple(item)]
        return [r for value in item for r in _tensor_refs(value)]
    return []
