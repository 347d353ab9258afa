"""Build of the compiled part: the C core (csrc/) wrapped by Cython (sprintiface/_buffers.pyx).

Everything else is declared in pyproject.toml. Flags stay portable (no
-march=native): the score loop picks AVX2 at run time on its own.
"""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "sprintiface._buffers",
        sources=["sprintiface/_buffers.pyx", "csrc/sprintiface.c"],
        include_dirs=["csrc", numpy.get_include()],
        # Built against numpy 2 headers the module also runs on numpy 1.x.
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    ),
    # The RASR-like call driver for benchmarks and protocol tests.
    Extension(
        "sprintiface._rasr_driver",
        sources=["sprintiface/_rasr_driver.pyx", "csrc/rasr_driver.c"],
        include_dirs=["csrc"],
        extra_compile_args=["-O2"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3))
