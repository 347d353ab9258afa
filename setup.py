"""Build of the compiled part: the C core (csrc/) wrapped by Cython (sprintiface/_buffer.pyx).

Everything else is declared in pyproject.toml. Flags stay portable (no
-march=native): the score kernel is compiled per instruction set and chosen at
run time.

Debug information: -g1 (line tables, no types or locals), not stripped. The
extension runs inside a C++ host (RASR's speech-recognizer, nn-trainer): a
crash there is read from the host's backtrace or a core file on a cluster node,
and with -g1 its frames in sprintiface name the function and the source line
instead of an offset. It costs some wheel size, not speed (no code changes; the
line tables are not loaded unless a debugger or a backtrace reads them). h5py's
wheels do the same.
"""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "sprintiface._buffer",
        sources=["sprintiface/_buffer.pyx", "csrc/frame_copy.c", "csrc/score_kernel.c"],
        include_dirs=["csrc", numpy.get_include()],
        # Built against numpy 2 headers the module also runs on numpy 1.x.
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-g1"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3))
