"""The demos (``sprintiface demo``): RASR's calls replayed on the model shipped in the package.

``run_scorer_demo`` scores synthetic segments through :mod:`sprintiface.rasr_calls`,
``run_training_demo`` replays a RASR training run into the dump trainer, and
``run_torch_training_demo`` trains a PyTorch model through RASR's trainer calls and
recognises with each epoch's export.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from typing import Any, Optional, TextIO

import numpy
import numpy.typing

from sprintiface import hdf_layout
from sprintiface.rasr_calls import rasr_scorer_calls


def run_scorer_demo(num_segments: int = 3, num_frames: int = 500, seed: int = 0,
                    config: Optional[str] = None, out: Optional[TextIO] = None) -> dict[str, Any]:
    """Score ``num_segments`` synthetic segments with the shipped demo model through the RASR
    protocol; print a summary and the real-time factor (100 frames per second of audio)."""
    import sys

    import sprintiface
    from sprintiface.models import DEMO_INPUT_DIM, DEMO_MODEL, DEMO_OUTPUT_DIM

    out = out or sys.stdout
    rng = numpy.random.default_rng(seed)
    segments = [rng.standard_normal((num_frames, DEMO_INPUT_DIM)).astype(numpy.float32)
                for _ in range(num_segments)]
    config = config or f"onnx:{DEMO_MODEL},log_level:warning"
    print(f"sprintiface {sprintiface.__version__}: replaying RASR's PythonFeatureScorer protocol", file=out)
    print(f"model {DEMO_MODEL} ({DEMO_INPUT_DIM} features -> {DEMO_OUTPUT_DIM} classes), "
          f"{num_segments} segments x {num_frames} frames", file=out)
    started = time.perf_counter()
    summary: dict[str, Any] = {"frames": 0, "best_class_counts": numpy.zeros(DEMO_OUTPUT_DIM, dtype=numpy.int64)}
    for index, scores in rasr_scorer_calls(sprintiface, config, segments, DEMO_INPUT_DIM, DEMO_OUTPUT_DIM):
        probabilities = numpy.exp(-scores.astype(numpy.float64)).sum(axis=1)
        best = scores.argmin(axis=1)
        summary["frames"] += scores.shape[0]
        summary["best_class_counts"] += numpy.bincount(best, minlength=DEMO_OUTPUT_DIM)
        print(f"segment {index}: {scores.shape[0]} frames, scores (-log) min {scores.min():.3f} "
              f"mean {scores.mean():.3f} max {scores.max():.3f}, sum p per frame "
              f"{probabilities.min():.4f}..{probabilities.max():.4f}, best class of frame 0: {best[0]}", file=out)
    elapsed = time.perf_counter() - started
    audio_seconds = summary["frames"] * 0.01
    summary.update(seconds=elapsed, real_time_factor=elapsed / audio_seconds)
    print(f"{summary['frames']} frames ({audio_seconds:.1f} s of audio at 10 ms) in {elapsed:.3f} s: "
          f"real-time factor {summary['real_time_factor']:.4f}", file=out)
    return summary


def run_training_demo(num_segments: int = 6, seed: int = 0, dump_file: Optional[str] = None,
                      out: Optional[TextIO] = None) -> dict[str, Any]:
    """Replay a RASR training run: getSegmentList over 2 epochs (random order), then
    init and feedInputAndTargetAlignment per segment as RASR calls them (Fortran
    float32 features, uint32 alignments), into the dump trainer; prints what was written.

    Without ``dump_file`` the dump goes to a temporary folder that is removed
    before the function returns (``summary["dump_file"]`` then names a file that
    is gone)."""
    import os
    import sys
    import tempfile

    out = out or sys.stdout
    rng = numpy.random.default_rng(seed)
    lengths = {f"corpus/seg-{i}/1": int(rng.integers(50, 300)) for i in range(num_segments)}
    directory = None
    if dump_file is None:
        directory = tempfile.mkdtemp(prefix="sprintiface-demo-")
        dump_file = os.path.join(directory, "dump.hdf")
    try:
        return _replay_training(lengths, dump_file, seed, rng, out)
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _replay_training(lengths: dict[str, int], dump_file: str, seed: int, rng: numpy.random.Generator,
                     out: TextIO) -> dict[str, Any]:
    import sprintiface
    from sprintiface.models import DEMO_INPUT_DIM, DEMO_OUTPUT_DIM

    config = f"action:train,trainer:dump,dump_file:{dump_file},num_epochs:2,seq_ordering:random,seed:{seed}," \
             f"log_level:warning"
    print("sprintiface: replaying a RASR training run (segment order over 2 epochs, target-alignment, dump)",
          file=out)
    order = sprintiface.getSegmentList(corpusName="corpus", segmentList=list(lengths),
                                       segmentsInfo={n: {"nframes": t, "time": t / 100} for n, t in lengths.items()},
                                       config=config)
    initialised = False
    fed = 0
    for name in order:  # RASR processes each segment as soon as it is yielded
        num_frames = lengths[name]
        features = numpy.asfortranarray(rng.standard_normal((DEMO_INPUT_DIM, num_frames)).astype(numpy.float32))
        alignment = rng.integers(0, DEMO_OUTPUT_DIM, num_frames).astype(numpy.uint32)
        if not initialised:
            sprintiface.init(inputDim=DEMO_INPUT_DIM, outputDim=DEMO_OUTPUT_DIM, allowDownsampling=False,
                             config=config, targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
            initialised = True
        sprintiface.feedInputAndTargetAlignment(features=features, targetAlignment=alignment, weights=None,
                                                segmentName=name)
        fed += 1
    sprintiface.exit()
    summary: dict[str, Any] = {"segments_fed": fed, "dump_file": dump_file}
    try:
        import h5py
    except ImportError:
        print(f"fed {fed} segments; wrote {dump_file} (install h5py to inspect it)", file=out)
        return summary
    with h5py.File(dump_file, "r") as file:
        summary.update(frames=int(file.attrs[hdf_layout.NUM_TIMESTEPS]),
                       segments=int(file.attrs[hdf_layout.NUM_SEQS]))
        print(f"fed {fed} segments over 2 epochs; {dump_file}: {summary['segments']} segments, "
              f"{summary['frames']} frames, inputs {file[hdf_layout.INPUTS].shape}, "
              f"targets {sorted(file[hdf_layout.TARGETS_DATA])}", file=out)
    return summary


# -- training a PyTorch model under RASR's calls, and recognising with its export ------------

#: The model file of ``sprintiface demo --train`` (written next to its outputs): what a
#: ``model_file`` for ``trainer:torch`` looks like.
TORCH_DEMO_MODEL_FILE = '''\
"""Acoustic model for sprintiface's torch trainer: a frame-wise MLP."""
import torch

