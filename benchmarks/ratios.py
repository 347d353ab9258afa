"""Side-by-side figures from ONE run: sprintiface against the floor a user could write
(a bare onnxruntime InferenceSession or process doing the same work) and against a
RETURNN-style Python scorer. Run with the package installed (and the test extras,
which bring Cython for the C call driver):

    python benchmarks/ratios.py [--quick] [--only SECTION ...]

Sections: hot_path, compute, per_buffer, cold_start, cold_plain, big_model, prepared_size, sharing,
outlier, int8, peak_memory, torch_training (trainer:torch through RASR's calls vs a plain
PyTorch loop; only with PyTorch installed). Per-call costs go through tools/rasr_driver (C calls with
keyword arguments, as RASR makes them). Repetitions are interleaved (ours,
theirs, ours, ...) and medians compared, so machine noise hits both sides alike;
whole processes measure themselves (benchmarks/processes.py). Every row names
the score kernel it ran with. This is a report: it always exits 0.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy

import common
from rasr_driver import drive_add_feature, drive_get_scores, drive_reset

from sprintiface._buffer import available_score_kernels, best_score_kernel

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL = best_score_kernel()
MiB = 2**20


def interleaved(first, second, repeats):
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def timed(function):
    def run():
        start = time.perf_counter()
        function()
        return time.perf_counter() - start
    return run


# -- per call -------------------------------------------------------------------------

def hot_path(repeats, quick):
    num_frames = 2000
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
            # RASR's memcpy of 9001 floats costs ~3 us and is the same on both sides.
            (f"get_scores + RASR's copy of {common.CLASSES} floats, ns/call", copy_ours, copy_ref, None)]


# -- per buffer --------------------------------------------------------------------------

def _compute_rows(kind, lengths, repeats, kernels, label=""):
    rows = []
    session, feeds_for = common.bare_session(kind)
    scorers = {kernel: common.our_scorer(kind, f",score_kernel:{kernel}") for kernel in kernels}
    dim = common.DIMS[kind][0]
    for num_frames in lengths:
        x = common.features(num_frames, seed=num_frames, dim=dim)
        feeds = feeds_for(x)
        for kernel, ours in scorers.items():
            drive_add_feature(ours, x)
            for _ in range(2):  # both sides warm: a fresh ORT session settles after two runs per length
                session.run(None, feeds)
                ours.compute(num_frames=num_frames)
            a, b = interleaved(timed(lambda: ours.compute(num_frames=num_frames)),
                               timed(lambda: session.run(None, feeds)), repeats)
            ours.reset(num_frames=num_frames)
            rows.append((f"compute() ms, {kind} T={num_frames}{label} vs bare InferenceSession.run [{kernel}]",
                         a * 1e3, b * 1e3, 1.0))
    return rows


def compute(repeats, quick):
    lengths = (100, 1000) if quick else (100, 1000, 6000)
    kernels = available_score_kernels()
    return _compute_rows("mlp", lengths, repeats, kernels) + _compute_rows("blstm", lengths, repeats, kernels)


def per_buffer(repeats, quick):
    """A low-latency buffer's fixed cost: compute() of T frames on a tiny model against a
    bare run plus -log of the same frames, default settings, logging to a file."""
    import logging

    handler = logging.FileHandler(os.path.join(tempfile.gettempdir(), "sprintiface-bench.log"))
    logger = logging.getLogger("sprintiface")
    logger.addHandler(handler)
    rows = []
    try:
        ours = common.our_scorer("tiny", quiet=False)  # default settings: log_level info
        session, feeds_for = common.bare_session("tiny")
        for num_frames in (1, 2, 5, 10):
            x = common.features(num_frames, seed=num_frames, dim=16)
            feeds = feeds_for(x)
            drive_add_feature(ours, x)

            def bare():
                return -numpy.log(session.run(None, feeds)[0][0])

            for _ in range(3):
                bare()
                ours.compute(num_frames=num_frames)
            a, b = interleaved(timed(lambda: [ours.compute(num_frames=num_frames) for _ in range(200)]),
                               timed(lambda: [bare() for _ in range(200)]), repeats)
            ours.reset(num_frames=num_frames)
            rows.append((f"compute() us, tiny MLP 16-32-7, T={num_frames} vs bare run + -log [{KERNEL}]",
                         a / 200 * 1e6, b / 200 * 1e6, 1.05 if num_frames == 10 else None))
    finally:
        logger.removeHandler(handler)
    return rows


# -- whole processes -----------------------------------------------------------------------

def _child(which, model, frames, classes, extra="", hold=None):
    command = [sys.executable, os.path.join(HERE, "processes.py"), which, model, str(frames)]
    if extra:
        command += ["--config", extra]
    if hold:
        command += ["--hold", hold]
    environment = dict(os.environ, SPRINTIFACE_BENCH_CLASSES=str(classes))
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment, cwd=tempfile.gettempdir())


def _run_child(which, model, frames, classes, extra=""):
    child = _child(which, model, frames, classes, extra)
    out, _ = child.communicate(timeout=600)
    if child.returncode:
        raise RuntimeError(f"{which} child failed on {model}")
    return json.loads(out.splitlines()[-1])


def _median_children(which, model, frames, classes, repeats, extra=""):
    runs = [_run_child(which, model, frames, classes, extra) for _ in range(repeats)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def cold_start(repeats, quick):
    """import + load + 100 frames + -log in a fresh process, against a bare onnxruntime
    process doing the same (session, run, -log)."""
    prepared, plain = common.prepared_path("small"), common.model_path("small")
    bare_runs, ours_runs = [], []
    for _ in range(max(repeats, 5)):
        bare_runs.append(_run_child("bare", plain, 100, 500))
        ours_runs.append(_run_child("ours", prepared, 100, 500))
    bare = {key: statistics.median(run[key] for run in bare_runs) for key in bare_runs[0]}
    ours = {key: statistics.median(run[key] for run in ours_runs) for key in ours_runs[0]}
    return [(f"cold process CPU s, prepared 40-256-500, 100 frames vs bare onnxruntime process [{KERNEL}]",
             ours["cpu"], bare["cpu"], 1.15),
            ("cold process peak RSS MiB, same (target: bare + 8 MiB)", ours["peak"] / MiB, bare["peak"] / MiB,
             (bare["peak"] + 8 * MiB) / bare["peak"])]


def _bytecode_compiled():
    """Compile sprintiface's modules as pip does when it installs a wheel: a cold process
    then reads bytecode, as on a cluster (an editable install under PYTHONDONTWRITEBYTECODE
    would compile every module in every process, which no deployed job does)."""
    import compileall

    import sprintiface

    compileall.compile_dir(os.path.dirname(sprintiface.__file__), quiet=2)


def cold_plain(repeats, quick):
    """A cold process on a plain (not prepared) model: import + load (no onnx: sprintiface's
    own reader cuts the head) + 100 frames + -log, against a bare onnxruntime process that
    loads the same file, runs 100 frames and takes -log. Peak: the larger of VmHWM and what
    the load held when the session was made (RssAnon + RssFile then, plus the whole private
    weight copy on tmpfs, which is memory while it lives; VmHWM counts only the copy's pages
    ONNX Runtime mapped); also VmHWM + the whole copy, an upper bound counting pages twice."""
    _bytecode_compiled()
    rows = []
    models = [("small", "40-256-500", 500)] + ([] if quick else [("big", "124 MB 40-4x2048-9001", common.CLASSES)])
    for kind, described, classes in models:
        plain = common.model_path(kind)
        count = max(repeats, 5) if kind == "small" else (3 if quick else 5)
        bare_runs, ours_runs = [], []
        for _ in range(count):
            bare_runs.append(_run_child("bare", plain, 100, classes))
            ours_runs.append(_run_child("ours", plain, 100, classes))
        bare = {key: statistics.median(run[key] for run in bare_runs) for key in bare_runs[0]}
        ours = {key: statistics.median(run.get(key, 0) for run in ours_runs) for key in ours_runs[0]}
        honest = statistics.median(max(run["peak"], run.get("held_with_copy", 0)) for run in ours_runs)
        bound = statistics.median(run["peak"] + run.get("scratch_tmpfs", 0) for run in ours_runs)
        rows += [(f"cold process CPU s, plain {described}, 100 frames vs bare onnxruntime process [{KERNEL}]",
                  ours["cpu"], bare["cpu"], 1.15),
                 (f"cold process peak MiB (max of VmHWM, load held with its tmpfs copy), plain {described} "
                  f"(target: bare + 8 MiB)",
                  honest / MiB, bare["peak"] / MiB, (bare["peak"] + 8 * MiB) / bare["peak"]),
                 (f"  upper bound: VmHWM + the whole copy, plain {described} (pages counted twice)",
                  bound / MiB, bare["peak"] / MiB, None),
                 (f"  the private weight copy on tmpfs MiB (disk: {ours['scratch_disk'] / MiB:.1f}), "
                  f"vs the model file", ours["scratch_tmpfs"] / MiB, os.path.getsize(plain) / MiB, None)]
    return rows


def big_model(repeats, quick):
    """The 124 MB MLP 40-4x2048-9001: load peak and steady PSS, plain and prepared, vs bare."""
    plain, prepared = common.model_path("big"), common.prepared_path("big")
    runs = 1 if quick else 3
    bare = _median_children("bare", plain, 100, common.CLASSES, runs)
    ours_plain = _median_children("ours", plain, 100, common.CLASSES, runs)
    ours_prepared = _median_children("ours", prepared, 100, common.CLASSES, runs)
    return [("124 MB MLP plain: load peak RSS MiB vs bare onnxruntime", ours_plain["peak"] / MiB,
             bare["peak"] / MiB, 1.05),
            ("124 MB MLP plain: steady PSS MiB vs bare onnxruntime", ours_plain["pss"] / MiB, bare["pss"] / MiB, 1.05),
            ("124 MB MLP prepared: steady PSS MiB vs bare onnxruntime", ours_prepared["pss"] / MiB,
             bare["pss"] / MiB, 1.05),
            ("124 MB MLP prepared: load peak RSS MiB (file pages count; reported)", ours_prepared["peak"] / MiB,
             bare["peak"] / MiB, None)]


def _prepared_bytes(path):
    """Bytes of a prepared model on disk: OUT plus the weights file it names."""
    from sprintiface.onnx_proto import read_metadata

    weights = json.loads(read_metadata(path).get("sprintiface.packed_for", "{}")).get("weights")
    return os.path.getsize(path) + (os.path.getsize(os.path.join(os.path.dirname(path), weights)) if weights else 0)


def prepared_size(repeats, quick):
    """What `prepare` writes against the model it prepares (124 MB MLP): the shareable form
    holds each packed weight twice, the original and ONNX Runtime's pre-packed blob,
    because ONNX Runtime 1.32 packs every job's originals and checks the blob against
    that (docs/performance.md); the plain form holds it once."""
    model = common.model_path("big")
    return [("124 MB MLP: prepared shareable file (OUT + weights) MB vs the model file",
             _prepared_bytes(common.prepared_path("big")) / 1e6, os.path.getsize(model) / 1e6, None),
            ("124 MB MLP: prepared --plain file MB vs the model file",
             _prepared_bytes(common.prepared_path("big", "plain")) / 1e6, os.path.getsize(model) / 1e6, 1.01)]


def _total_pss(which, model, count):
    hold = tempfile.mktemp(prefix="sprintiface-hold-")
    children = [_child(which, model, 100, common.CLASSES, hold=hold) for _ in range(count)]
    try:
        for child in children:  # each has loaded and scored
            child.stdout.readline()
        open(hold, "w").close()
        return sum(json.loads(child.stdout.readline())["pss"] for child in children)
    finally:
        for child in children:
            child.wait(timeout=120)
        os.unlink(hold)


def sharing(repeats, quick):
    """N processes on one prepared model (its pre-packed weights shared) against N bare
    processes; compute per frame of the shared model against the unshared one."""
    prepared, plain = common.prepared_path("big"), common.model_path("big")
    rows = []
    for count in ((1, 4) if quick else (1, 2, 4, 8)):
        ours, bare = _total_pss("ours", prepared, count), _total_pss("bare", plain, count)
        rows.append((f"{count} processes on the 124 MB MLP: total PSS MiB, prepared vs bare",
                     ours / MiB, bare / MiB, {4: 0.35, 8: 0.25}.get(count)))
        if count in (4, 8):
            # The floor: bare sessions on the same prepared file, output bound into one array
            # (processes.floor) -- what the bare-ratio targets are up against.
            floor = _total_pss("floor", prepared, count)
            rows.append((f"  {count} processes: total PSS MiB, ours vs the floor (bare sessions on the prepared "
                         f"file, output bound, -log in place)", ours / MiB, floor / MiB, None))
            rows.append((f"  {count} processes: the floor vs bare (the least any Python scorer on ONNX Runtime "
                         f"reaches)", floor / MiB, bare / MiB, None))
    shared, private = common.our_scorer("big", path=prepared), common.our_scorer("big")
    for num_frames in (100, 1000):
        x = common.features(num_frames, seed=num_frames)
        for scorer in (shared, private):
            drive_add_feature(scorer, x)
            scorer.compute(num_frames=num_frames)
        a, b = interleaved(timed(lambda: shared.compute(num_frames=num_frames)),
                           timed(lambda: private.compute(num_frames=num_frames)), repeats)
        for scorer in (shared, private):
            scorer.reset(num_frames=num_frames)
        rows.append((f"compute() ms per T={num_frames}, shared prepared vs unshared 124 MB MLP [{KERNEL}]",
                     a * 1e3, b * 1e3, 1.10))
    return rows


_OUTLIER_CHILD = r"""
import sys
sys.path.insert(0, {bench!r})
import common
def rss():
    return common.status_bytes("VmRSS")
