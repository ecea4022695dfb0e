"""Reach on keras-hub models: kernels converted, function kept, time taken.

For tiny keras-hub backbones built from a config (no download), each method
converts the model in place, and the table gives the kernels the model holds
and those converted, the largest relative output difference after `convert`
and after `fold` (against the original model), and the time each took.

    python -m bench.reach        # about a minute; writes bench/results/reach.*
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_wc  # noqa: E402
from bench import machine, output  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
METHODS = {"wc": {"a": 2.0, "b": 0.8}, "pp": {}, "wn": {}}

TINY_TEXT = {
    "vocabulary_size": 50,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 8,
    "intermediate_dim": 16,
    "max_sequence_length": 8,
}


def bert():
    return keras_hub.models.BertBackbone(**TINY_TEXT)


def gpt2():
    return keras_hub.models.GPT2Backbone(**TINY_TEXT)


def resnet():
    # The smallest ResNetBackbone its checks allow (first stack of 64).
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )


def vit():
    return keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
    )


def text_inputs(segments=True, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(1, 50, (batch, 8)).astype("int32"),
        "padding_mask": np.ones((batch, 8), "int32"),
    }
    if segments:
        x["segment_ids"] = np.zeros((batch, 8), "int32")
    return x


def images(shape, seed=0):
    return np.random.default_rng(seed).random((2, *shape)).astype("f4")


# name -> (builder, inputs, kernels the model holds)
MODELS = {
    "BertBackbone": (bert, lambda: text_inputs(), 13),
    "GPT2Backbone": (gpt2, lambda: text_inputs(segments=False), 12),
    "ResNetBackbone": (resnet, lambda: images((32, 32, 3)), 6),
    "ViTBackbone": (vit, lambda: images((16, 16, 3)), 7),
}


def relative(actual, expected):
    """Largest |actual − expected| / max |expected| over the outputs."""
    pairs = zip(
        keras.tree.flatten(actual), keras.tree.flatten(expected), strict=True
    )
    return max(
        float(
            np.max(np.abs(np.asarray(a, "f8") - np.asarray(e, "f8")))
            / (np.max(np.abs(np.asarray(e, "f8"))) + 1e-12)
        )
        for a, e in pairs
    )


def measure(name, method):
    build, make_inputs, _ = MODELS[name]
    model = build()
    x = make_inputs()
    expected = model(x)
    start = time.perf_counter()
    _, report = keras_wc.convert(
        model, method, inplace=True, return_report=True, **METHODS[method]
    )
    convert_s = time.perf_counter() - start
    converted = relative(model(x), expected)
    start = time.perf_counter()
    folded = keras_wc.fold(model)
    fold_s = time.perf_counter() - start
    return {
        "kernels": report.kernels,
        "converted_kernels": report.converted_kernels,
        "after_convert": converted,
        "after_fold": relative(folded(x), expected),
        "convert_s": convert_s,
        "fold_s": fold_s,
    }


def run():
    return {
        "machine": machine.describe(),
        "versions": {
            "keras": keras.__version__,
            "keras_hub": keras_hub.__version__,
            "keras_wc": keras_wc.__version__,
            "backend": keras.backend.backend(),
        },
        "models": {
            name: {method: measure(name, method) for method in METHODS}
            for name in MODELS
        },
    }


def to_markdown(result):
    lines = [
        f"Machine: {machine.line(result['machine'])}; Keras "
        f"{result['versions']['keras']}, keras-hub "
        f"{result['versions']['keras_hub']}, backend "
        f"{result['versions']['backend']}.",
        "",
        "| model | method | kernels converted / in the model | rel. diff "
        "after convert | after fold | convert (s) | fold (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["models"].items():
        for method, row in rows.items():
            lines.append(
                f"| {name} | {method} | {row['converted_kernels']} / "
                f"{row['kernels']} | {row['after_convert']:.1e} | "
                f"{row['after_fold']:.1e} | {row['convert_s']:.2f} | "
                f"{row['fold_s']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    result = run()
    output.write(args.out, "reach", result, to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
