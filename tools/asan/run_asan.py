#!/usr/bin/env python3
"""Build sprintiface's extension with AddressSanitizer and run the robustness suite on it.

    python tools/asan/run_asan.py [--keep] [pytest args ...]

1. Compiles ``sprintiface/_buffer.pyx`` (Cython) and ``csrc/*.c`` with
   ``-fsanitize=address -fno-omit-frame-pointer -O1 -g`` into a temporary
   directory, next to a copy of the package's Python files: nothing is written
   into the source tree.
2. Runs the scorer protocol state machine (tests/test_scorer_protocol_fuzz.py)
   and the thread scenarios (tests/test_scorer_threads.py, whose subprocesses
   inherit the environment) against that build, less the tests of known bugs
   (marked xfail: a crash they expect would be a report), with
   ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)`` (Python itself is not
   instrumented) and ``ASAN_OPTIONS=detect_leaks=0`` plus a log path.
3. Exits 0 only when pytest passed and no process wrote an ASan report;
   otherwise prints the reports and exits 1. Exit 2: gcc, libasan or Cython
   missing (nothing was run).

Extra arguments go to pytest (e.g. ``-k two_computes``) in place of the
default test files.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANITIZE = ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
DEFAULT_TESTS = ["tests/test_scorer_protocol_fuzz.py", "tests/test_scorer_threads.py"]



def _read(path: str) -> str:
    with open(path, errors="replace") as file:
        return file.read()

def libasan() -> str:
    """Absolute path of gcc's libasan.so, or '' when gcc or the library is missing."""
    if shutil.which("gcc") is None:
        return ""
    try:
        path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return os.path.realpath(path) if os.path.isabs(path) and os.path.exists(path) else ""


def copy_package(target: str) -> None:
    """The package's Python files and data, without any compiled or generated file."""
    skip = shutil.ignore_patterns("*.so", "*.c", "*.pyc", "__pycache__", "*.pyx", "*.pxd")
    shutil.copytree(os.path.join(REPO, "sprintiface"), os.path.join(target, "sprintiface"), ignore=skip)


def build_extension(package_root: str, work: str) -> str:
    """Compile the extension with AddressSanitizer into ``package_root``; returns the .so path."""
    import numpy
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    extension = Extension(
        "sprintiface._buffer",
        sources=["sprintiface/_buffer.pyx", "csrc/frame_copy.c", "csrc/score_kernel.c"],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=SANITIZE,
        extra_link_args=["-fsanitize=address"],
    )
    here = os.getcwd()
    os.chdir(REPO)  # the sources are named relative to the repository, as setup.py names them
    try:
        modules = cythonize([extension], build_dir=os.path.join(work, "cython"), language_level=3, quiet=True,
                            force=True)
        distribution = Distribution({"name": "sprintiface-asan", "ext_modules": modules})
        command = distribution.get_command_obj("build_ext")
        command.build_lib = package_root
        command.build_temp = os.path.join(work, "objects")
        command.inplace = False
        command.ensure_finalized()
        command.run()
    finally:
        os.chdir(here)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = os.path.join(package_root, "sprintiface", "_buffer" + suffix)
    with open(built, "rb") as file:
        if b"__asan_init" not in file.read():
            raise SystemExit(f"{built} was built without AddressSanitizer")
    return built


def reports_a_planted_overflow(work: str, env: dict) -> bool:
    """Whether this environment turns a heap overflow into an ASan report in the log path
    (memset over the end of a malloc'd block: ASan checks it in its interceptor)."""
    probe_log = os.path.join(work, "probe-report")
    probe_env = dict(env, ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=1:log_path={probe_log}")
    code = ("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; "
            "p = libc.malloc(16); ctypes.memset(p, 0, 64)")
    probe = subprocess.run([sys.executable, "-c", code], cwd=work, env=probe_env, capture_output=True)
    found = glob.glob(probe_log + "*")
    reported = probe.returncode != 0 and any("heap-buffer-overflow" in _read(path) for path in found)
    for path in found:
        os.remove(path)
    return reported


def main(argv) -> int:
    keep = "--keep" in argv
    pytest_args = [arg for arg in argv if arg != "--keep"] or DEFAULT_TESTS
    asan = libasan()
    if not asan:
        print("run_asan: gcc or its libasan.so is missing; nothing was run", file=sys.stderr)
        return 2
    try:
        import Cython  # noqa: F401 - only whether it is installed
    except ImportError:
        print("run_asan: Cython is missing (pip install Cython); nothing was run", file=sys.stderr)
        return 2

    work = tempfile.mkdtemp(prefix="sprintiface-asan-")
    started = time.monotonic()
    try:
        package_root = os.path.join(work, "site")
        copy_package(package_root)
        built = build_extension(package_root, work)
        build_seconds = time.monotonic() - started
        print(f"run_asan: built {built} in {build_seconds:.1f} s", flush=True)

        reports = os.path.join(work, "asan-report")
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p]),
            LD_PRELOAD=" ".join([asan] + [p for p in [env.get("LD_PRELOAD")] if p]),
            # Leak checking would flag Python's and ONNX Runtime's process-lifetime allocations.
            ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=1:log_path={reports}",
            PYTHONDONTWRITEBYTECODE="1",
        )
        where = subprocess.run([sys.executable, "-c", "import sprintiface._buffer as b; print(b.__file__)"],
                               cwd=work, env=env, capture_output=True, text=True)
        if where.returncode != 0 or os.path.realpath(where.stdout.strip()) != os.path.realpath(built):
            print(f"run_asan: the instrumented build is not the one imported: {where.stdout}{where.stderr}",
                  file=sys.stderr)
            return 1
        if not reports_a_planted_overflow(work, env):
            print("run_asan: a deliberate heap overflow went unreported: AddressSanitizer is not active",
                  file=sys.stderr)
            return 1

        tests_started = time.monotonic()
        # Tests of known bugs (strict xfail) are left out: a crash they expect would be a
        # report here; the normal test run pins them.
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", REPO,
                   "-c", os.path.join(REPO, "pyproject.toml"), "-m", "not soak and not asan and not xfail"]
        command += [os.path.join(REPO, arg) if arg.startswith("tests/") else arg for arg in pytest_args]
        print("run_asan: " + " ".join(command), flush=True)
        tests = subprocess.run(command, cwd=work, env=env)
        test_seconds = time.monotonic() - tests_started

        found = sorted(glob.glob(reports + "*"))
        for path in found:
            with open(path, errors="replace") as file:
                print(f"---- ASan report {os.path.basename(path)} ----\n{file.read()}", file=sys.stderr)
        print(f"run_asan: build {build_seconds:.1f} s, tests {test_seconds:.1f} s, "
              f"total {time.monotonic() - started:.1f} s; pytest rc {tests.returncode}, "
              f"{len(found)} ASan report(s)", flush=True)
        return 0 if tests.returncode == 0 and not found else 1
    finally:
        if keep:
            print(f"run_asan: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