INPUT_DIM, CLASSES = {input_dim}, {classes}


class FrameMLP(torch.nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(INPUT_DIM, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, CLASSES))

    def forward(self, features, lengths):
        # features: float32 (B, T, INPUT_DIM), zero past each length; lengths: int32 (B,)
        return self.layers(features)  # logits (B, T, CLASSES)


def get_model(epoch):
    torch.manual_seed(0)  # reproducible initial weights (several processes start from process 0's anyway)
    return FrameMLP()
'''


def synthetic_segment(name: str, input_dim: int, classes: int, seed: int = 0, frames: tuple[int, int] = (40, 120),
                      ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.uint32]]:
    """A segment of a learnable task: ``(features float32 (T, input_dim), labels uint32 (T,))``,
    labels the best class of a fixed random linear map of each frame (fixed by ``seed``);
    a pure function of ``name`` and ``seed``."""
    import zlib

    task = numpy.random.default_rng([seed, input_dim, classes]).standard_normal((input_dim, classes))
    rng = numpy.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    features = rng.standard_normal((int(rng.integers(frames[0], frames[1] + 1)), input_dim)).astype(numpy.float32)
    return features, (features @ task).argmax(axis=1).astype(numpy.uint32)


def frame_error_rate(model_config: str, segments: Sequence[tuple[numpy.ndarray, numpy.ndarray]], input_dim: int,
                     classes: int) -> float:
    """Frames whose best score is not the label, scoring ``segments`` ((features, labels) pairs)
    through RASR's feature-scorer calls on the model ``model_config`` names."""
    import sprintiface

    errors = frames = 0
    for index, scores in rasr_scorer_calls(sprintiface, model_config + ",log_level:warning",
                                           (features for features, _ in segments), input_dim, classes):
        labels = segments[index][1]
        errors += int((scores.argmin(axis=1) != labels).sum())
        frames += labels.shape[0]
    return errors / frames


def run_torch_training_demo(directory: Optional[str] = None, num_epochs: int = 4, num_segments: int = 32,
                            seed: int = 0, out: Optional[TextIO] = None) -> dict[str, Any]:
    """Train a PyTorch model through RASR's call sequence, then recognise with its exports.

    Writes the model file (:data:`TORCH_DEMO_MODEL_FILE`) into ``directory`` (by
    default a new temporary one, removed before the function returns), replays RASR's nn-trainer
    with python-segment-order:
    getSegmentList over ``num_epochs`` epochs, init with the first segment,
    feedInputAndTargetAlignment per segment (Fortran float32 features, uint32
    alignments), exit; ``trainer:torch`` writes ``am.NNN.pt`` / ``am.NNN.onnx`` per
    epoch. Then every epoch's ONNX model scores held-out segments through the
    feature scorer (``model:<dir>/am,epoch:N``) and the frame error rate is printed.
    Returns ``{"directory", "frame_error_rates" (one per epoch), "seconds"}``.
    """
    import sys
    import tempfile

    from sprintiface.errors import ConfigError

    try:
        import torch  # noqa: F401 - imported only to say early that PyTorch is missing
    except ImportError:
        raise ConfigError("demo --train needs PyTorch: pip install 'sprintiface[torch]'") from None
    out = out or sys.stdout
    if directory is not None:
        return _train_and_recognise(directory, num_epochs, num_segments, seed, out)
    temporary = tempfile.mkdtemp(prefix="sprintiface-torch-demo-")
    try:
        return _train_and_recognise(temporary, num_epochs, num_segments, seed, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        print(f"removed {temporary}; give --directory to keep the model file and the exports", file=out)


def _train_and_recognise(directory: str, num_epochs: int, num_segments: int, seed: int,
                         out: TextIO) -> dict[str, Any]:
    import os

    import sprintiface

    input_dim, classes = 12, 6
    model_file = os.path.join(directory, "am.py")
    with open(model_file, "w", encoding="utf-8") as file:
        file.write(TORCH_DEMO_MODEL_FILE.format(input_dim=input_dim, classes=classes))
    prefix = os.path.join(directory, "am")
    config = (f"action:train,trainer:torch,model_file:{model_file},model:{prefix},num_epochs:{num_epochs},"
              f"seq_ordering:random,seed:{seed},learning_rate:0.01,max_seqs:4,max_frames:1000,torch_threads:1,"
              f"log_level:warning")
    print(f"sprintiface: replaying RASR's nn-trainer with trainer:torch ({input_dim} features -> {classes} "
          f"classes, {num_segments} segments, {num_epochs} epochs) in {directory}", file=out)
    names = [f"train/seg-{i}" for i in range(num_segments)]
    started = time.perf_counter()
    initialised = False
    for name in sprintiface.getSegmentList(corpusName="train", segmentList=names, segmentsInfo=None, config=config):
        features, labels = synthetic_segment(name, input_dim, classes, seed)
        if not initialised:  # RASR calls init lazily, with the first segment's data
            sprintiface.init(inputDim=input_dim, outputDim=classes, allowDownsampling=0, config=config,
                             targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
            initialised = True
        sprintiface.feedInputAndTargetAlignment(features=numpy.asfortranarray(features.T), targetAlignment=labels,
                                                weights=None, segmentName=name)
    sprintiface.exit()
    seconds = time.perf_counter() - started
    held_out = [synthetic_segment(f"test/seg-{i}", input_dim, classes, seed) for i in range(8)]
    rates = []
    for epoch in range(1, num_epochs + 1):
        rates.append(frame_error_rate(f"model:{prefix},epoch:{epoch}", held_out, input_dim, classes))
        print(f"epoch {epoch}: {prefix}.{epoch:03d}.onnx through the scorer: frame error rate "
              f"{100 * rates[-1]:.1f}% on {sum(len(labels) for _, labels in held_out)} held-out frames", file=out)
    print(f"trained in {seconds:.2f} s; the model file is {model_file}", file=out)
    return {"directory": directory, "frame_error_rates": rates, "seconds": seconds}
