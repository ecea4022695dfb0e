"""What `pip install keras-wc` gets.

The distributions `pip_build.py` builds (the sdist, the wheel with the
fused kernels, the pure-Python wheel): their tags, metadata and files,
which wheel pip takes where, the test suite in the sdist, and the wheel
installed in a fresh venv with only Keras and one backend (JAX, then
TensorFlow) running tests/installed_usage.py and the README's examples
there. One version, in keras_wc/version.py, named by the CHANGELOG.
"""

import email.parser
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from test_readme import README_BLOCKS

import keras_wc
import pip_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = keras_wc.__version__
USAGE = os.path.join(ROOT, "tests", "installed_usage.py")
# Builds and installs in venvs of its own, whatever the backend: once per
# `make test`.
once = pytest.mark.backends(
    "tensorflow", reason="builds and installs in venvs of its own"
)


def test_the_changelog_names_the_version():
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        newest = re.search(r"^## \[([^\]]+)\]", f.read(), re.M).group(1)
    assert newest == VERSION


@pytest.fixture(scope="session")
def dist(tmp_path_factory):
    """`pip_build.build`'s paths, built once for all xdist workers."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return pip_build.build(tmp_path_factory.mktemp("dist"))
    shared = tmp_path_factory.getbasetemp().parent
    with open(shared / "dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = shared / "dist.json"
        if not built.exists():
            built.write_text(json.dumps(pip_build.build(shared / "dist")))
        return json.loads(built.read_text())


def _files(wheel):
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if not n.endswith("/")}


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"keras_wc-{VERSION}.dist-info/METADATA")
    return email.parser.Parser().parsestr(text.decode())


@pytest.mark.slow
@once
def test_two_wheels_the_kernels_in_one(dist):
    name = os.path.basename(dist["wheel"])
    if sys.platform == "linux":
        # auditwheel's tag: the oldest glibc the kernels' symbols allow.
        assert re.fullmatch(
            rf"keras_wc-{VERSION}-py3-none-manylinux_2_\d+_"
            f"{platform.machine()}.whl",
            name,
        )
    pure_name = os.path.basename(dist["pure"])
    assert pure_name == f"keras_wc-{VERSION}-py3-none-any.whl"
    with_kernels, pure = _files(dist["wheel"]), _files(dist["pure"])
    assert with_kernels - pure == {pip_build.KERNELS}
    assert pure - with_kernels == set()
    assert not [n for n in pure if n.endswith((".so", ".c"))]


@pytest.mark.slow
@once
@pytest.mark.parametrize("kind", ["wheel", "pure"])
def test_the_wheels_require_keras_and_numpy_only(dist, kind):
    metadata = _metadata(dist[kind])
    assert (metadata["Name"], metadata["Version"]) == ("keras-wc", VERSION)
    requires = metadata.get_all("Requires-Dist")
    # No backend: the user's choice, as for Keras itself.
    assert [r for r in requires if "extra ==" not in r] == [
        "keras>=3.12",
        "numpy",
    ]
    assert set(metadata.get_all("Provides-Extra")) == {
        "tensorflow",
        "onnx",
        "export",
        "hub",
        "plot",
        "docs",
        "test",
    }
    for requirement in (
        'tensorflow>=2.16; extra == "tensorflow"',
        'tensorflow>=2.16; extra == "onnx"',
        'tf2onnx>=1.17; extra == "onnx"',
        'keras-hub; extra == "hub"',
        'matplotlib; extra == "plot"',
    ):
        assert requirement in requires


def _glibc_tags(newest, machine):
    """The platform tags of a Linux with glibc 2.`newest` (what pip
    accepts there: every manylinux_2_k with k <= newest)."""
    return [f"manylinux_2_{k}_{machine}" for k in range(17, newest + 1)]


@pytest.mark.slow
@once
@pytest.mark.skipif(sys.platform != "linux", reason="Linux wheels")
def test_pip_takes_the_kernels_where_they_run_and_the_pure_wheel_elsewhere(
    dist, tmp_path
):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for kind in ("wheel", "pure"):
        shutil.copy(dist[kind], wheels)
    glibc = int(re.search(r"manylinux_2_(\d+)_", dist["wheel"]).group(1))
    machine = platform.machine()
    other = "aarch64" if machine == "x86_64" else "x86_64"
    cases = {
        "this machine": ([], dist["wheel"]),
        "a newer glibc": (_glibc_tags(glibc + 5, machine), dist["wheel"]),
        "an older glibc": (_glibc_tags(glibc - 1, machine), dist["pure"]),
        f"Linux {other}": (_glibc_tags(glibc + 5, other), dist["pure"]),
        "macOS": (["macosx_14_0_arm64"], dist["pure"]),
        "Windows": (["win_amd64"], dist["pure"]),
    }
    for case, (platforms, expected) in cases.items():
        target = tmp_path / case.replace(" ", "-")
        options = [f"--platform={p}" for p in platforms]
        if platforms:
            options += ["--only-binary=:all:", "--python-version=3.12"]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
             "--no-index", f"--find-links={wheels}", f"--dest={target}",
             *options, f"keras-wc=={VERSION}"],
            check=True,
            capture_output=True,
        )
        assert os.listdir(target) == [os.path.basename(expected)], case


def _tracked_files():
    """The files git tracks, or would (not ignored)."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip("not a git checkout (an unpacked sdist?)")
    return set(result.stdout.split())


