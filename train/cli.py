"""`python -m train`: argparse → `Config` → `train.run`.

The command line only builds the configuration; the work is done by
`train.run`. Settings are layered: defaults, then `--preset`, then the JSON
`--config` file, then the flags given. Without any of `--preset`,
`--config`, `--model`, `--dataset`, `--method`, it runs the short offline
demo comparison (small CNN, baseline vs WC, on a Fashion-MNIST subset) with
the other flags applied to both runs.
"""

import argparse
import os
import sys
import time

from train import config as config_lib
from train import paths, presets
from train.config import Config, ConfigError

PROG = "python -m train"
# Flags that select a single run instead of the demo comparison.
_SINGLE_RUN = ("preset", "config", "model", "dataset", "method", "init_from")

_DESCRIPTION = """\
Train and test the networks of the weight compander (WC) paper and the
weight normalization (WN) recipe with keras_wc. Each run writes
results.json (per-seed test accuracy, mean ± std), config.json, per-seed CSV
history, TensorBoard logs and weight-distribution records/plots into --out,
and resumes where it stopped when run again with the same flags.

Without arguments: a short offline comparison, baseline vs WC, of a small
CNN on a Fashion-MNIST subset (scikit-learn's digits if the Fashion-MNIST
files are missing); a few minutes on 2 CPU cores.
"""

_EPILOG = """\
weight decay: --weight-decay is PyTorch's weight_decay (the papers' 1e-4,
5e-4), applied as keras_wc.l2_from_pytorch(wd) = L2(wd/2) on every kernel:
on Psi(v) for fixed WC (paper Eq. 5), on v for learnable WC (never on a, b),
on g*v/|v| for WN. With --weight-decay-scope all (default) biases and the
normalization layers' gamma/beta are decayed too, as PyTorch's
SGD(model.parameters(), weight_decay=wd) did in the papers' code; 'kernels'
decays the kernels only.

fine-tuning: --init-from FILE starts every seed from a trained model, a
.keras file (architecture and weights; it must return logits) or a
.weights.h5 file for the --model built here (e.g. a baseline run's
seed-<k>/best.weights.h5); {seed} in FILE stands for the seed number, so
each seed can start from its own baseline. --method wc then converts it
(--a auto --b auto: each layer's a from its own kernels, b = a) and
results.json also records the test accuracy before fine-tuning. With
--optimizer adamw or modified-adamw, --weight-decay is AdamW's decoupled
weight decay (PyTorch's AdamW weight_decay); modified-adamw decays Psi(v)
of fixed WC kernels (keras_wc.optimizers), never a, b or WN directions.
--export folds each seed's tested model and exports it (keras_wc.export) to
seed-<k>/export/ (SavedModel and export.keras), checking its accuracy.

examples:
  python -m train                                  # the demo comparison
  python -m train --list-presets
  python -m train --preset t2-resnet18-wc --data-dir ~/tensorflow_datasets
  python -m train --model small_cnn --dataset digits --method wc --a 1 --b 0.6
  python -m train.report runs/                     # table of finished runs
  python -m train --dataset digits --epochs 20 --seeds 3 --out runs/base
  python -m train --dataset digits --method wc --a auto --b auto \\
      --init-from 'runs/base/seed-{seed}/best.weights.h5' --seeds 3 \\
      --optimizer modified-adamw --lr 1e-3 --weight-decay 0.01 \\
      --schedule constant --epochs 5 --export --out runs/ft-wc
"""


