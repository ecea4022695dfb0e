"""`python -m train`: parsing, defaults, layering, errors, the demo job."""

import json
import os
import re
import subprocess
import sys

import pytest

from train import cli, presets
from train import config as config_lib
from train.config import Config, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _given(argv):
    return vars(cli.build_parser().parse_args(argv))


@pytest.mark.backend_independent
def test_flags_are_absent_unless_given_and_defaults_come_from_config():
    assert _given([]) == {}
    config = cli.make_config(_given(["--model", "mlp"]))
    assert config == Config(model="mlp").resolve()
    assert (config.lr, config.batch_size, config.val_split, config.seeds) == (
        0.1, 128, 0.1, 1
    )


@pytest.mark.backend_independent
def test_flags_parse_to_config_fields():
    config = cli.make_config(_given([
        "--model", "resnet18", "--dataset", "cifar10", "--method", "wc",
        "--a", "0.8", "--b", "0.5", "--compander", "erf",
        "--learnable", "fine", "--optimizer", "modified-adam", "--lr", "0.01",
        "--schedule", "step", "--milestones", "3", "5", "--gamma", "0.2",
        "--weight-decay", "5e-4", "--weight-decay-scope", "kernels",
        "--epochs", "7", "--batch-size", "32", "--seeds", "3",
        "--val-split", "0.2", "--limit-train", "100", "--no-augment",
        "--out", "x", "--strategy", "default", "--mixed-precision", "--jit",
        "--steps-per-epoch", "4", "--no-deterministic", "--verbose", "2",
    ]))
    assert (config.a, config.b, config.compander, config.learnable) == (
        0.8, 0.5, "erf", "fine"
    )
    assert config.milestones == [3, 5] and config.augment is False
    assert (config.optimizer, config.weight_decay_scope, config.seeds) == (
        "modified-adam", "kernels", 3
    )
    assert config.mixed_precision and config.jit and not config.deterministic
    assert config.strategy == "default"
    assert config.steps_per_epoch == 4 and config.verbose == "2"


@pytest.mark.backend_independent
def test_method_defaults_are_filled():
    wc = cli.make_config(_given(["--method", "wc"]))
    assert (wc.a, wc.b, wc.compander, wc.alpha) == (1.0, 1.0, "arctan", None)
    pp = cli.make_config(_given(["--method", "pp"]))
    assert (pp.alpha, pp.a) == (2.0, None)
    wn = cli.make_config(_given(["--method", "wn+mobn"]))
    assert (wn.init_scale, wn.init_examples) == (1.0, 500)


@pytest.mark.backend_independent
def test_preset_then_config_file_then_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 7, "lr": 0.01, "b": 0.9}))
    config = cli.make_config(_given([
        "--preset", "t2-resnet18-wc", "--config", str(path), "--lr", "0.02",
    ]))
    assert config.preset == "t2-resnet18-wc"
    assert (config.a, config.b) == (1.0, 0.9)  # preset, then file
    assert (config.epochs, config.lr) == (7, 0.02)  # file, then flag
    assert config.milestones == [90, 136]


@pytest.mark.backend_independent
def test_saved_config_json_is_a_valid_config_file(tmp_path):
    config = cli.make_config(_given(["--preset", "wn-wn-mobn"]))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    again = cli.make_config(_given(["--config", str(path)]))
    assert again == config


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "value, mode",
    [("none", "none"), ("fine", "fine"), ("coarse", "coarse"),
     ("false", "none"), ("true", "fine"), ("FALSE", "none"),
     ("True", "fine"), ("Coarse", "coarse")],
)
def test_learnable_vocabulary_of_the_layers(value, mode):
    config = cli.make_config(_given(["--method", "wc", "--learnable", value]))
    assert config.learnable == mode


@pytest.mark.backend_independent
@pytest.mark.parametrize("value, mode", [(True, "fine"), (False, "none"),
                                         ("coarse", "coarse")])
def test_config_file_learnable_true_false(value, mode, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"method": "wc", "learnable": value}))
    config = cli.make_config(_given(["--config", str(path)]))
    assert config.learnable == mode
    assert Config(method="wc", learnable=value).resolve() == config