@pytest.mark.slow
@once
def test_the_sdist_is_the_repository_and_its_suite_collects(dist, tmp_path):
    tracked = _tracked_files()
    with tarfile.open(dist["sdist"]) as archive:
        archive.extractall(tmp_path, filter="data")
        top = f"keras_wc-{VERSION}/"
        names = {
            m.name[len(top) :] for m in archive.getmembers() if m.isfile()
        }
    made = {"PKG-INFO"} | {n for n in names if n.startswith("keras_wc.egg")}
    assert names - made == tracked
    # The 11 collection errors an sdist without the helpers had.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q",
         "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path / top,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert not re.search(r"\berrors?\b", result.stdout.splitlines()[-1])


def _pins(*names):
    """The versions requirements.txt pins (the repository's environment)."""
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = dict(
            re.findall(r"^([\w\-\[\]]+)==(\S+)", f.read(), re.M)
        )
    return [f"{name}=={pins[name]}" for name in names]


def _venv(path, *requirements):
    """A new venv with only `requirements` installed (by this Python's pip:
    the venv gets none), consistent for `pip check`; returns its Python and
    the names of the packages installed."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", path], check=True
    )
    python = str(path / "bin" / "python")
    _pip(python, "install", "-q", "--no-compile", *requirements)
    _pip(python, "check")
    listed = json.loads(_pip(python, "list", "--format=json"))
    return python, {p["name"].lower() for p in listed}


def _pip(python, *args):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _run(python, backend, cwd, *argv):
    """What `python *argv` prints, run in `cwd` on the Keras `backend`."""
    result = subprocess.run(
        [python, *argv],
        cwd=cwd,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", str(cwd)),
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "3",
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _use(python, backend, work):
    """tests/installed_usage.py's report, run in the venv of `python`."""
    work.mkdir()
    script = shutil.copy(USAGE, work)
    blocks = work / "readme_blocks.json"
    blocks.write_text(
        json.dumps(
            ["import keras\nimport keras_wc\n" + b for _, b in README_BLOCKS]
        )
    )
    output = _run(python, backend, work, script, str(work), str(blocks))
    report = json.loads(output.splitlines()[-1])
    venv = os.path.dirname(os.path.dirname(python))
    assert report["keras_wc"].startswith(venv)
    assert report["version"] == VERSION
    assert report["wn_init_error"] < 1e-3
    assert len(report["readme"]) == len(README_BLOCKS)
    return report


def _needs(extra, module):
    return (
        f"needs the `{module}` package, which is not installed: "
        f"`pip install 'keras-wc[{extra}]'` installs it."
    )


@pytest.mark.slow
@once
def test_a_jax_only_install_runs_everything_but_export(dist, tmp_path):
    python, installed = _venv(
        tmp_path / "venv", dist["wheel"], *_pins("keras", "jax[cpu]")
    )
    assert "keras-wc" in installed and "jax" in installed
    assert not installed & {"tensorflow", "tensorflow-cpu", "torch"}
    report = _use(python, "jax", tmp_path / "jax")
    assert report["kernels"] and report["why"] is None
    features = report["features"]
    assert features["export"].endswith(_needs("tensorflow", "tensorflow"))
    assert features["export_onnx"].endswith(_needs("onnx", "tensorflow"))
    assert features["log_dir"].endswith(_needs("tensorflow", "tensorflow"))
    assert features["plot"].endswith(_needs("plot", "matplotlib"))
    assert not report["tensorflow_imported"]
    # The README's examples: all run but the export line, which names the
    # extra (the SavedModel is written by TensorFlow).
    assert "ok" in report["readme"]
    for result in report["readme"]:
        assert result == "ok" or result.endswith(
            _needs("tensorflow", "tensorflow")
        ), result

    # The pure-Python wheel in its place (the same files but the kernels'):
    # keras_wc says why they are missing.
    _pip(python, "install", "-q", "--force-reinstall", "--no-deps",
         dist["pure"])
    why = "import keras_wc; print(keras_wc.native.why_unavailable())"
    assert "it is the pure-Python wheel" in _run(
        python, "jax", tmp_path, "-c", why
    )


@pytest.mark.slow
@once
def test_a_tensorflow_install_exports(dist, tmp_path):
    python, installed = _venv(
        tmp_path / "venv", dist["wheel"], *_pins("keras", "tensorflow-cpu")
    )
    assert not installed & {"tensorflow", "jax", "torch"}
    report = _use(python, "tensorflow", tmp_path / "tensorflow")
    assert report["kernels"]
    features = report["features"]
    assert features["export"] == "ok" and features["log_dir"] == "ok"
    assert features["export_onnx"].endswith(_needs("onnx", "tf2onnx"))
    assert features["plot"].endswith(_needs("plot", "matplotlib"))
    assert set(report["readme"]) == {"ok"}, report["readme"]