scorer = common.our_scorer("mlp")
def segment(n, seed):
    x = common.features(n, seed)
    for t in range(n):
        scorer.add_feature(feature=x[t], time=t)
    scorer.compute(num_frames=n)
    scorer.reset(num_frames=n)
for seed in range(20):
    segment(300 + 37 * seed, seed)
before = rss()
segment({outlier}, 99)
during = rss()
for seed in range(100):
    segment(300 + 37 * (seed % 20), seed)
print(before, during, rss())
"""


def outlier(repeats, quick):
    """One long outlier, then 100 ordinary segments (9001 classes): RSS back near before."""
    frames = 20000 if quick else 60000
    code = _OUTLIER_CHILD.format(bench=HERE, outlier=frames)
    before, during, after = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                    check=True, cwd=tempfile.gettempdir()).stdout.split())
    return [(f"RSS MiB after a {frames}-frame outlier and 100 ordinary segments vs before it [{KERNEL}]",
             after / MiB, before / MiB, 1.10),
            ("RSS MiB during the outlier vs before it (reported)", during / MiB, before / MiB, None)]


def int8(repeats, quick):
    """int8 against float32 per model (prepare --quantize, sprintiface.quantize): every variant's
    compute per frame (CPU time, medians of interleaved rounds) and best-class agreement, measured
    twice (two prepares) to show the figure is stable; and compute() of the 124 MB MLP's int8 file."""
    rows = []
    kinds = ["mlp", "blstm", "attention"] + ([] if quick else ["big"])
    try:
        import i6_models  # noqa: F401
        import torch  # noqa: F401
        kinds.append("conformer")
    except ImportError:
        print("(int8 rows of the i6-models conformer skipped: pip install torch==2.13.0 onnxscript i6-models "
              "typeguard)")
    for kind in kinds:
        reports = common.int8_reports(kind)
        print(f"({kind}: {reports[0].message}; CPU int8 instructions: "
              f"{', '.join(reports[0].int8_instructions) or 'none known'})", flush=True)
        for run, report in enumerate(reports, start=1):
            for variant in report.variants:
                if variant.speedup is None or variant.same_as is not None:
                    continue
                written = " written" if variant.name == report.chosen else ""
                rows.append((f"int8 vs float32 us/frame, {kind}, {variant.name}, run {run} "
                             f"(agrees {100 * variant.top1_agreement:.1f}%{written})",
                             variant.int8_us_per_frame, report.float_us_per_frame, None))
    float_model, int8_model = common.prepared_path("big"), common.prepared_path("big", "int8")
    fast, reference = common.our_scorer("big", path=int8_model), common.our_scorer("big", path=float_model)
    for num_frames in (100, 1000):
        x = common.features(num_frames, seed=num_frames)
        best = []
        for scorer in (fast, reference):
            drive_add_feature(scorer, x)
            scorer.compute(num_frames=num_frames)
            best.append(numpy.array([scorer.get_scores(time=t).argmin() for t in range(num_frames)]))
        a, b = interleaved(timed(lambda n=num_frames: fast.compute(num_frames=n)),
                           timed(lambda n=num_frames: reference.compute(num_frames=n)), repeats)
        for scorer in (fast, reference):
            scorer.reset(num_frames=num_frames)
        rows.append((f"compute() ms, int8 vs float32 124 MB MLP, T={num_frames} [{KERNEL}]", a * 1e3, b * 1e3, None))
        rows.append((f"best class agrees, int8 vs float32, T={num_frames} (random features; share)",
                     float(numpy.mean(best[0] == best[1])), 1.0, None))
    return rows


