"""Properties of the per-frame hot path: no Python-level allocation, geometric growth,
RASR's per-frame calls served by the compiled buffer."""
import tracemalloc

import numpy
from conftest import features, rasr_scorer, score_segment

from sprintiface._buffer import FrameBuffer


def test_per_frame_calls_are_the_compiled_buffers_methods(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    # bound builtin methods: RASR's calls never enter a Python frame
    assert type(scorer.add_feature).__name__ == "builtin_function_or_method"
    assert type(scorer.get_scores).__name__ == "builtin_function_or_method"
    assert isinstance(scorer.add_feature.__self__, FrameBuffer)
    # The buffer's own methods stay on the buffer: only the two per-frame calls are bound on
    # the object RASR talks to. Each name exists on the buffer, so the check can fail.
    buffer = scorer.add_feature.__self__
    for name in ("open_window", "finish_window", "abandon_window", "find_non_finite", "frames", "clear",
                 "shrink", "count", "rejected"):
        assert hasattr(buffer, name), name
        assert not hasattr(scorer, name), name


def test_add_feature_allocates_nothing_per_frame(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    num_frames = 5000
    x = features(num_frames, 12)
    score_segment(scorer, x)  # first segment grows the buffers to fit
    frames = [numpy.array(row) for row in x]  # RASR's fresh arrays, made before tracing
    times = list(range(num_frames))  # ints above 256 are objects too: make them first
    add_feature = scorer.add_feature
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for t, frame in zip(times, frames):
            add_feature(feature=frame, time=t)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before == 0
    # A per-frame allocation of even 16 bytes would show as 80 kB here.
    assert peak - before < 1024
    scorer.compute(num_frames=num_frames)
    scorer.reset(num_frames=num_frames)


def test_frame_block_grows_geometrically_and_keeps_views_valid():
    buffer = FrameBuffer(3, 2)
    capacities = {buffer.frame_capacity}
    window = None
    for t in range(20000):
        buffer.add_feature(numpy.full(3, t, dtype=numpy.float32), t)
        capacities.add(buffer.frame_capacity)
        if t == 10:
            window = buffer.frames()
    assert len(capacities) < 15  # a handful of reallocations for 20000 frames
    numpy.testing.assert_array_equal(window[:, 0], numpy.arange(11, dtype=numpy.float32))
    full = buffer.frames()
    assert full.shape == (20000, 3) and full.flags.c_contiguous
    numpy.testing.assert_array_equal(full[:, 2], numpy.arange(20000, dtype=numpy.float32))
    buffer.clear()
    assert len(buffer) == 0 and buffer.frames().shape == (0, 3)


def test_finite_buffer_is_allocated_once():
    buffer = FrameBuffer(4, 2, max_frames=8)
    assert buffer.frame_capacity == 8
    buffer.add_feature(numpy.zeros(4, numpy.float32), 0)
    frames_address, _ = buffer.open_window(1)
    buffer.abandon_window()
    buffer.clear()
    for t in range(8):
        buffer.add_feature(numpy.zeros(4, numpy.float32), t)
    assert buffer.open_window(8)[0] == frames_address
    buffer.abandon_window()
