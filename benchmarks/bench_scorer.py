"""asv suite: the RASR feature-scorer path. Shared models: benchmarks/common.py;
whole processes: benchmarks/processes.py (each child measures itself)."""
import json
import os
import subprocess
import sys
import tempfile

import numpy

from . import common

from rasr_driver import drive_add_feature, drive_get_scores

from sprintiface._buffer import available_score_kernels

PROCESSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "processes.py")


class HotPath:
    """Per-call cost of RASR's per-frame calls through the C driver (ns per call)."""

    params = ["sprintiface", "returnn-style"]
    param_names = ["implementation"]
    timeout = 300
    unit = "ns"

    def setup(self, implementation):
        self.scorer = common.our_scorer("mlp") if implementation == "sprintiface" else common.reference_scorer("mlp")
        self.frames = common.features(2000)

    def track_add_feature_ns(self, implementation):
        cost = drive_add_feature(self.scorer, self.frames)
        self.scorer.reset(num_frames=len(self.frames))
        return cost

    def track_get_scores_ns(self, implementation):
        drive_add_feature(self.scorer, self.frames)
        self.scorer.compute(num_frames=len(self.frames))
        cost = drive_get_scores(self.scorer, len(self.frames), common.CLASSES, keep=False, copy=False)[0]
        self.scorer.reset(num_frames=len(self.frames))
        return cost

    track_add_feature_ns.unit = "ns"
    track_get_scores_ns.unit = "ns"


class Compute:
    """compute() over one buffer, with each score kernel, vs a bare InferenceSession.run on
    the same input (``bare-onnxruntime``)."""

    params = (["mlp", "blstm"], [100, 1000, 6000], [*available_score_kernels(), "bare-onnxruntime"])
    param_names = ["model", "frames", "implementation"]
    timeout = 600

    def setup(self, model, frames, implementation):
        self.x = common.features(frames)
        if implementation != "bare-onnxruntime":
            self.scorer = common.our_scorer(model, f",score_kernel:{implementation}")
            drive_add_feature(self.scorer, self.x)
        else:
            self.session, feeds_for = common.bare_session(model)
            self.feeds = feeds_for(self.x)
        # Two untimed calls first, on both sides: the figure is the steady state per
        # segment, not the one-off growth to this length (a fresh bare session's first
        # TWO runs at T=6000 take 0.5 s and 1.5 s while ORT plans its memory, then
        # ~0.17 s). Cold start is its own benchmark; --quick times a single call.
        for _ in range(2):
            self.time_compute(model, frames, implementation)

    def time_compute(self, model, frames, implementation):
        if implementation != "bare-onnxruntime":
            self.scorer.compute(num_frames=frames)
        else:
            self.session.run(None, self.feeds)


class Memory:
    """Peak memory of one 6000-frame segment with 9001 classes, whole process (asv peakmem)."""

    params = ["sprintiface", "returnn-style"]
    param_names = ["implementation"]
    timeout = 300

    def setup(self, implementation):
        self.scorer = common.our_scorer("mlp") if implementation == "sprintiface" else common.reference_scorer("mlp")
        self.x = common.features(6000)

    def peakmem_segment(self, implementation):
        drive_add_feature(self.scorer, self.x)
        self.scorer.compute(num_frames=6000)
        self.scorer.reset(num_frames=6000)


class ColdStart:
    """import + module init + init + first 500-frame segment, in a fresh interpreter (s)."""

    timeout = 300

    def setup(self):
        common.model_path("mlp")

    def time_cold_start(self):
        code = ("import sys; sys.path.insert(0, {!r}); import common; "
                "from rasr_driver import drive_segment; "
                "s = common.our_scorer('mlp'); drive_segment(s, common.features(500), common.CLASSES)")
        import os
        subprocess.run([sys.executable, "-c", code.format(os.path.dirname(os.path.abspath(__file__)))], check=True)


