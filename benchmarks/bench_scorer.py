"""asv suite: the RASR feature-scorer path. Shared models: benchmarks/common.py."""
import subprocess
import sys

from . import common  # noqa: I001 - puts tools/ on sys.path

from rasr_driver import drive_add_feature, drive_get_scores  # noqa: E402


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
    """compute() over one buffer vs a bare InferenceSession.run on the same input."""

    params = (["mlp", "blstm"], [100, 1000, 6000], ["sprintiface", "bare-onnxruntime"])
    param_names = ["model", "frames", "implementation"]
    timeout = 600

    def setup(self, model, frames, implementation):
        self.x = common.features(frames)
        if implementation == "sprintiface":
            self.scorer = common.our_scorer(model)
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
        if implementation == "sprintiface":
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
