"""CPU time and peak RSS of a cold process that loads a plain model, by way of parsing.

    python tools/measure_cold_parse.py [MODEL] [--repeats N]

Each variant runs in a fresh child process (medians of N interleaved runs, CPU =
user + system of the child, peak = its ru_maxrss):

- ``bare``: onnxruntime loads the file and runs 100 frames (the issue's baseline);
- ``onnx``: the earlier load path: ``import onnx``, the graph parsed by onnx without its
  weights (``load_external_data=False`` reads them inline, though), graph.prepare, the
  result to ONNX Runtime, 100 frames;
- ``onnx_proto``: the load path: sprintiface.onnx_proto (``weights="external"``);
- ``parse:onnx`` / ``parse:onnx_proto``: only parse the whole file and prepare,
  no ONNX Runtime (``onnx.load`` reads every weight into the process).

Without MODEL, the benchmarks' 124 MB MLP (40 -> 4x2048 -> 9001) is made in /tmp.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

_RUN = """
import numpy, onnxruntime
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
folder = os.path.dirname(os.path.realpath(path))
options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
x = numpy.random.default_rng(0).standard_normal((1, 100, interface.input_dim)).astype(numpy.float32)
out = session.run([interface.served_output], {interface.feature_input.name: x})[0]
"""

VARIANTS = {
    "bare": """
import numpy, onnxruntime
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
x = numpy.random.default_rng(0).standard_normal((1, 100, session.get_inputs()[0].shape[-1])).astype(numpy.float32)
out = session.run(None, {name: x})[0]
scores = -numpy.log(out)
""",
    "onnx": """
import onnx
from sprintiface import graph
model = onnx.load(path, load_external_data=False)
interface = graph.prepare(model, path)
data = model.SerializeToString()
""" + _RUN,
    "onnx_proto": """
from sprintiface import graph, onnx_proto
model = onnx_proto.load(path)
interface = graph.prepare(model, path)
data = model.SerializeToString(weights="external")
""" + _RUN,
    "parse:onnx": """
import onnx
from sprintiface import graph
model = onnx.load(path)
interface = graph.prepare(model, path)
""",
    "parse:onnx_proto": """
from sprintiface import graph, onnx_proto
model = onnx_proto.load(path)
interface = graph.prepare(model, path)
""",
}


# The child's own high-water mark: ru_maxrss of a child also counts the parent's memory it
# was forked from (before exec).
_PEAK = """
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def _child(variant: str, path: str):
    code = f"import os\npath = {path!r}\n" + VARIANTS[variant] + _PEAK
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak_kib = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{variant} failed ({status})")
    return usage.ru_utime + usage.ru_stime, int(peak_kib.split()[-1]) / 1024


def main() -> None:
    args = sys.argv[1:]
    repeats = 5
    if "--repeats" in args:
        at = args.index("--repeats")
        repeats = int(args[at + 1])
        del args[at:at + 2]
    if args:
        path = args[0]
    else:
        sys.path.insert(0, HERE)
        from onnx_models import build_mlp, save_model

        path = "/tmp/sprintiface-cold-parse/big.onnx"
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_model(build_mlp(40, 9001, (2048,) * 4, seed=13), path)
    results = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            results[variant].append(_child(variant, path))
    print(f"model {path}: {os.path.getsize(path) / 1e6:.1f} MB; medians of {repeats}")
    bare_cpu = statistics.median(c for c, _ in results["bare"])
    bare_rss = statistics.median(r for _, r in results["bare"])
    for variant, runs in results.items():
        cpu = statistics.median(c for c, _ in runs)
        rss = statistics.median(r for _, r in runs)
        print(f"{variant:18s} CPU {cpu:6.3f} s ({cpu / bare_cpu:4.2f}x bare)   peak RSS {rss:7.1f} MiB "
              f"({rss - bare_rss:+6.1f} MiB vs bare)")


if __name__ == "__main__":
    main()
