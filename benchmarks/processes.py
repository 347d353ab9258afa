"""Whole processes for benchmarks/ratios.py: a RASR job's scorer next to a bare
onnxruntime process doing the same work, each measuring itself.

    python benchmarks/processes.py {bare|floor|ours} MODEL FRAMES [--hold FILE] [--config EXTRA]

Each child imports what it needs, loads MODEL, scores FRAMES random 40-dim
frames (bare: InferenceSession.run, then -log_softmax in numpy; floor: the least
any Python scorer on ONNX Runtime holds, see :func:`floor`; ours: RASR's calls on
sprintiface), then prints one JSON line: CPU seconds (user + system,
the whole process), peak RSS (VmHWM) and, after the work, Rss/Pss/Pss_Anon
from /proc/self/smaps_rollup, in bytes; ours also the bytes of a plain model's private
weight copy (``scratch_tmpfs`` on /dev/shm, else ``scratch_disk``) and what the load held
with it (``held_with_copy``: RssAnon + RssFile then, plus the copy). With ``--hold FILE`` it then waits
until FILE exists and prints a second line, so that the PSS of N processes
sharing a model is read while all N are alive. Measuring inside the child matters: a child's
ru_maxrss as its parent sees it starts at the parent's size.
"""
import json
import os
import resource
import sys
import time


#: What the child knows besides /proc: the bytes of a plain model's private weight copy.
_EXTRA = {}


def _status():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = dict(_EXTRA, cpu=usage.ru_utime + usage.ru_stime)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                result["peak"] = int(line.split()[1]) * 1024
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
                    result[key.lower()] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return result


def bare(model, frames):
    import numpy
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    x = numpy.random.default_rng(0).standard_normal((frames, inputs[0].shape[-1])).astype(numpy.float32)
    feeds = {inputs[0].name: x[None]}
    for extra in inputs[1:]:
        feeds[extra.name] = numpy.array([frames], dtype=numpy.int64 if "64" in extra.type else numpy.int32)
    probabilities = session.run(None, feeds)[0][0]
    -numpy.log(probabilities)
    return session  # alive while the process measures itself, as a job's session is


def floor(model, frames):
    """The least a Python process scoring with ONNX Runtime holds: the interpreter, numpy,
    onnxruntime's module and one session on MODEL (a prepared model: its pre-packed weights
    mapped from the shared weights file), whose output is written through an IOBinding
    into one preallocated (FRAMES, C) array, -log taken in place, the load's freed heap
    returned (malloc_trim). No logits copy, no Python beyond the run: what sprintiface's
    per-process memory is compared with."""
    import numpy
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    inputs, output = session.get_inputs(), session.get_outputs()[0]
    dim = inputs[0].shape[-1]
    x = numpy.random.default_rng(0).standard_normal((frames, dim)).astype(numpy.float32)
    x = x[None] if len(inputs[0].shape) == 3 else x
    classes = int(os.environ["SPRINTIFACE_BENCH_CLASSES"])
    scores = numpy.empty((1, frames, classes) if len(output.shape) == 3 else (frames, classes), numpy.float32)
    binding = session.io_binding()
    binding.bind_cpu_input(inputs[0].name, x)
    for extra in inputs[1:]:
        binding.bind_cpu_input(extra.name, numpy.array([frames], dtype=numpy.int64 if "64" in extra.type
                                                       else numpy.int32))
    binding.bind_output(output.name, "cpu", 0, numpy.float32, list(scores.shape), scores.ctypes.data)
    session.run_with_iobinding(binding)
    numpy.negative(scores, out=scores)  # a -log_softmax head's output, in place: nothing more allocated
    import ctypes

    ctypes.CDLL(None).malloc_trim(0)  # the load's freed heap back to the system, as sprintiface does
    return session, binding, scores


def ours(model, frames, extra=""):
    import numpy

    import sprintiface

    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                              callback=None, version_number=5, config=f"onnx:{model},log_level:warning{extra}")
    dim = int(os.environ.get("SPRINTIFACE_BENCH_DIM", "40"))
    classes = int(os.environ["SPRINTIFACE_BENCH_CLASSES"])
    scorer.init(input_dim=dim, output_dim=classes)
    x = numpy.random.default_rng(0).standard_normal((frames, dim)).astype(numpy.float32)
    for t in range(frames):
        scorer.add_feature(feature=x[t], time=t)
    scorer.compute(num_frames=frames)
    [scorer.get_scores(time=t) for t in range(frames)]
    scorer.reset(num_frames=frames)
    engine = scorer._serving.engine
    # The private copy of a plain model's weights: on tmpfs it was memory while the session
    # was made (the load's peak), which VmHWM does not count unless the pages were mapped.
    on_tmpfs = (engine.private_copy_root or "").startswith("/dev/shm/")
    _EXTRA["scratch_tmpfs"] = engine.private_copy_bytes if on_tmpfs else 0
    _EXTRA["scratch_disk"] = 0 if on_tmpfs else engine.private_copy_bytes
    if on_tmpfs and engine.resident_with_private_copy is not None:
        # What the load held when the session was made, the copy not yet removed: its
        # resident memory (no tmpfs pages) plus the whole copy.
        _EXTRA["held_with_copy"] = engine.resident_with_private_copy + engine.private_copy_bytes
    return scorer  # alive while the process measures itself


def main():
    which, model, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hold = sys.argv[sys.argv.index("--hold") + 1] if "--hold" in sys.argv else None
    extra = sys.argv[sys.argv.index("--config") + 1] if "--config" in sys.argv else ""
    alive = {"bare": bare, "floor": floor}[which](model, frames) if which != "ours" else ours(model, frames, extra)  # noqa: F841 - held so the model stays loaded while memory is read
    print(json.dumps(_status()), flush=True)
    if hold:  # all N loaded: report again, now that every sharer is there
        while not os.path.exists(hold):
            time.sleep(0.05)
        print(json.dumps(_status()), flush=True)


if __name__ == "__main__":
    main()
