"""The extension under AddressSanitizer: tools/asan/run_asan.py, run with `pytest -m asan`.

The script rebuilds sprintiface/_buffer.pyx and csrc/*.c with -fsanitize=address
in a temporary directory and runs the scorer protocol state machine and the
thread scenarios on that build; it fails on any ASan report. About a minute
on the 2-core development machine.
"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "asan", "run_asan.py")


@pytest.mark.asan
def test_fuzzer_and_threads_under_address_sanitizer():
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        from run_asan import libasan
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    if not libasan():
        pytest.skip("gcc or its libasan.so is missing")
    pytest.importorskip("Cython")
    process = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=1200)
    print(process.stdout[-5000:])
    assert process.returncode == 0, f"rc {process.returncode}\n{process.stdout[-10000:]}\n{process.stderr[-20000:]}"
