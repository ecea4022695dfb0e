"""The fused C kernels of keras_wc.native, built as an optional extension:
without a C compiler the package installs and runs on its keras.ops path.
Everything else about the package is in setup.cfg.

The kernels are a plain C library that keras_wc loads with ctypes (no
Python C API), the same for every Python 3: it is named `_kernels.so` and a
wheel holding it is tagged `py3-none-<platform>`. `KERAS_WC_NATIVE=0` builds
without it: the pure-Python wheel (`py3-none-any`) that pip takes where no
wheel with the kernels fits (`pip_build.py` builds both).
"""

import os

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext


class BuildKernels(build_ext):
    def get_ext_filename(self, fullname):
        # Not Python's `.cpython-311-x86_64-linux-gnu.so`: any Python loads it.
        return os.path.join(*fullname.split(".")) + ".so"


class Wheel(bdist_wheel):
    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


KERNELS = Extension(
    "keras_wc.native._kernels",
    sources=["keras_wc/native/kernels.c"],
    # -fno-math-errno and -fno-trapping-math let the compiler vectorize
    # sqrtf and the branch-free arctan; no fast-math (NaN and infinity keep
    # their IEEE meaning).
    extra_compile_args=[
        "-O3",
        "-fopenmp-simd",
        "-fno-math-errno",
        "-fno-trapping-math",
    ],
    extra_link_args=["-pthread"],
    libraries=["m"],
    optional=True,
)

setup(
    ext_modules=[] if os.environ.get("KERAS_WC_NATIVE") == "0" else [KERNELS],
    cmdclass={"build_ext": BuildKernels, "bdist_wheel": Wheel},
)
