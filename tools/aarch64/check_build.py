"""Run under qemu-aarch64 inside the arm64 root (tools/aarch64/run_tests.sh), on the
installed sprintiface: this is an aarch64 build, its score kernels are the baseline only
(no AVX kernels), the baseline is NEON code, and the kernel's scores match a float64
reference. Prints one line per check; exits non-zero on the first that fails."""
import os
import platform
import re
import subprocess
import sys

import numpy

import sprintiface
from sprintiface import _buffer
from sprintiface._buffer import available_score_kernels, best_score_kernel, finish_scores, score_kernels


def check(condition, message):
    print(f"aarch64 check: {message}: {'ok' if condition else 'FAILED'}", flush=True)
    if not condition:
        sys.exit(1)


def reference(raw, kind, bias=None, prior=None):
    """The -log score in float64 (the bias added in float32 first, as the model's Add)."""
    if bias is not None:
        raw = raw + bias
    raw = raw.astype(numpy.float64)
    if kind == "logits":
        shifted = raw - raw.max(axis=1, keepdims=True)
        scores = numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True)) - shifted
    elif kind == "probs":
        scores = -numpy.log(numpy.maximum(raw, numpy.finfo(numpy.float32).tiny))
    elif kind == "log_probs":
        scores = -raw
    else:
        scores = raw
    return scores if prior is None else scores + prior


def main():
    check(platform.machine() == "aarch64", f"platform.machine() is {platform.machine()!r}")
    installed = os.path.dirname(os.path.abspath(sprintiface.__file__))
    check(installed.endswith("site-packages/sprintiface"), f"sprintiface imported from {installed}")
    check(score_kernels() == ("baseline",), f"kernels built: {score_kernels()} (no avx2/avx512)")
    check(available_score_kernels() == ("baseline",), f"kernels this CPU runs: {available_score_kernels()}")
    check(best_score_kernel() == "baseline", f"auto picks {best_score_kernel()!r}")

    # The baseline is compiled NEON code: 4-lane single-precision vector instructions on
    # v registers (vmaxq_f32 is the kernel's SF_MAX under __aarch64__; the polynomial is
    # fused multiply-adds). The extension is stripped, so count over its whole text.
    disassembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _buffer.__file__],
                                 capture_output=True, text=True, check=True).stdout
    counts = {op: len(re.findall(rf"\t{op}\tv\d+\.4s", disassembly)) for op in ("fmax", "fmla", "fadd", "fmul")}
    check(counts["fmax"] > 0 and counts["fmla"] > 0,
          "baseline kernel is NEON: " + ", ".join(f"{n} {op} .4s" for op, n in counts.items()))

    rng = numpy.random.default_rng(7)
    worst = 0.0
    for frames, classes in ((100, 9001), (7, 17), (3, 1)):
        logits = (rng.standard_normal((frames, classes)) * 4).astype(numpy.float32)
        bias = rng.standard_normal(classes).astype(numpy.float32)
        prior = (numpy.log(rng.random(classes) + 0.01) * 0.5).astype(numpy.float32)
        probs = numpy.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        cases = [("logits", logits, None, None), ("logits", logits, bias, prior), ("probs", probs, None, prior),
                 ("log_probs", numpy.log(probs), None, None), ("scores", -numpy.log(probs), None, prior)]
        for kind, raw, b, p in cases:
            scores = raw.copy()
            bad = finish_scores(scores, kind, b, p, "baseline")
            want = reference(raw, kind, b, p)
            error = numpy.abs(scores - want) / (2e-5 + 1e-5 * numpy.abs(want))
            worst = max(worst, float(error.max()))
            if bad != -1 or not numpy.all(error <= 1.0):
                check(False, f"{kind} T={frames} C={classes}: bad frame {bad}, "
                             f"max |error| {numpy.abs(scores - want).max():.3g}")
    check(worst <= 1.0, f"scores match the float64 reference (worst error {worst:.3f} of atol 2e-5 + rtol 1e-5)")
    print(f"aarch64 check: numpy {numpy.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
          f"Python {platform.python_version()}")


if __name__ == "__main__":
    main()
