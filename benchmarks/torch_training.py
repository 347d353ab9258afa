"""Training throughput of trainer:torch through RASR's calls, against a plain PyTorch loop
over the same mini-batches. Needs PyTorch (pip install 'sprintiface[torch]').

Ours: RASR's call sequence for one epoch (getSegmentList, init, feedInputAndTargetAlignment
per segment with Fortran float32 features, exit), the trainer on its background thread
(queue_size 4, the default), and also in RASR's thread (queue_size 0). The background thread
is there to overlap RASR's feature extraction, which this benchmark does not have (the
features are made beforehand), so here it shows only its own cost. The epoch-end files
(checkpoint and checked ONNX export) are timed apart (the trainer reports them in
``last_epoch_stats``): they cost the same per epoch however long the epoch is.

Plain: the same model and Adam, the same batches (``sprintiface.training.torch_trainer.batches``
over the same segments), padded beforehand, and ``cross_entropy(logits[mask], targets[mask])``,
backward, step. One PyTorch thread on both sides.

Used by ``benchmarks/ratios.py`` (:func:`ratio_rows`) and the asv suite
(``bench_torch_training.py``).
"""
import os
import shutil
import statistics
import tempfile
import time

import numpy

INPUT_DIM, CLASSES = 40, 500
NUM_SEGMENTS = 160
MODEL_FILE = f'''
import torch


class FrameMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear({INPUT_DIM}, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
            torch.nn.Linear(512, {CLASSES}))

    def forward(self, features, lengths):
        return self.layers(features)


def get_model(epoch):
    torch.manual_seed(0)
    return FrameMLP()
'''
SETTINGS = "max_seqs:8,max_frames:3000,learning_rate:0.001,torch_threads:1,log_level:warning"


class Workload:
    """A model file on disk and one epoch of synthetic segments (100-400 frames)."""

    def __init__(self, num_segments: int = NUM_SEGMENTS, seed: int = 0):
        self.directory = tempfile.mkdtemp(prefix="sprintiface-bench-torch-")
        self.model_file = os.path.join(self.directory, "am.py")
        with open(self.model_file, "w") as file:
            file.write(MODEL_FILE)
        rng = numpy.random.default_rng(seed)
        self.names = [f"train/{i}" for i in range(num_segments)]
        self.segments = {}
        for name in self.names:
            frames = int(rng.integers(100, 401))
            self.segments[name] = (rng.standard_normal((frames, INPUT_DIM)).astype(numpy.float32),
                                   rng.integers(0, CLASSES, frames).astype(numpy.uint32))
        self.frames = sum(features.shape[0] for features, _ in self.segments.values())
        # What RASR hands over: (F, T) float32 in Fortran order (made by RASR's C++, not timed)
        self.rasr_features = {name: numpy.asfortranarray(features.T) for name, (features, _) in self.segments.items()}
        self._runs = 0

    def close(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def through_rasr(self, queue_size: int = 4):
        """One epoch through RASR's calls: (seconds of training, CPU seconds of training (all threads),
        seconds of the epoch-end files)."""
        import sprintiface

        self._runs += 1
        prefix = os.path.join(self.directory, f"run{self._runs}", "am")
        config = f"action:train,trainer:torch,model_file:{self.model_file},model:{prefix},num_epochs:1," \
                 f"queue_size:{queue_size},{SETTINGS}"
        started, cpu = time.perf_counter(), time.process_time()
        trainer = None
        for name in sprintiface.getSegmentList(corpusName="train", segmentList=self.names, segmentsInfo=None,
                                               config=config):
            labels = self.segments[name][1]
            if trainer is None:
                sprintiface.init(inputDim=INPUT_DIM, outputDim=CLASSES, allowDownsampling=0, config=config,
                                 targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
                trainer = sprintiface._training().session.trainer
            sprintiface.feedInputAndTargetAlignment(features=self.rasr_features[name], targetAlignment=labels,
                                                    weights=None, segmentName=name)
        sprintiface.exit()
        total, cpu = time.perf_counter() - started, time.process_time() - cpu
        files = trainer.last_epoch_stats.files_seconds
        shutil.rmtree(os.path.dirname(prefix), ignore_errors=True)
        # the files are written by one thread: their CPU time is about their wall time
        return total - files, cpu - files, files

    def plain_batches(self):
        """The trainer's batches of this epoch, padded: (features, lengths, mask, targets) tensors."""
        import torch

        from sprintiface.training.protocol import Segment
        from sprintiface.training.torch_trainer import batches, collate

        segments = [Segment(name, *self.segments[name][:1], epoch=1, alignment=self.segments[name][1])
                    for name in self.names]
        padded = []
        for group in batches(segments, max_seqs=8, max_frames=3000):
            batch = collate(group, torch.device("cpu"))
            padded.append((batch.features, batch.lengths, batch.mask, batch.alignment))
        return padded

    def plain_loop(self, padded):
        """The same epoch as a plain PyTorch loop over ``padded`` batches: (seconds, CPU seconds)."""
        import torch

        torch.set_num_threads(1)
        started, cpu = time.perf_counter(), time.process_time()
        namespace = {}
        exec(MODEL_FILE, namespace)
        model = namespace["get_model"](1)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
        model.train()
        for features, lengths, mask, targets in padded:
            logits = model(features, lengths)
            loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started, time.process_time() - cpu


def measure(repeats: int = 3, num_segments: int = NUM_SEGMENTS) -> dict:
    """Medians of ``repeats`` interleaved epochs (queue_size 4, queue_size 0, plain, ...): ms per
    1000 frames of training (wall and CPU time, all threads) and seconds of the epoch-end files."""
    workload = Workload(num_segments)
    try:
        padded = workload.plain_batches()
        workload.through_rasr()  # warm: imports, first-call costs of PyTorch and ONNX Runtime
        workload.plain_loop(padded)
        runs = {"queued": [], "in_rasr_thread": [], "plain": []}
        for _ in range(repeats):
            runs["queued"].append(workload.through_rasr(queue_size=4))
            runs["in_rasr_thread"].append(workload.through_rasr(queue_size=0))
            runs["plain"].append(workload.plain_loop(padded))
        scale = 1000.0 / workload.frames * 1e3
        result = {"frames": workload.frames, "files_s": statistics.median(run[2] for run in runs["queued"])}
        for name, times in runs.items():
            result[f"{name}_ms"] = statistics.median(run[0] for run in times) * scale
            result[f"{name}_cpu_ms"] = statistics.median(run[1] for run in times) * scale
        return result
    finally:
        workload.close()


def ratio_rows(repeats: int = 3):
    """Rows for benchmarks/ratios.py: (measure, ours, theirs, target)."""
    result = measure(repeats)
    frames, plain = result["frames"], result["plain_ms"]
    return [
        (f"trainer:torch ms/1000 frames via RASR's calls vs a plain PyTorch loop ({frames} frames/epoch)",
         result["queued_ms"], plain, 1.05),
        ("  the same, CPU ms (all threads)", result["queued_cpu_ms"], result["plain_cpu_ms"], None),
        ("  queue_size:0 (training in RASR's thread), ms/1000 frames", result["in_rasr_thread_ms"], plain, None),
        ("  epoch-end checkpoint + checked ONNX export, ms per epoch vs the epoch's training",
         result["files_s"] * 1e3, plain * frames / 1000.0, None),
    ]
