"""Soak: 10,000 segments of 1-3000 frames through one scorer; memory, fds and threads stay flat.

Opt-in (`pytest -m soak`; a few minutes). RASR's calls as RASR makes them (a
fresh array per frame, every row read and copied, reset per segment), on a
small MLP. Every 500 segments it records the process's resident memory
(VmRSS), open file descriptors and threads (/proc/self), and checks one
segment against bare ONNX Runtime. After the warm-up (the first 1,000
segments; the first is the longest, so the buffers are at their largest from
the start) resident memory may grow by at most RSS_GROWTH_LIMIT; fds and threads
must not change; over the second half it may grow by at most
RSS_LATE_GROWTH_LIMIT.
"""
import os
import time

import numpy
import pytest
from onnx_models import build_mlp, save_model
from scorer_reference import ReferenceScorer, assert_scores, rasr_module_init

import sprintiface

SEGMENTS = 10_000
MAX_FRAMES = 3000
EVERY = 500
WARM_UP = 1000
RSS_GROWTH_LIMIT = 16 * 2**20        # after the warm-up (allocators settle in steps)
RSS_LATE_GROWTH_LIMIT = 4 * 2**20    # over the second half: a leak of 1 kB per segment shows as 5 MB
INPUT_DIM, OUTPUT_DIM = 40, 200


def process_figures():
    """(resident memory in bytes, open fds, threads) of this process."""
    fields = {}
    with open("/proc/self/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]) * 1024, len(os.listdir("/proc/self/fd")), int(fields["Threads"][0])


@pytest.mark.soak
def test_ten_thousand_segments_keep_memory_fds_and_threads_flat(tmp_path, capsys):
    path = str(tmp_path / "mlp.onnx")
    save_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=21), path)
    reference = ReferenceScorer(path)
    scorer = rasr_module_init(sprintiface, f"onnx:{path},log_level:warning")
    scorer.init(input_dim=INPUT_DIM, output_dim=OUTPUT_DIM)
    rng = numpy.random.default_rng(22)
    pool = rng.standard_normal((2 * MAX_FRAMES, INPUT_DIM)).astype(numpy.float32)
    # The model is frame-wise: a segment's rows are the pool's rows, scored once up front
    # (so that checking allocates next to nothing during the soak).
    expected = reference.scores(pool)
    del reference
    lengths = rng.integers(1, MAX_FRAMES + 1, SEGMENTS)
    lengths[0] = MAX_FRAMES  # the buffers reach their largest size at once
    offsets = rng.integers(0, MAX_FRAMES, SEGMENTS)
    row = numpy.empty(OUTPUT_DIM, dtype=numpy.float32)
    rows = numpy.ones((MAX_FRAMES, OUTPUT_DIM), dtype=numpy.float32)  # all pages touched now
    figures, frames_total = [], 0
    started = time.monotonic()
    scorer.reset(num_frames=0)
    for segment, (length, offset) in enumerate(zip(lengths.tolist(), offsets.tolist())):
        frames = pool[offset:offset + length]
        add_feature, get_scores = scorer.add_feature, scorer.get_scores
        for t in range(length):
            add_feature(feature=numpy.array(frames[t]), time=t)
        scorer.compute(num_frames=length)
        checked = segment % EVERY == EVERY - 1
        for t in range(length):
            row[:] = get_scores(time=t)  # RASR copies each row
            if checked:
                rows[t] = row
        scorer.reset(num_frames=length)
        frames_total += length
        if checked:
            figures.append((segment + 1, time.monotonic() - started, *process_figures()))
            assert_scores(rows[:length], expected[offset:offset + length], f"segment {segment}")
    scorer.exit()
    elapsed = time.monotonic() - started

    with capsys.disabled():
        print(f"\nsoak: {SEGMENTS} segments, {frames_total} frames in {elapsed:.1f} s "
              f"({frames_total / elapsed / 1e3:.0f} k frames/s through RASR's calls)")
        print(f"{'segments':>9} {'seconds':>8} {'RSS MiB':>8} {'fds':>4} {'threads':>7}")
        for count, seconds, rss, fds, threads in figures:
            print(f"{count:>9} {seconds:>8.1f} {rss / 2**20:>8.1f} {fds:>4} {threads:>7}")
    after_warm_up = [f for f in figures if f[0] >= WARM_UP]
    base_rss, base_fds, base_threads = after_warm_up[0][2:]
    growth = max(f[2] for f in after_warm_up) - base_rss
    assert growth <= RSS_GROWTH_LIMIT, f"resident memory grew by {growth / 2**20:.1f} MiB after the warm-up"
    second_half = [f for f in figures if f[0] >= SEGMENTS // 2]
    late_growth = max(f[2] for f in second_half) - second_half[0][2]
    assert late_growth <= RSS_LATE_GROWTH_LIMIT, (
        f"resident memory grew by {late_growth / 2**20:.1f} MiB over the second half")
    assert {f[3] for f in after_warm_up} == {base_fds}, f"open fds changed: {[f[3] for f in figures]}"
    assert {f[4] for f in after_warm_up} == {base_threads}, f"threads changed: {[f[4] for f in figures]}"
