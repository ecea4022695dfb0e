"""Bad input to `python -m train` and `python -m train.report`.

Each case exits with status 2 and one line naming the flag or file and the
value, and leaves every file and directory as it was.
"""

import hashlib
import json
import os
import re

import pytest

from train import cli, report
from train.config import Config

# Nothing here depends on the Keras backend: run once (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

_SMALL = ["--model", "mlp", "--dataset", "digits"]


def _setup(tmp):
    """The files the cases refer to."""
    (tmp / "afile").write_text("x")
    (tmp / "bad.json").write_text("{")
    (tmp / "list.json").write_text("[1]")
    (tmp / "str-lr.json").write_text('{"lr": "0.1"}')
    (tmp / "unknown.json").write_text('{"epoch": 3}')
    (tmp / "bool-aug.json").write_text('{"augment": "no"}')
    (tmp / "a-word.json").write_text('{"method": "wc", "a": "large"}')
    (tmp / "a-dir").mkdir()
    (tmp / "a-dir.keras").mkdir()
    (tmp / "garbage.keras").write_text("not a zip")
    (tmp / "garbage.weights.h5").write_text("not HDF5")
    (tmp / "seed-0.weights.h5").write_text("only seed 0")
    _model_file(tmp / "wrong-shape.keras")
    runs = {
        "notjson": "{",
        "nolabel": _results(label=None),
        "noconfig": _results(config=None),
        "listconfig": _results(config=[1]),
        "strseeds": _results(config_changes={"seeds": "3"}),
        "strmean": _results(test_acc={"mean": "0.9", "std": 0.0}),
        "seedsdict": _results(seeds={"0": 0.9}),
        "list": [1],
        "good": _results(),
    }
    for name, content in runs.items():
        (tmp / "r" / name).mkdir(parents=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp / "r" / name / "results.json").write_text(text)
    # An --out holding the results of another configuration.
    other = _results(config_changes={"epochs": 99})
    (tmp / "other").mkdir()
    (tmp / "other" / "results.json").write_text(json.dumps(other))


_MISSING = object()


def _model_file(path):
    """A .keras model that does not fit digits (8×8×1 → 10)."""
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(3)(inputs)).save(path)


def _results(label="mlp", config=_MISSING, config_changes=None,
             seeds=_MISSING, test_acc=_MISSING):
    config = (
        Config(model="mlp", dataset="digits", **(config_changes or {}))
        .to_dict()
        if config is _MISSING
        else config
    )
    content = {
        "label": label,
        "config": config,
        "seeds": [{"seed": 0, "test_acc": 0.9}] if seeds is _MISSING
        else seeds,
        "test_acc": {"mean": 0.9, "std": 0.0, "n": 1}
        if test_acc is _MISSING
        else test_acc,
    }
    return {k: v for k, v in content.items() if v is not None}


def _not_writable(tmp):
    """A directory this process cannot write into, or None (root writes
    into a read-only mode directory; /proc/sys is read-only in most
    containers)."""
    directory = tmp / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    for candidate in (str(directory), "/proc/sys"):
        if os.path.isdir(candidate) and not os.access(candidate, os.W_OK):
            return candidate
    return None


