"""Build configuration beyond pyproject.toml: the optional C kernels of the golden emulator.

If they do not compile, the install goes on and the emulator uses NumPy and BLAS instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gatewright.quant._kernels",
            sources=["src/gatewright/quant/_kernels.c"],
            # no -ffast-math: the kernels rely on IEEE rounding; -fno-trapping-math only lets floor vectorize
            extra_compile_args=["-O3", "-fno-trapping-math"],
            optional=True,
        )
    ]
)