_PEAK_CHILD = r"""
import sys
sys.path.insert(0, {bench!r})
import common
from rasr_driver import drive_add_feature, drive_get_scores
def hwm():
    return common.status_bytes("VmHWM")
which, num_frames = sys.argv[1], int(sys.argv[2])
scorer = common.our_scorer("mlp") if which == "ours" else common.reference_scorer("mlp")
warm = common.features(16)
drive_add_feature(scorer, warm); scorer.compute(num_frames=16); scorer.reset(num_frames=16)
x = common.features(num_frames)
before = hwm()
drive_add_feature(scorer, x)
scorer.compute(num_frames=num_frames)
drive_get_scores(scorer, 1, common.CLASSES, keep=False)
print(hwm() - before)
"""


def peak_memory(repeats, quick, num_frames=6000):
    child = _PEAK_CHILD.format(bench=HERE)
    result = {}
    for which in ("ours", "reference"):
        output = subprocess.run([sys.executable, "-c", child, which, str(num_frames)], check=True,
                                capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout
        result[which] = int(output.strip().splitlines()[-1]) / MiB
    return [(f"peak RSS growth MB, one {num_frames}-frame segment, {common.CLASSES} classes vs RETURNN-style "
             f"[{KERNEL}]", result["ours"], result["reference"], 0.6)]


def torch_training(repeats, quick):
    """trainer:torch through RASR's calls vs a plain PyTorch loop (benchmarks/torch_training.py);
    no rows without PyTorch."""
    try:
        import torch  # noqa: F401 - only whether it is installed
    except ImportError:
        print("(trainer:torch rows skipped: PyTorch is not installed; pip install 'sprintiface[torch]')")
        return []
    import torch_training as training

    return training.ratio_rows(repeats)


SECTIONS = {"hot_path": hot_path, "compute": compute, "per_buffer": per_buffer, "cold_start": cold_start,
            "cold_plain": cold_plain, "big_model": big_model, "prepared_size": prepared_size, "sharing": sharing,
            "outlier": outlier, "int8": int8, "peak_memory": peak_memory, "torch_training": torch_training}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, lengths and processes")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run these sections only")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    import onnxruntime

    import sprintiface
    print(f"sprintiface {sprintiface.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}, "
          f"score kernel {KERNEL} (this CPU runs {', '.join(available_score_kernels())}), 1 intra-op thread, "
          f"medians of {repeats} interleaved runs", flush=True)
    width = 100
    print(f"{'measure':<{width}}  {'ours':>10}  {'theirs':>10}  {'ratio':>6}  target", flush=True)
    for name in args.only or SECTIONS:
        for label, ours, theirs, target in SECTIONS[name](repeats, args.quick):
            ratio = ours / theirs
            verdict = "(info)" if target is None else f"<= {target:.2f} {'PASS' if ratio <= target else 'FAIL'}"
            print(f"{label:<{width}}  {ours:>10.2f}  {theirs:>10.2f}  {ratio:>6.3f}  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