# (id, command, argv, pattern of the one-line message). "{tmp}" stands for
# the temporary directory (also the working directory), "{ro}" for a
# directory that cannot be written.
CASES = [
    # --out
    ("out-is-a-file", "train", _SMALL + ["--out", "afile"],
     r"--out afile exists and is not a directory"),
    ("out-under-a-file", "train", _SMALL + ["--out", "afile/run"],
     r"--out afile/run: {tmp}/afile is not a directory"),
    ("out-empty", "train", _SMALL + ["--out", ""],
     r"--out must be a non-empty path, got ''"),
    ("out-not-writable", "train", _SMALL + ["--out", "{ro}/run"],
     r"--out {ro}/run is not writable \({ro}\)"),
    ("demo-out-is-a-file", "train", ["--epochs", "1", "--out", "afile"],
     r"--out afile exists and is not a directory"),
    ("out-has-malformed-results", "train",
     _SMALL + ["--out", "r/noconfig"],
     r"r/noconfig/results.json: missing key 'config'"),
    ("out-has-another-config", "train", _SMALL + ["--out", "other"],
     r"other holds results of another configuration"),
    # --config
    ("config-missing", "train", ["--config", "nope.json"],
     r"cannot read --config nope.json: No such file"),
    ("config-is-a-directory", "train", ["--config", "a-dir"],
     r"cannot read --config a-dir: Is a directory"),
    ("config-not-json", "train", ["--config", "bad.json"],
     r"--config bad.json is not valid JSON"),
    ("config-not-an-object", "train", ["--config", "list.json"],
     r"--config list.json must hold a JSON object, got list \[1\]"),
    ("config-wrong-type", "train", ["--config", "str-lr.json"],
     r"--config str-lr.json: 'lr' must be a number, got '0.1'"),
    ("config-bool-not-bool", "train", ["--config", "bool-aug.json"],
     r"--config bool-aug.json: 'augment' must be true or false, got 'no'"),
    ("config-unknown-key", "train", ["--config", "unknown.json"],
     r"--config unknown.json has unknown key\(s\) \['epoch'\]"),
    # --data-dir
    ("data-dir-missing", "train", _SMALL + ["--data-dir", "nope"],
     r"--data-dir nope does not exist"),
    ("data-dir-is-a-file", "train", _SMALL + ["--data-dir", "afile"],
     r"--data-dir afile is not a directory"),
    ("demo-data-dir-is-a-file", "train", ["--data-dir", "afile"],
     r"--data-dir afile is not a directory"),
    # Numbers
    ("lr-nan", "train", _SMALL + ["--lr", "nan"],
     r"--lr must be a finite number, got nan"),
    ("lr-inf", "train", _SMALL + ["--lr", "inf"],
     r"--lr must be a finite number, got inf"),
    ("lr-zero", "train", _SMALL + ["--lr", "0"], r"--lr must be > 0, got 0"),
    ("a-nan", "train", _SMALL + ["--method", "wc", "--a", "nan"],
     r"--a must be a finite number, got nan"),
    ("b-negative", "train", _SMALL + ["--method", "wc", "--b", "-1"],
     r"--b must be > 0, got -1"),
    ("alpha-inf", "train", _SMALL + ["--method", "pp", "--alpha", "inf"],
     r"--alpha must be a finite number, got inf"),
    ("init-scale-zero", "train",
     _SMALL + ["--method", "wn", "--init-scale", "0"],
     r"--init-scale must be > 0, got 0"),
    ("weight-decay-inf", "train", _SMALL + ["--weight-decay", "inf"],
     r"--weight-decay must be a finite number, got inf"),
    ("weight-decay-negative", "train", _SMALL + ["--weight-decay=-1e-4"],
     r"--weight-decay must be >= 0, got -0.0001"),
    ("momentum-above-1", "train", _SMALL + ["--momentum", "1.5"],
     r"--momentum must be in \[0, 1\], got 1.5"),
    ("gamma-nan", "train", _SMALL + ["--gamma", "nan"],
     r"--gamma must be a finite number, got nan"),
    ("seeds-zero", "train", _SMALL + ["--seeds", "0"],
     r"--seeds must be a positive integer, got 0"),
    ("epochs-zero", "train", _SMALL + ["--epochs", "0"],
     r"--epochs must be a positive integer, got 0"),
    ("epochs-not-int", "train", _SMALL + ["--epochs", "x"],
     r"argument --epochs: invalid int value: 'x'"),
    ("batch-size-zero", "train", _SMALL + ["--batch-size", "0"],
     r"--batch-size must be a positive integer, got 0"),
    ("val-split-one", "train", _SMALL + ["--val-split", "1"],
     r"--val-split must be in \[0, 1\), got 1"),
    ("val-split-negative", "train", _SMALL + ["--val-split", "-0.1"],
     r"--val-split must be in \[0, 1\), got -0.1"),
    ("limit-train-zero", "train", _SMALL + ["--limit-train", "0"],
     r"--limit-train must be a positive integer, got 0"),
    # Vocabulary and combinations
    ("learnable-unknown", "train",
     _SMALL + ["--method", "wc", "--learnable", "maybe"],
     r"--learnable must be none, fine, coarse, false or true, got 'maybe'"),
    ("learnable-without-wc", "train",
     _SMALL + ["--method", "pp", "--learnable", "TRUE"],
     r"--learnable TRUE needs --method wc, not pp"),
    ("zca-on-digits", "train", _SMALL + ["--preprocess", "zca", "--out", "z"],
     r"`preprocess='zca'` is only defined for .*name='digits'"),
    ("limit-train-above-the-data", "train",
     _SMALL + ["--limit-train", "100000", "--out", "big"],
     r"`limit_train` must be at most .* limit_train=100000"),
    # Fine-tuning: --init-from, --a/--b auto, --optimizer
    ("init-from-missing", "train", ["--init-from", "nope.keras"],
     r"--init-from nope.keras does not exist"),
    ("init-from-a-directory", "train", _SMALL + ["--init-from", "a-dir.keras"],
     r"--init-from a-dir.keras is a directory"),
    ("init-from-no-suffix", "train", _SMALL + ["--init-from", "afile"],
     r"--init-from must name a .keras model or a .weights.h5 file, "
     r"got afile"),
    ("init-from-other-braces", "train",
     _SMALL + ["--init-from", "run-{{k}}/m.keras"],
     r"--init-from may hold \{seed\} \(the seed number\) and no other "
     r"braces, got run-\{k\}/m.keras"),
    ("init-from-missing-for-seed-1", "train",
     _SMALL + ["--init-from", "seed-{{seed}}.weights.h5", "--seeds", "2"],
     r"--init-from seed-1.weights.h5 does not exist"),
    ("init-from-not-a-keras-file", "train",
     _SMALL + ["--init-from", "garbage.keras", "--out", "g"],
     r"--init-from garbage.keras cannot be loaded as a Keras model"),
    ("init-from-not-weights", "train",
     _SMALL + ["--init-from", "garbage.weights.h5", "--out", "g"],
     r"--init-from garbage.weights.h5 does not hold weights of --model "
     r"mlp for digits"),
    ("init-from-wrong-shape", "train",
     _SMALL + ["--init-from", "wrong-shape.keras", "--out", "g"],
     r"--init-from wrong-shape.keras: the model maps \(4,\) to 3 outputs; "
     r"the data needs \(8, 8, 1\) to 10"),
    ("a-not-a-number", "train", _SMALL + ["--method", "wc", "--a", "big"],
     r"argument --a: must be a number or auto, got 'big'"),
    ("a-auto-unbounded", "train",
     _SMALL + ["--method", "wc", "--a", "auto", "--compander", "arsinh"],
     r"--a auto needs a bounded compander \(arctan, erf\), not arsinh"),
    ("b-auto-without-wc", "train", _SMALL + ["--b", "auto"],
     r"--b applies to --method wc, not none"),
    ("a-other-word-in-config", "train", ["--config", "a-word.json"],
     r"--a must be a number > 0 or auto, got 'large'"),
    ("optimizer-unknown", "train", _SMALL + ["--optimizer", "adamw2"],
     r"argument --optimizer: invalid choice: 'adamw2'"),
    # python -m train.report
    ("report-missing", "report", ["nope"],
     r"no such file or directory: nope"),
    ("report-not-json", "report", ["r/notjson", "--output", "t.md"],
     r"r/notjson/results.json is not valid JSON"),
    ("report-not-an-object", "report", ["r/list"],
     r"r/list/results.json: the whole file must be an object, got \[1\]"),
    ("report-missing-label", "report", ["r/nolabel"],
     r"r/nolabel/results.json: missing key 'label'"),
    ("report-missing-config", "report", ["r/noconfig", "--output", "t.md"],
     r"r/noconfig/results.json: missing key 'config'"),
    ("report-config-wrong-type", "report", ["r/listconfig"],
     r"r/listconfig/results.json: 'config' must be an object, got \[1\]"),
    ("report-seeds-wrong-type", "report", ["r/strseeds"],
     r"r/strseeds/results.json: 'config.seeds' must be an integer, "
     r"got \"3\""),
    ("report-mean-wrong-type", "report", ["r/strmean"],
     r"r/strmean/results.json: 'test_acc.mean' must be a number, "
     r"got \"0.9\""),
    ("report-seed-records-wrong-type", "report", ["r/seedsdict"],
     r"r/seedsdict/results.json: 'seeds' must be a list, got"),
    ("report-one-bad-of-two", "report", ["r/good", "r/noconfig"],
     r"r/noconfig/results.json: missing key 'config'"),
    ("report-output-is-a-directory", "report",
     ["r/good", "--output", "a-dir"], r"--output a-dir is a directory"),
    ("report-output-in-a-missing-directory", "report",
     ["r/good", "--output", "nope/t.md"],
     r"--output nope/t.md: directory {tmp}/nope does not exist"),
    ("report-output-is-an-input", "report",
     ["r/good", "--output", "r/good/results.json"],
     r"--output r/good/results.json is one of the results files read"),
    ("report-output-empty", "report", ["r/good", "--output", ""],
     r"--output must be a non-empty path, got ''"),
]


def _snapshot(root):
    """Every path under `root` with its type, mode and content hash."""
    state = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest = None
            if os.path.isfile(path):
                with open(path, "rb") as file:
                    digest = hashlib.sha256(file.read()).hexdigest()
            state[os.path.relpath(path, root)] = (
                info.st_mode, info.st_mtime_ns, digest
            )
    return state


@pytest.mark.parametrize(
    "command, argv, pattern",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_exits_2_naming_it_and_changes_nothing(
    command, argv, pattern, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _setup(tmp_path)
    ro = None
    if any("{ro}" in arg for arg in argv):
        ro = _not_writable(tmp_path)
        if ro is None:
            pytest.skip("no directory here is read-only to this user")
    fill = {"tmp": str(tmp_path), "ro": ro}
    argv = [arg.format(**fill) for arg in argv]
    pattern = pattern.replace("{tmp}", re.escape(str(tmp_path)))
    pattern = pattern.replace("{ro}", re.escape(str(ro)))
    before = _snapshot(tmp_path)
    main = cli.main if command == "train" else report.main
    prog = "python -m train" if command == "train" else "python -m train.report"
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert _snapshot(tmp_path) == before