class PerBuffer:
    """A low-latency buffer's fixed cost: compute() of T frames on a tiny MLP 16-32-7 with
    default settings, vs a bare run plus -log of the same frames."""

    params = ([1, 2, 5, 10], ["sprintiface", "bare-onnxruntime"])
    param_names = ["frames", "implementation"]

    def setup(self, frames, implementation):
        x = common.features(frames, dim=16)
        if implementation == "sprintiface":
            self.scorer = common.our_scorer("tiny", quiet=False)
            drive_add_feature(self.scorer, x)
        else:
            self.session, feeds_for = common.bare_session("tiny")
            self.feeds = feeds_for(x)
        self.time_compute(frames, implementation)

    def time_compute(self, frames, implementation):
        if implementation == "sprintiface":
            self.scorer.compute(num_frames=frames)
        else:
            -numpy.log(self.session.run(None, self.feeds)[0])


def _child(which, model, classes, hold=None):
    command = [sys.executable, PROCESSES, which, model, "100"] + (["--hold", hold] if hold else [])
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
                            env=dict(os.environ, SPRINTIFACE_BENCH_CLASSES=str(classes)))


def _measure(which, model, classes):
    child = _child(which, model, classes)
    out, _ = child.communicate(timeout=300)
    return json.loads(out.splitlines()[-1])


class ColdProcess:
    """A fresh process: import, load, 100 frames, -log. Prepared 40-256-500 model for
    sprintiface, the plain model for a bare onnxruntime process."""

    params = ["sprintiface-prepared", "bare-onnxruntime"]
    param_names = ["implementation"]
    timeout = 300

    def setup(self, implementation):
        self.model = common.prepared_path("small") if implementation == "sprintiface-prepared" else \
            common.model_path("small")
        self.which = "ours" if implementation == "sprintiface-prepared" else "bare"

    def track_cpu_seconds(self, implementation):
        return _measure(self.which, self.model, 500)["cpu"]

    def track_peak_rss_mib(self, implementation):
        return _measure(self.which, self.model, 500)["peak"] / 2**20

    track_cpu_seconds.unit = "s"
    track_peak_rss_mib.unit = "MiB"


class ColdProcessPlain:
    """A fresh process on the plain (not prepared) 40-256-500 model: import, load (no onnx:
    sprintiface reads and cuts the graph itself), 100 frames, -log; against a bare
    onnxruntime process on the same file. The peak is the larger of VmHWM and what the load
    held with its private weight copy on tmpfs (memory while the session is made)."""

    params = ["sprintiface-plain", "bare-onnxruntime"]
    param_names = ["implementation"]
    timeout = 300

    def setup(self, implementation):
        import compileall

        import sprintiface

        # Bytecode as a wheel install has it: no process compiles the package itself.
        compileall.compile_dir(os.path.dirname(sprintiface.__file__), quiet=2)
        self.model = common.model_path("small")
        self.which = "ours" if implementation == "sprintiface-plain" else "bare"

    def track_cpu_seconds(self, implementation):
        return _measure(self.which, self.model, 500)["cpu"]

    def track_peak_mib(self, implementation):
        run = _measure(self.which, self.model, 500)
        return max(run["peak"], run.get("held_with_copy", 0)) / 2**20

    def track_private_copy_tmpfs_mib(self, implementation):
        return _measure(self.which, self.model, 500).get("scratch_tmpfs", 0) / 2**20

    track_cpu_seconds.unit = "s"
    track_peak_mib.unit = "MiB"
    track_private_copy_tmpfs_mib.unit = "MiB"


class ModelMemory:
    """The 124 MB MLP 40-4x2048-9001 in one process: load peak RSS and steady PSS."""

    params = ["sprintiface-plain", "sprintiface-prepared", "bare-onnxruntime"]
    param_names = ["implementation"]
    timeout = 600

    def setup(self, implementation):
        self.model = common.prepared_path("big") if implementation == "sprintiface-prepared" else \
            common.model_path("big")
        self.which = "bare" if implementation == "bare-onnxruntime" else "ours"

    def track_load_peak_mib(self, implementation):
        return _measure(self.which, self.model, common.CLASSES)["peak"] / 2**20

    def track_steady_pss_mib(self, implementation):
        return _measure(self.which, self.model, common.CLASSES)["pss"] / 2**20

    track_load_peak_mib.unit = "MiB"
    track_steady_pss_mib.unit = "MiB"