@pytest.mark.backend_independent
def test_help_defaults_come_from_config_and_method_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    group = text.split("reparameterization:")[1].split("optimization:")[0]
    for name, (default, _) in config_lib.METHOD_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        help_ = group.split(flag + " ", 1)[1].split(" --", 1)[0].strip()
        assert help_.endswith(f"(default: {default})"), help_


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--method", "wn", "--learnable", "fine"],
         "--learnable fine needs --method wc, not wn"),
        (["--method", "pp", "--a", "1"], "--a applies to --method wc, not pp"),
        (["--method", "wc", "--alpha", "3"], "--alpha applies to --method pp"),
        (["--method", "none", "--init-scale", "2"],
         "--init-scale applies to --method wn or wn\\+mobn"),
        (["--preset", "nope"], "Unknown preset 'nope'"),
        (["--model", "resnet50", "--dataset", "imagenet2012"],
         "--dataset imagenet2012 needs --data-dir"),
        (["--preset", "t4-resnet50-wc"], "needs --data-dir"),
        (["--model", "nope"], "--model must be one of .*resnet18"),
        (["--model", "mlp", "--dataset", "mnist"], "--dataset must be one of"),
        (["--method", "foo"], "invalid choice: 'foo'"),
        (["--epochs", "0", "--model", "mlp"], "--epochs must be a positive"),
        (["--lr", "-1", "--model", "mlp"], "--lr must be > 0"),
        (["--val-split", "1", "--model", "mlp"], "--val-split must be in"),
        (["--epochs", "x"], "invalid int value: 'x'"),
        (["--config", "/nonexistent.json"], "cannot read --config"),
        (["--model", "mlp", "--milestones", "5", "3"],
         "--milestones must be strictly increasing"),
        (["--model", "mlp", "--schedule", "constant", "--milestones", "3"],
         "--milestones only applies to --schedule step"),
        (["--model", "mlp", "--strategy", "multiworker"],
         "needs the TF_CONFIG environment variable"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, pattern, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("python -m train: error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.backend_independent
def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        cli.make_config({"config": str(bad)})
    bad.write_text('{"epoch": 3}')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        cli.make_config({"config": str(bad)})
    bad.write_text("[1]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        cli.make_config({"config": str(bad)})


@pytest.mark.backend_independent
def test_error_in_a_subprocess_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "train", "--method", "pp", "--a", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m train: error: --a applies to --method wc, not pp"
    ]


@pytest.mark.backend_independent
def test_list_presets_and_help(capsys):
    assert cli.main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    for name in presets.names():
        assert name in out
    assert "76.47 ± 0.20" in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for group in ("experiment:", "reparameterization:", "optimization:",
                  "data and seeds:", "execution:"):
        assert group in text
    assert "(default: 0.1)" in text and "--weight-decay" in text
    assert "SGD(model.parameters(), weight_decay=wd)" in text


@pytest.mark.backend_independent
def test_demo_configs_and_the_digits_fallback(monkeypatch):
    messages = []
    base, wc = cli.demo_configs({"epochs": 2}, log=messages.append)
    assert (base.method, wc.method, wc.a, wc.b) == ("none", "wc", 1.0, 0.6)
    assert base.dataset == "fashion_mnist" and base.limit_train == 4000
    assert base.epochs == wc.epochs == 2
    assert base.out == os.path.join("runs", "demo", "demo-base")

    from train.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "idx_dir", lambda data_dir: None)
    base, wc = cli.demo_configs({}, log=messages.append)
    assert base.dataset == wc.dataset == "digits"
    assert base.limit_train is None
    assert "running the comparison on scikit-learn's digits" in messages[-1]


def test_default_job_runs_the_comparison_on_a_tiny_limit(tmp_path, capsys):
    code = cli.main([
        "--limit-train", "200", "--epochs", "1", "--seeds", "1",
        "--out", str(tmp_path), "--verbose", "0",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "| small CNN | Fashion-MNIST (200 train) |" in out
    assert "| small CNN + WC | Fashion-MNIST (200 train) |" in out
    for name in ("demo-base", "demo-wc"):
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["preset"] == name and results["complete"]
        assert results["seeds"][0]["num_train"] == 200
