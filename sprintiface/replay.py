"""Replays of RASR's call sequences, and the demos built on them.

``rasr_scorer_calls`` drives a feature scorer exactly as RASR's
PythonFeatureScorer does (module init, init, add_feature per frame, compute,
get_scores, reset, exit; keyword arguments only): the command line's ``score``
uses it. ``run_scorer_demo`` and ``run_training_demo`` replay RASR on the model
shipped in the package (``sprintiface demo``).
"""
from __future__ import annotations

import time
from typing import Optional, TextIO

import numpy


def rasr_scorer_calls(module, config: str, segments, input_dim: int, output_dim: int):
    """Replay RASR's feature-scorer protocol on ``module``; yields (segment index, scores (T, C) copy).

    ``segments``: iterable of float32 (T, input_dim) arrays. Each frame goes in
    as a fresh C-contiguous array, as RASR makes one per call; each score row is
    copied out, as RASR does.
    """
    scorer = module.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                         callback=lambda *args: None, version_number=5, config=config)
    if scorer is None:
        raise RuntimeError("init() returned None, which RASR treats as a fatal error")
    scorer.init(input_dim=input_dim, output_dim=output_dim)
    buffer_size = scorer.get_feature_buffer_size()
    chunk = None if buffer_size == -1 else buffer_size
    for index, features in enumerate(segments):
        total = features.shape[0]
        scores = numpy.empty((total, output_dim), dtype=numpy.float32)
        start = 0
        while start < total:
            stop = total if chunk is None else min(total, start + chunk)
            for time_index in range(stop - start):
                scorer.add_feature(feature=numpy.array(features[start + time_index], dtype=numpy.float32),
                                   time=time_index)
            scorer.compute(num_frames=stop - start)
            for time_index in range(stop - start):
                scores[start + time_index] = scorer.get_scores(time=time_index)
            scorer.reset(num_frames=stop - start)
            start = stop
        yield index, scores
    scorer.exit()


def run_scorer_demo(num_segments: int = 3, num_frames: int = 500, seed: int = 0,
                    config: Optional[str] = None, out: Optional[TextIO] = None) -> dict:
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
    summary = {"frames": 0, "best_class_counts": numpy.zeros(DEMO_OUTPUT_DIM, dtype=numpy.int64)}
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
                      out: Optional[TextIO] = None) -> dict:
    """Replay a RASR training run: getSegmentList over 2 epochs (random order), then
    init and feedInputAndTargetAlignment per segment as RASR calls them (Fortran
    float32 features, uint32 alignments), into the dump trainer; prints what was written."""
    import os
    import sys
    import tempfile

    import sprintiface
    from sprintiface.models import DEMO_INPUT_DIM, DEMO_OUTPUT_DIM

    out = out or sys.stdout
    rng = numpy.random.default_rng(seed)
    lengths = {f"corpus/seg-{i}/1": int(rng.integers(50, 300)) for i in range(num_segments)}
    directory = None
    if dump_file is None:
        directory = tempfile.mkdtemp(prefix="sprintiface-demo-")
        dump_file = os.path.join(directory, "dump.hdf")
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
    summary = {"segments_fed": fed, "dump_file": dump_file}
    try:
        import h5py
    except ImportError:
        print(f"fed {fed} segments; wrote {dump_file} (install h5py to inspect it)", file=out)
        return summary
    with h5py.File(dump_file, "r") as file:
        summary.update(frames=int(file.attrs["numTimesteps"]), segments=int(file.attrs["numSeqs"]))
        print(f"fed {fed} segments over 2 epochs; {dump_file}: {summary['segments']} segments, "
              f"{summary['frames']} frames, inputs {file['inputs'].shape}, "
              f"targets {sorted(file['targets/data'])}", file=out)
    return summary
