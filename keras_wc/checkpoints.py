"""Plain checkpoints: a plain model's weights into a reparameterized model,
and a reparameterized model's effective weights as a plain checkpoint.

A reparameterized layer holds raw variables (`v`, and `g` for WN, `a`, `b`
for learnable WC), not the kernel a plain checkpoint holds: a plain kernel
`w` loaded as it is into `v` gives another function. `load_plain_weights`
loads `w` through the right inverse of each layer's reparameterization
(`v = Ψ⁻¹(w)`, WN's `v = w, g = ‖w‖`), the other weights as they are;
`save_plain_weights` writes what `keras_wc.fold` computes.
"""

import os

import numpy as np
from keras import ops

from keras_wc import inplace_saving, internals, rebuilding, tree
from keras_wc.folding import fold, fold_in_place
from keras_wc.layers.recurrent import RecurrentMixin


def load_plain_weights(model, filepath):
    """Loads a plain model's `.weights.h5` checkpoint into `model`.

    The checkpoint is one of the plain model `model` was converted from (or
    of `keras_wc.fold(model)`: the same layers, plain): each kernel goes
    through its layer's right inverse (`v = Ψ⁻¹(w)`; WN: `v = w`,
    `g = ‖w‖`; learnable `a`, `b` keep their values), every other weight is
    loaded as it is. Everything is read and checked before any variable of
    `model` changes.

    Args:
        model: a built Keras model, reparameterized or not.
        filepath: the plain model's `.weights.h5` file
            (`plain.save_weights(filepath)`).

    Raises:
        TypeError, ValueError: `model` is not a built model; `filepath` is
            not a `.weights.h5` file, does not match the plain form of
            `model`, or holds a kernel a layer cannot represent (e.g. WC
            with `|w| ≥ a·π/2`).
        FileNotFoundError: no file at `filepath`.
    """
    tree.check_model(model, "load_plain_weights")
    filepath = os.fspath(filepath)
    if not filepath.endswith(".weights.h5"):
        raise ValueError(
            "`filepath` must be a `.weights.h5` file written by "
            f"`save_weights`. Received: filepath={filepath!r}"
        )
    if not os.path.isfile(filepath):
        raise FileNotFoundError(
            f"No checkpoint at `filepath`. Received: filepath={filepath!r}"
        )
    plain = fold_in_place(rebuilding.copy_model(model))
    try:
        plain.load_weights(filepath)
    except ValueError as error:
        raise ValueError(
            f"`filepath` holds no weights of the plain form of model "
            f"'{model.name}' ({error}). Received: filepath={filepath!r}"
        ) from error
    assignments = []
    for node, twin in zip(tree.walk(model), tree.walk(plain), strict=True):
        assignments += _assignments(node.layer, twin.layer)
    for variable, value in assignments:
        variable.assign(value)
    tree.drop_traced_functions(model)


def save_plain_weights(model, filepath):
    """Writes the effective weights of `model` as the `.weights.h5`
    checkpoint of its plain form: what `keras_wc.fold(model).save_weights`
    writes, loadable by the plain model without keras_wc.

    Args:
        model: a built Keras model.
        filepath: where to write, ending with `.weights.h5`.
    """
    fold(model).save_weights(filepath)


def _assignments(layer, plain):
    """(variable of `layer`, value) pairs giving it the weights of its
    plain twin `plain` (a recurrent layer's are its cell's, visited on its
    own); raises before anything changes."""
    if isinstance(layer, RecurrentMixin):
        return []
    own = internals.own_variables(layer)
    plain_own = internals.own_variables(plain)
    values = [np.asarray(ops.convert_to_numpy(v)) for v in plain_own]
    if not inplace_saving.is_reparameterized(layer):
        if len(values) != len(own):
            raise ValueError(
                f"Layer '{layer.name}' has {len(own)} weights, its "
                f"plain form {len(values)}: the checkpoint's model is not "
                "this one's plain form."
            )
        return list(zip(own, values, strict=True))
    by_name = {
        v.name: value for v, value in zip(plain_own, values, strict=True)
    }
    pairs = []
    for name, group in layer._raw_groups.items():
        raw = layer._right_inverse(name, by_name[name].astype("float32"))
        pairs += [
            (variable, np.reshape(value, variable.shape))
            for variable, value in zip(group, raw, strict=True)
        ]
    reparameterization = {id(v) for v in layer._raw_variables()}
    for variable in own:
        if id(variable) not in reparameterization:
            pairs.append((variable, by_name[variable.name]))
    return pairs
