"""What one scoring process holds, step by step (docs/performance.md, "What a job holds").

    python benchmarks/job_memory.py PREPARED_MODEL {ours|floor} [CLASSES]

Prints a markdown row per step: Rss, anonymous memory (what N processes pay N times) and the
change of anonymous and file-backed memory (pages of libraries and of the weights file, which
the processes of a node share), from /proc/self/smaps_rollup, in MiB. ``ours`` is a RASR job's
calls on sprintiface (40-dim features, 100 frames); ``floor`` the least a Python process
scoring with ONNX Runtime holds: one session on the same file, its output bound into one
preallocated array, -log in place, the load's freed heap trimmed (as benchmarks/processes.py's
``floor``). Run it from outside the source tree, with the package installed.
"""
import ctypes
import sys

MiB = 1024.0

_rows = []
_last = None


def _rollup():
    values = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Anonymous"):
                values[key] = int(rest.split()[0]) / MiB
    values["file"] = values["Rss"] - values["Anonymous"]
    return values


def step(name):
    global _last
    now = _rollup()
    before = _last or now
    _rows.append((name, now["Rss"], now["Anonymous"], now["Anonymous"] - before["Anonymous"],
                  now["file"] - before["file"]))
    _last = now


def main():
    model, which = sys.argv[1], sys.argv[2]
    classes = int(sys.argv[3]) if len(sys.argv) > 3 else 9001
    frames, dim = 100, 40
    step("bare python")
    import numpy

    step("+ import numpy")
    import onnxruntime

    step("+ import onnxruntime")
    # Features without numpy.random (RASR hands them over; numpy.random alone is 1.7 MiB).
    x = numpy.arange(frames * dim, dtype=numpy.float32).reshape(frames, dim) / (frames * dim)
    if which == "ours":
        import sprintiface

        step("+ import sprintiface")
        scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                                  callback=None, version_number=5, config=f"onnx:{model},log_level:warning")
        scorer.init(input_dim=dim, output_dim=classes)
        step("+ init (config) and init(input_dim, output_dim): session, warm-up")
        for t in range(frames):
            scorer.add_feature(feature=x[t], time=t)
        scorer.compute(num_frames=frames)
        [scorer.get_scores(time=t) for t in range(frames)]
        scorer.reset(num_frames=frames)
        step("+ first segment, 100 frames (add_feature, compute, get_scores, reset)")
    else:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.enable_mem_pattern = False
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        ctypes.CDLL(None).malloc_trim(0)
        step("+ session on the prepared file, freed heap trimmed")
        inputs, output = session.get_inputs(), session.get_outputs()[0]
        scores = numpy.empty((1, frames, classes) if len(output.shape) == 3 else (frames, classes), numpy.float32)
        binding = session.io_binding()
        binding.bind_cpu_input(inputs[0].name, x[None] if len(inputs[0].shape) == 3 else x)
        for extra in inputs[1:]:
            binding.bind_cpu_input(extra.name, numpy.array([frames], dtype=numpy.int64 if "64" in extra.type
                                                           else numpy.int32))
        binding.bind_output(output.name, "cpu", 0, numpy.float32, list(scores.shape), scores.ctypes.data)
        session.run_with_iobinding(binding)
        numpy.negative(scores, out=scores)
        step("+ one run of 100 frames into the bound array, -log in place")
    print("| step | Rss | anon | Δ anon | Δ file |")
    print("| --- | --- | --- | --- | --- |")
    for name, rss, anon, delta_anon, delta_file in _rows:
        print(f"| {name} | {rss:.1f} | {anon:.1f} | {delta_anon:+.1f} | {delta_file:+.1f} |")


if __name__ == "__main__":
    main()
