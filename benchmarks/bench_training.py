"""asv suite: the trainer's per-segment cost and getSegmentList over a large corpus."""
import numpy

import sprintiface

from . import common


class SegmentList:
    """getSegmentList over a 100k-segment corpus: one epoch consumed (s)."""

    params = ["default", "random", "laplace:1000"]
    param_names = ["seq_ordering"]
    timeout = 300

    def setup(self, ordering):
        if not hasattr(sprintiface, "getSegmentList"):
            raise NotImplementedError("sprintiface.getSegmentList is not there yet")
        self.names = [f"corpus/recording-{i // 10}/{i % 10}" for i in range(100_000)]
        rng = numpy.random.default_rng(0)
        lengths = rng.integers(100, 2000, len(self.names))
        self.info = {name: {"nframes": int(n), "time": n / 100} for name, n in zip(self.names, lengths)}

    def time_one_epoch(self, ordering):
        for _ in sprintiface.getSegmentList(corpusName="corpus", segmentList=self.names, segmentsInfo=self.info,
                                            config=f"seq_ordering:{ordering},num_epochs:1"):
            pass


class TrainerSegment:
    """feedInputForwarding per 500-frame segment (action forward, forward-only)."""

    timeout = 300

    def setup(self):
        if not hasattr(sprintiface, "feedInputForwarding"):
            raise NotImplementedError("the trainer protocol is not there yet")
        sprintiface.init(inputDim=common.INPUT_DIM, outputDim=common.CLASSES, allowDownsampling=False,
                         config=f"action:forward,onnx:{common.model_path('mlp')},log_level:warning",
                         targetMode="forward-only", cudaEnabled=0, cudaActiveGpu=-1)
        self.features = numpy.asfortranarray(common.features(500).T)

    def teardown(self):
        sprintiface.exit()

    def time_feed_input_forwarding(self):
        sprintiface.feedInputForwarding(features=self.features, weights=None, segmentName="s")