class PreparedSize:
    """Bytes `prepare` writes for the 124 MB MLP (OUT plus its weights file) per byte of the model."""

    params = ["shareable", "plain"]
    param_names = ["form"]
    timeout = 600

    def track_size_vs_model(self, form):
        from sprintiface.onnx_proto import read_metadata

        path = common.prepared_path("big", form)
        weights = json.loads(read_metadata(path).get("sprintiface.packed_for", "{}")).get("weights")
        size = os.path.getsize(path) + (os.path.getsize(os.path.join(os.path.dirname(path), weights)) if weights else 0)
        return size / os.path.getsize(common.model_path("big"))

    track_size_vs_model.unit = "ratio"


class SharedWeights:
    """Total PSS of N processes on the 124 MB MLP: one prepared model vs N bare processes."""

    params = ([1, 2, 4, 8], ["sprintiface-prepared", "bare-onnxruntime"])
    param_names = ["processes", "implementation"]
    timeout = 900

    def setup(self, processes, implementation):
        self.model = common.prepared_path("big") if implementation == "sprintiface-prepared" else \
            common.model_path("big")
        self.which = "ours" if implementation == "sprintiface-prepared" else "bare"

    def track_total_pss_mib(self, processes, implementation):
        hold = tempfile.mktemp(prefix="sprintiface-hold-")
        children = [_child(self.which, self.model, common.CLASSES, hold) for _ in range(processes)]
        try:
            for child in children:
                child.stdout.readline()
            open(hold, "w").close()
            return sum(json.loads(child.stdout.readline())["pss"] for child in children) / 2**20
        finally:
            for child in children:
                child.wait(timeout=120)
            os.unlink(hold)

    track_total_pss_mib.unit = "MiB"


class Int8:
    """compute() on the 124 MB MLP prepared as float32 and as int8 (prepare --quantize)."""

    params = ([100, 1000], ["float32", "int8"])
    param_names = ["frames", "weights"]
    timeout = 900

    def setup(self, frames, weights):
        path = common.prepared_path("big", "int8" if weights == "int8" else "shareable")
        self.scorer = common.our_scorer("big", path=path)
        drive_add_feature(self.scorer, common.features(frames))
        self.scorer.compute(num_frames=frames)

    def time_compute(self, frames, weights):
        self.scorer.compute(num_frames=frames)


class Int8Choice:
    """prepare --quantize per model (sprintiface.quantize), measured twice: the written (or, when
    none pays, the fastest accurate) variant's speed-up over float32 in each run, and its agreement."""

    params = (["mlp", "blstm", "attention"],)
    param_names = ["model"]
    timeout = 1800

    def setup_cache(self):
        result = {}
        for kind in self.params[0]:
            runs = []
            for report in common.int8_reports(kind):
                measured = [v for v in report.variants if v.speedup is not None and v.same_as is None]
                accurate = [v for v in measured if v.top1_agreement >= report.min_agreement] or measured
                best = report.variant(report.chosen) if report.chosen else max(accurate, key=lambda v: v.speedup)
                runs.append({"speedup": best.speedup, "agreement": best.top1_agreement})
            result[kind] = runs
        return result

    def track_speedup_run1(self, cache, model):
        return cache[model][0]["speedup"]

    def track_speedup_run2(self, cache, model):
        return cache[model][1]["speedup"]

    def track_agreement(self, cache, model):
        return cache[model][0]["agreement"]

    track_speedup_run1.unit = track_speedup_run2.unit = "x float32"
    track_agreement.unit = "share of frames"
