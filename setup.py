"""The fused C kernels of keras_wc.native, built as an optional extension:
without a C compiler the package installs and runs on its keras.ops path.
Everything else about the package is in setup.cfg."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "keras_wc.native._kernels",
            sources=["keras_wc/native/kernels.c"],
            # -fno-math-errno and -fno-trapping-math let the compiler
            # vectorize sqrtf and the branch-free arctan; no fast-math
            # (NaN and infinity keep their IEEE meaning).
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
    ]
)