class _Parser(argparse.ArgumentParser):
    """Reports errors as one line, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number_or_auto(text):
    """`--a`/`--b`: a float, or the word `auto`."""
    if text == config_lib.AUTO:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number or {config_lib.AUTO}, got {text!r}"
        ) from None


def _default(name):
    """` (default: ...)` of a field: `Config`'s, or the method's default of
    `config.METHOD_OPTIONS` for the method-specific ones."""
    if name in config_lib.METHOD_OPTIONS:
        value = config_lib.METHOD_OPTIONS[name][0]
    else:
        value = getattr(Config(), name)
    return f" (default: {value})"


def build_parser():
    """The argument parser. Defaults are not set on it (they come from
    `Config`, then the preset and the config file): every flag is absent
    from the parsed namespace unless given."""
    parser = _Parser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--preset",
        metavar="NAME",
        help="a row of the papers' tables (see --list-presets); other flags "
        "override its settings",
    )
    group.add_argument(
        "--list-presets",
        action="store_true",
        help="print every preset with the paper's published accuracy, exit",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help="JSON file of settings (keys: the flag names with _ for -, e.g. "
        "a saved config.json); flags override it",
    )
    group.add_argument(
        "--model", help="network from models.available()" + _default("model")
    )
    group.add_argument(
        "--dataset",
        help="cifar10, cifar100, imagenet2012, tiny_imagenet, fashion_mnist "
        "or digits" + _default("dataset"),
    )
    group.add_argument(
        "--init-from",
        metavar="FILE",
        help="fine-tune: start each seed from this trained model, a .keras "
        "file or a .weights.h5 file for --model; {seed} stands for the "
        "seed (see below)",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help="prepared TFDS data (cifar*, imagenet2012), the "
        "tiny-imagenet-200 folder, or Fashion-MNIST IDX files; nothing is "
        "ever downloaded",
    )

    group = parser.add_argument_group("reparameterization")
    group.add_argument(
        "--method",
        choices=config_lib.METHODS,
        help="none (the model as built, e.g. BN in ResNets), wc, pp, wn "
        "(+ data-dependent init), bn, mobn (the model's normalization), "
        "wn+mobn" + _default("method"),
    )
    group.add_argument(
        "--a",
        type=_number_or_auto,
        help="WC: a in a*f(v/b), or auto (per layer: its largest |w| at "
        "half the bound a*sup|f|)" + _default("a"),
    )
    group.add_argument(
        "--b",
        type=_number_or_auto,
        help="WC: b in a*f(v/b), or auto (Psi'(0) = 1, b = a for arctan)"
        + _default("b"),
    )
    group.add_argument(
        "--compander",
        choices=config_lib.COMPANDERS,
        help="WC: the function f" + _default("compander"),
    )
    group.add_argument(
        "--learnable",
        metavar="{none,fine,coarse}",
        help="WC: none (fixed a, b), fine (a, b per layer) or coarse (one "
        "pair); also false (= none) or true (= fine)" + _default("learnable"),
    )
    group.add_argument(
        "--alpha", type=float, help="PP: exponent alpha" + _default("alpha")
    )
    group.add_argument(
        "--init-scale",
        type=float,
        help="WN: scale of the data-dependent init" + _default("init_scale"),
    )
    group.add_argument(
        "--init-examples",
        type=int,
        help="WN: training images of the data-dependent init"
        + _default("init_examples"),
    )

    group = parser.add_argument_group("optimization")
    group.add_argument(
        "--optimizer",
        choices=config_lib.OPTIMIZERS,
        help="sgd, adam, modified-adam (WC paper §III-A.3), adamw or "
        "modified-adamw (decoupled --weight-decay)" + _default("optimizer"),
    )
    group.add_argument(
        "--lr", type=float, help="initial learning rate" + _default("lr")
    )
    group.add_argument(
        "--momentum", type=float, help="SGD momentum" + _default("momentum")
    )
    group.add_argument(
        "--schedule",
        choices=config_lib.SCHEDULES,
        help="step (x gamma at --milestones), wn-linear (lr*min(2-e/(E/2),1)"
        " and Adam beta_1 0.9 -> 0.5 at E/2) or constant"
        + _default("schedule"),
    )
    group.add_argument(
        "--milestones",
        type=int,
        nargs="*",
        metavar="EPOCH",
        help="epochs of the step decays (default: none)",
    )
    group.add_argument(
        "--gamma", type=float, help="step decay factor" + _default("gamma")
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        metavar="WD",
        help="PyTorch-convention weight decay (AdamW's own with adamw and "
        "modified-adamw), see below" + _default("weight_decay"),
    )
    group.add_argument(
        "--weight-decay-scope",
        choices=config_lib.WEIGHT_DECAY_SCOPES,
        help="all (kernels, biases, norm gamma/beta, as PyTorch) or kernels"
        + _default("weight_decay_scope"),
    )
    group.add_argument(
        "--epochs", type=int, help="training epochs" + _default("epochs")
    )
    group.add_argument(
        "--batch-size",
        type=int,
        help="global batch size" + _default("batch_size"),
    )
    group.add_argument(
        "--steps-per-epoch",
        type=int,
        help="optimizer steps per epoch, for smoke runs (default: one pass "
        "over the training set)",
    )

    group = parser.add_argument_group("data and seeds")
    group.add_argument(
        "--val-split",
        type=float,
        help="fraction of the training split held out; the best-on-"
        "validation weights are tested (0: the final weights)"
        + _default("val_split"),
    )
    group.add_argument(
        "--limit-train",
        type=int,
        metavar="N",
        help="train on N examples (stratified subset; default: all)",
    )
    group.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="the dataset's training augmentation" + _default("augment"),
    )
    group.add_argument(
        "--preprocess",
        choices=config_lib.PREPROCESSING,
        help="standard or zca (CIFAR, WN recipe)" + _default("preprocess"),
    )
    group.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train N networks, seeds 0..N-1" + _default("seeds"),
    )
    group.add_argument(
        "--out",
        metavar="DIR",
        help="output directory; a run there resumes (default: "
        "runs/<preset> or runs/<model>-<dataset>-<method>)",
    )

    group = parser.add_argument_group("execution")
    group.add_argument(
        "--strategy",
        choices=config_lib.STRATEGIES,
        help="default, mirrored (all GPUs, else all logical CPUs) or "
        "multiworker (TF_CONFIG)" + _default("strategy"),
    )
    group.add_argument(
        "--distribution",
        choices=config_lib.DISTRIBUTIONS,
        help="JAX: keras.distribution's DataParallel (data) or "
        "ModelParallel (model: every Dense/Conv kernel's output axis "
        "sharded on the mesh's model axis)" + _default("distribution"),
    )
    group.add_argument(
        "--mesh",
        metavar="BATCHxMODEL",
        help="the device mesh of --distribution (default: every device "
        "on the batch axis; for model, 2 on the model axis)",
    )
    group.add_argument(
        "--logical-cpus",
        type=int,
        metavar="N",
        help="split the CPU into N devices (to try --strategy mirrored or "
        "--distribution without GPUs)",
    )
    group.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        help="mixed_float16 compute (WC/WN kernels stay float32)"
        + _default("mixed_precision"),
    )
    group.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        help="XLA-compile the train step (default: Keras's choice for the "
        "backend: always on JAX, off on TensorFlow's CPU and on PyTorch)",
    )
    group.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        help="TensorFlow op determinism (needed for an exact resume)"
        + _default("deterministic"),
    )
    group.add_argument(
        "--run-eagerly",
        action=argparse.BooleanOptionalAction,
        help="run the train step eagerly, for debugging"
        + _default("run_eagerly"),
    )
    group.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        help="fold and export each seed's tested model to seed-<k>/export"
        + _default("export"),
    )
    group.add_argument(
        "--verbose",
        choices=config_lib.VERBOSITY,
        help="auto (progress bar on a terminal, else a line per epoch), 0, "
        "1 or 2" + _default("verbose"),
    )
    return parser


def make_config(given):
    """The resolved `Config` of the parsed flags `given` (a dict).

    Raises:
        ConfigError: a bad value, file or combination.
    """
    config = Config()
    preset = given.get("preset")
    if preset is not None:
        try:
            settings = presets.get(preset)["config"]
            config = config.replace(preset=preset, **settings)
        except ValueError as error:
            raise ConfigError(str(error)) from error
    if "config" in given:
        config = config.replace(**config_lib.load_file(given["config"]))
    flags = {k: v for k, v in given.items() if k in Config.fields()}
    return config.replace(**flags).resolve()


def demo_configs(given, log=print):
    """The two resolved configs of the demo comparison (baseline, WC)."""
    from train.data import fashion_mnist

    out = given.get("out", os.path.join("runs", "demo"))
    fallback = {}
    if given.get("dataset") is None and (
        fashion_mnist.idx_dir(given.get("data_dir")) is None
    ):
        log(
            "notice: the Fashion-MNIST files are missing (Debian package "
            "dataset-fashion-mnist); running the comparison on "
            "scikit-learn's digits instead."
        )
        fallback = dict(presets.DEMO_FALLBACK)
    configs = []
    for name in ("demo-base", "demo-wc"):
        settings = {**presets.get(name)["config"], **fallback}
        flags = {
            k: v
            for k, v in given.items()
            if k in Config.fields() and k != "out"
        }
        configs.append(
            Config()
            .replace(preset=name, **settings)
            .replace(out=os.path.join(out, name), **flags)
            .resolve()
        )
    return configs


def _check_names(config):
    import models
    from train import data

    if config.model not in models.available():
        raise ConfigError(
            f"--model must be one of {', '.join(models.available())}, got "
            f"{config.model!r}"
        )
    if config.dataset not in data.available():
        raise ConfigError(
            f"--dataset must be one of {', '.join(data.available())}, got "
            f"{config.dataset!r}"
        )


def main(argv=None):
    """Runs `python -m train` with `argv` (default `sys.argv[1:]`).

    Every flag, file and path is checked before anything is written.

    Returns:
        0 on success, 2 for a bad flag, file, path or combination (a one-line
        message on stderr).
    """
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    if given.pop("list_presets", False):
        print(presets.listing())
        return 0
    start = time.time()
    try:
        if any(key in given for key in _SINGLE_RUN):
            configs = [make_config(given)]
        else:
            # Checked before `demo_configs` builds paths from them.
            if "out" in given:
                paths.check_output_dir("--out", given["out"])
            if "data_dir" in given:
                paths.check_input_dir("--data-dir", given["data_dir"])
            configs = demo_configs(given)
        for config in configs:
            _check_names(config)
            paths.check_config(config)
        from train import report, run

        results = [run.run(config) for config in configs]
    except (ConfigError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else repr(error)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    print()
    print(report.table(results))
    outs = " ".join(r["output_dir"] for r in results)
    print(
        f"\n{len(results)} run(s) in {time.time() - start:.0f} s. "
        f"Outputs: {outs}\nReprint: python -m train.report {outs}"
    )
    return 0
