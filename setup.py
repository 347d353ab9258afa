"""Build of the compiled part: the C core (csrc/) wrapped by Cython (sprintiface/_buffer.pyx).

Everything else is declared in pyproject.toml. Flags stay portable (no
-march=native): the score kernel is compiled per instruction set and chosen at
run time. The extension is built without debug information and stripped: the
wheel carries the product only.
"""
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

link_args = ["-s"] if sys.platform.startswith("linux") else []

extensions = [
    Extension(
        "sprintiface._buffer",
        sources=["sprintiface/_buffer.pyx", "csrc/frame_copy.c", "csrc/score_kernel.c"],
        include_dirs=["csrc", numpy.get_include()],
        # Built against numpy 2 headers the module also runs on numpy 1.x.
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-g0"],
        extra_link_args=link_args,
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3))
