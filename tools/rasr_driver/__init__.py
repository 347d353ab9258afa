"""A C-level stand-in for RASR's feature-scorer calls, for benchmarks and protocol tests.

Not part of the package: compiled on first import (Cython and a C compiler,
which the ``test`` and ``bench`` extras bring) into a cache directory keyed by
the sources and the Python version (in $SPRINTIFACE_RASR_DRIVER_CACHE, else the
temp dir), and imported from there. Put ``tools/``
on ``sys.path`` and ``import rasr_driver``.
"""
import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = ("_rasr_driver.pyx", "rasr_driver.c", "rasr_driver.h")


def _cache_dir() -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        with open(os.path.join(_HERE, name), "rb") as file:
            digest.update(file.read())
    tag = sysconfig.get_config_var("SOABI") or f"py{sys.version_info[0]}{sys.version_info[1]}"
    # The tests point TMPDIR at a folder of their own and keep the cache where it lasts.
    parent = os.environ.get("SPRINTIFACE_RASR_DRIVER_CACHE") or tempfile.gettempdir()
    return os.path.join(parent, f"sprintiface-rasr-driver-{digest.hexdigest()[:16]}-{tag}")


def _build(target: str) -> None:
    from Cython.Build import cythonize
    from setuptools import Extension
    from setuptools.dist import Distribution

    work = tempfile.mkdtemp(prefix="sprintiface-rasr-driver-build-", dir=os.path.dirname(target))
    extension = Extension("_rasr_driver", sources=[os.path.join(_HERE, "_rasr_driver.pyx"),
                                                   os.path.join(_HERE, "rasr_driver.c")],
                          include_dirs=[_HERE], extra_compile_args=["-O2"])
    modules = cythonize([extension], build_dir=work, quiet=True, language_level=3)
    command = Distribution({"ext_modules": modules}).get_command_obj("build_ext")
    command.build_lib = os.path.join(work, "lib")
    command.build_temp = os.path.join(work, "temp")
    try:
        command.ensure_finalized()
        command.run()
        os.replace(os.path.join(work, "lib"), target)  # complete or absent
    except OSError:
        if not os.path.isdir(target):  # not a concurrent build that got there first
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load():
    target = _cache_dir()
    if not os.path.isdir(target):
        _build(target)
    path = next(os.path.join(target, name) for name in os.listdir(target) if name.startswith("_rasr_driver."))
    spec = importlib.util.spec_from_file_location("_rasr_driver", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_module = _load()
drive_add_feature = _module.drive_add_feature
drive_compute = _module.drive_compute
drive_get_scores = _module.drive_get_scores
drive_reset = _module.drive_reset
drive_segment = _module.drive_segment
