"""The extension built for aarch64 and its kernel and scorer tests run under emulation:
tools/aarch64/run_tests.sh, run with `pytest -m aarch64` (as root, on an x86-64 Linux host).

The script builds (once, cached outside the repo) an arm64 Debian root with debootstrap and
qemu-user-static, compiles sprintiface there with the root's aarch64 gcc, checks that the
build has the baseline kernel only and that it is NEON code, compares scores against a
float64 reference, and runs tests/test_score_kernel.py and tests/test_scorer.py. It says
nothing about speed on aarch64. See docs/building.md, "aarch64 (emulated)".
"""
import os
import platform
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "aarch64", "run_tests.sh")


@pytest.mark.aarch64
def test_kernel_and_scorer_tests_pass_on_emulated_aarch64():
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        pytest.skip(f"emulates aarch64 on an x86-64 Linux host; this is {sys.platform} {platform.machine()}")
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot)")
    process = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, timeout=3600)
    output = process.stdout + process.stderr
    print(output[-8000:])
    assert process.returncode == 0, f"rc {process.returncode}\n{output[-20000:]}"
    # `sprintiface info` on aarch64: the baseline kernel, and no other (today's line is
    # "score kernel: baseline (this CPU runs: baseline)"; an instruction set named after it passes).
    assert re.search(r"^score kernel: baseline\b.*\(this CPU runs: baseline[^,]*\)$", process.stdout, re.M), \
        process.stdout[:3000]
    assert "aarch64 check: baseline kernel is NEON" in process.stdout
    assert "aarch64 check: scores match the float64 reference" in process.stdout
    assert "FAILED" not in process.stdout
    # The emulated run's closing line, e.g. "106 passed in 73.66s (0:01:13)".
    summary = re.findall(r"^(\d+) passed(.*) in [\d.]+s", process.stdout, re.M)
    assert summary, f"no pytest summary in\n{process.stdout[-5000:]}"
    passed, rest = summary[-1]
    assert "failed" not in rest and "error" not in rest, summary[-1]
    assert int(passed) > 100, summary[-1]
