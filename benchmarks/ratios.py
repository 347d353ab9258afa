"""Side-by-side figures from ONE run: sprintiface vs a bare ONNX Runtime
InferenceSession.run, and vs a RETURNN-style Python scorer, with the targets of
issue 2; and trainer:torch's training throughput through RASR's calls vs a plain
PyTorch loop (issue 10; only with PyTorch installed). Run from anywhere with the
package installed:

    python benchmarks/ratios.py [--quick]

Per-call costs go through tools/rasr_driver (C calls with keyword
arguments, as RASR makes them; making the arrays and dicts is outside the
timing). Repetitions are interleaved (ours, theirs, ours, ...) and medians
compared, so machine noise hits both sides alike. This is a report: it always
exits 0.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy  # noqa: E402

import common  # noqa: E402
from rasr_driver import drive_add_feature, drive_get_scores, drive_reset  # noqa: E402

from sprintiface._buffer import best_score_kernel  # noqa: E402


def interleaved(first, second, repeats):
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def hot_path(repeats, num_frames=2000):
    ours, reference = common.our_scorer("mlp"), common.reference_scorer("mlp")
    frames = common.features(num_frames)

    def add(scorer):
        def run():
            cost = drive_add_feature(scorer, frames)
            scorer.reset(num_frames=num_frames)
            return cost
        return run

    add_ours, add_ref = interleaved(add(ours), add(reference), repeats)
    for scorer in (ours, reference):
        drive_add_feature(scorer, frames)
        scorer.compute(num_frames=num_frames)

    def get(scorer, copy):
        return lambda: drive_get_scores(scorer, num_frames, common.CLASSES, keep=False, copy=copy)[0]

    get_ours, get_ref = interleaved(get(ours, False), get(reference, False), repeats)
    copy_ours, copy_ref = interleaved(get(ours, True), get(reference, True), repeats)
    drive_reset(ours, num_frames)
    drive_reset(reference, num_frames)
    return [("add_feature ns/call vs RETURNN-style", add_ours, add_ref, 0.6),
            ("get_scores ns/call vs RETURNN-style", get_ours, get_ref, 0.8),
            # RASR's memcpy of 9001 floats (36 kB from a 216 MB matrix) costs ~3 us
            # and is the same on both sides: shown, but not a target.
            (f"get_scores + RASR's copy of {common.CLASSES} floats, ns/call", copy_ours, copy_ref, None)]


def compute(repeats, lengths):
    rows = []
    for kind in ("mlp", "blstm"):
        ours = common.our_scorer(kind)
        session, feeds_for = common.bare_session(kind)
        for num_frames in lengths:
            x = common.features(num_frames, seed=num_frames)
            feeds = feeds_for(x)
            drive_add_feature(ours, x)
            for _ in range(2):  # both sides warm: a fresh ORT session settles after two runs per length
                session.run(None, feeds)
                ours.compute(num_frames=num_frames)

            def run_ours():
                start = time.perf_counter()
                ours.compute(num_frames=num_frames)
                return time.perf_counter() - start

            def run_bare():
                start = time.perf_counter()
                session.run(None, feeds)
                return time.perf_counter() - start

            a, b = interleaved(run_ours, run_bare, repeats)
            ours.reset(num_frames=num_frames)
            rows.append((f"compute() ms, {kind} T={num_frames} vs bare InferenceSession.run", a * 1e3, b * 1e3, 1.0))
    return rows


_PEAK_CHILD = r"""
import sys
sys.path.insert(0, {bench!r})
import common
from rasr_driver import drive_segment, drive_add_feature, drive_get_scores
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
which, num_frames = sys.argv[1], int(sys.argv[2])
scorer = common.our_scorer("mlp") if which == "ours" else common.reference_scorer("mlp")
warm = common.features(16)
drive_add_feature(scorer, warm); scorer.compute(num_frames=16); scorer.reset(num_frames=16)
x = common.features(num_frames)
calls = None
before = hwm()
drive_add_feature(scorer, x)
scorer.compute(num_frames=num_frames)
drive_get_scores(scorer, 1, common.CLASSES, keep=False)
print(hwm() - before)
"""


def peak_memory(num_frames=6000):
    child = _PEAK_CHILD.format(bench=os.path.dirname(os.path.abspath(__file__)))
    result = {}
    for which in ("ours", "reference"):
        output = subprocess.run([sys.executable, "-c", child, which, str(num_frames)], check=True,
                                capture_output=True, text=True).stdout
        result[which] = int(output.strip().splitlines()[-1]) / 2**20
    return [(f"peak RSS growth MB, one {num_frames}-frame segment, {common.CLASSES} classes vs RETURNN-style",
             result["ours"], result["reference"], 0.6)]


def torch_training(repeats):
    """trainer:torch through RASR's calls vs a plain PyTorch loop (benchmarks/torch_training.py);
    no rows without PyTorch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("(trainer:torch rows skipped: PyTorch is not installed; pip install 'sprintiface[torch]')")
        return []
    import torch_training as training

    return training.ratio_rows(repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and lengths")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    lengths = (100, 1000) if args.quick else (100, 1000, 6000)
    import onnxruntime

    import sprintiface
    print(f"sprintiface {sprintiface.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}, "
          f"score kernel {best_score_kernel()}, 1 intra-op thread, medians of {repeats} interleaved runs")
    rows = hot_path(repeats) + compute(repeats, lengths) + peak_memory() + torch_training(repeats)
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'ours':>10}  {'theirs':>10}  {'ratio':>6}  target")
    for name, ours, theirs, target in rows:
        ratio = ours / theirs
        verdict = "(info)" if target is None else f"<= {target:.2f} {'PASS' if ratio <= target else 'FAIL'}"
        print(f"{name:<{width}}  {ours:>10.1f}  {theirs:>10.1f}  {ratio:>6.3f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
