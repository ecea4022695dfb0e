"""`python -m train.report OUT [OUT ...]`: runs as a table in paper format.

Each `OUT` is a run directory (holding `results.json`), a `results.json`
file, or a directory searched recursively for run directories. The table has
one row per run, "Model | Accuracy" as in the WC paper's tables (mean ± std
over the seeds, in %), beside the paper's published number for presets:

    | Model | Dataset | Accuracy | Paper | Seeds |
    |---|---|---|---|---|
    | ResNet18 + WC | CIFAR-10 | 94.41% ± 0.10% | 94.44% ± 0.12% | 5 |

The standard deviation is the sample standard deviation over the seeds
(`ddof=1`; 0 for one seed).
"""

import argparse
import os
import sys

from train import paths, results
from train.config import ConfigError

_DATASETS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet2012": "ImageNet",
    "tiny_imagenet": "TinyImageNet",
    "fashion_mnist": "Fashion-MNIST",
    "digits": "digits",
}


def find_results(outs):
    """The `results.json` files under `outs`, in the order given.

    Raises:
        FileNotFoundError: a path is missing or holds no results.json.
    """
    found = []
    for path in outs:
        if os.path.isfile(path):
            found.append(path)
            continue
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such file or directory: {path}")
        direct = os.path.join(path, results.FILE)
        if os.path.isfile(direct):
            found.append(direct)
            continue
        nested = sorted(
            os.path.join(root, results.FILE)
            for root, _, files in os.walk(path)
            if results.FILE in files and "/.workers" not in root
        )
        if not nested:
            raise FileNotFoundError(f"no results.json under {path}")
        found.extend(nested)
    return found


def load(outs):
    """The results dicts of the runs under `outs` (see `find_results`).

    Raises:
        FileNotFoundError: see `find_results`.
        ConfigError: a results.json is malformed (`train.results.read`).
    """
    return [results.read(path) for path in find_results(outs)]


def _format(mean, std):
    if mean is None:
        return "–"
    if std is None:
        return f"{mean:.2f}%"
    return f"{mean:.2f}% ± {std:.2f}%"


def row(run):
    """`(model, dataset, accuracy, paper, seeds)` cells of one run."""
    config = run["config"]
    summary = run.get("test_acc")
    accuracy = (
        _format(100 * summary["mean"], 100 * summary["std"])
        if summary
        else "–"
    )
    paper = run.get("paper")
    paper_cell = _format(paper["mean"], paper["std"]) if paper else "–"
    done = len(run.get("seeds", []))
    seeds = str(done)
    if done < config["seeds"]:
        seeds = f"{done}/{config['seeds']} (running)"
    dataset = _DATASETS.get(config["dataset"], config["dataset"])
    if config.get("limit_train"):
        dataset += f" ({config['limit_train']} train)"
    return run["label"], dataset, accuracy, paper_cell, seeds


def table(runs):
    """The Markdown table of a list of results dicts."""
    lines = [
        "| Model | Dataset | Accuracy | Paper | Seeds |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row(run)) + " |" for run in runs]
    return "\n".join(lines)


def main(argv=None):
    """`python -m train.report`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m train.report",
        description=(
            "Aggregate runs of `python -m train` into a Markdown table in the "
            "WC paper's format (test accuracy, mean ± std over seeds, in %), "
            "beside the paper's published number for presets."
        ),
    )
    parser.add_argument(
        "outs",
        nargs="+",
        metavar="OUT",
        help="a run directory (with results.json), a results.json file, or "
        "a directory searched recursively",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="also write the table to FILE (Markdown)",
    )
    args = parser.parse_args(argv)
    try:
        files = find_results(args.outs)
        if args.output is not None:
            _check_output(args.output, files)
        text = table(load(files))
    except (ConfigError, FileNotFoundError) as error:
        print(f"python -m train.report: error: {error}", file=sys.stderr)
        return 2
    print(text)
    if args.output is not None:
        with open(args.output, "w") as file:
            file.write(text + "\n")
    return 0


def _check_output(output, inputs):
    """`--output` can be written and is none of the results files read."""
    paths.check_output_file("--output", output)
    for path in inputs:
        if os.path.exists(output) and os.path.samefile(output, path):
            raise ConfigError(
                f"--output {output} is one of the results files read"
            )


if __name__ == "__main__":
    sys.exit(main())
