"""`python -m train.report`: the Markdown table of runs."""

import json

import numpy as np
import pytest

from train import report, run
from train.config import Config
from train.results import default_label


def _results(tmp_path, name, accs, preset=None, label="ResNet18 + WC",
             paper=None, seeds=None):
    config = Config(model="resnet18", dataset="cifar10", method="wc",
                    seeds=seeds or len(accs), preset=preset)
    directory = tmp_path / name
    directory.mkdir(parents=True)
    content = {
        "label": label,
        "preset": preset,
        "paper": paper,
        "config": config.to_dict(),
        "seeds": [{"seed": i, "test_acc": a} for i, a in enumerate(accs)],
        "test_acc": {
            "mean": sum(accs) / len(accs),
            "std": 0.0 if len(accs) == 1 else float(np.std(accs, ddof=1)),
            "n": len(accs),
        },
    }
    (directory / "results.json").write_text(json.dumps(content))
    return directory


@pytest.mark.backend_independent
def test_table_has_the_papers_format_beside_the_published_number(tmp_path):
    _results(tmp_path, "a", [0.9440, 0.9452, 0.9430],
             preset="t2-resnet18-wc", paper={"mean": 94.44, "std": 0.12})
    _results(tmp_path, "b", [0.5], label="small_cnn", seeds=3)
    text = report.table(report.load([tmp_path]))
    lines = text.splitlines()
    assert lines[0] == "| Model | Dataset | Accuracy | Paper | Seeds |"
    assert lines[2] == (
        "| ResNet18 + WC | CIFAR-10 | 94.41% ± 0.11% | 94.44% ± 0.12% | 3 |"
    )
    assert lines[3] == "| small_cnn | CIFAR-10 | 50.00% ± 0.00% | – | 1/3 " \
        "(running) |"


@pytest.mark.backend_independent
def test_main_prints_and_writes(tmp_path, capsys):
    directory = _results(tmp_path, "a", [0.9])
    output = tmp_path / "table.md"
    assert report.main([str(directory / "results.json"), "--output",
                        str(output)]) == 0
    printed = capsys.readouterr().out
    assert "90.00% ± 0.00%" in printed
    assert output.read_text() == printed


@pytest.mark.backend_independent
def test_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"python -m train.report: error: no such file or directory: "
        f"{tmp_path / 'nope'}"
    ]
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no results.json under" in capsys.readouterr().err


def test_report_of_a_tiny_real_run(tmp_path, capsys):
    config = Config(
        model="mlp", dataset="digits", method="pp", epochs=1,
        limit_train=64, batch_size=32, seeds=2, out=str(tmp_path / "pp"),
        verbose="0",
    ).resolve()
    results = run.run(config, log=lambda m: None)
    assert report.main([str(tmp_path)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    mean = 100 * results["test_acc"]["mean"]
    std = 100 * results["test_acc"]["std"]
    assert row == (
        f"| mlp + PP | digits (64 train) | {mean:.2f}% ± {std:.2f}% | – | 2 |"
    )


@pytest.mark.backend_independent
def test_default_label():
    config = Config(method="wc", compander="erf", learnable="fine").resolve()
    assert default_label(config) == (
        "small_cnn + WC (erf) (learnable, fine)"
    )
    assert default_label(Config(model="mlp").resolve()) == "mlp"


@pytest.mark.parametrize("method, suffix", [("wn+mobn", " + WN + MOBN"),
                                            ("bn", " + BN")])
def test_labels_of_norm_methods(method, suffix):
    assert default_label(Config(method=method).resolve()) == (
        "small_cnn" + suffix
    )
