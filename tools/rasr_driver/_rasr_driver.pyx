# cython: language_level=3
"""Drive a scorer from C exactly as RASR calls it (csrc/rasr_driver.c), for
benchmarks and protocol tests. Timings exclude making the per-frame arrays
and kwargs dicts, which happens here, before the C loop."""
import numpy


cdef extern from "rasr_driver.h":
    double sf_drive_calls(object method, object kwargs_list) except? -1.0
    double sf_drive_get_scores(object get_scores, object kwargs_list, float *out,
                               Py_ssize_t classes, Py_ssize_t out_step) except? -1.0


def drive_add_feature(scorer, frames):
    """``scorer.add_feature(feature=<fresh float32 row>, time=t)`` for each row of
    ``frames`` (T, F); returns nanoseconds per call."""
    calls = [{"feature": numpy.array(row, dtype=numpy.float32), "time": t} for t, row in enumerate(frames)]
    return sf_drive_calls(scorer.add_feature, calls)


def drive_compute(scorer, num_frames):
    """``scorer.compute(num_frames=T)`` once; returns nanoseconds."""
    return sf_drive_calls(scorer.compute, [{"num_frames": num_frames}])


def drive_get_scores(scorer, num_frames, classes, keep=True, copy=True):
    """``scorer.get_scores(time=t)`` for t < T, each row copied out as RASR does;
    returns ``(nanoseconds per call, scores)``. With ``keep`` the scores are
    (T, classes) float32; without, every row is copied into one (1, classes)
    buffer, as RASR's one-row cache does (no page faults in the figures).
    Without ``copy`` nothing is copied: the figure is the call alone."""
    cdef float[:, ::1] out
    scores = numpy.zeros((num_frames if keep else 1, classes), dtype=numpy.float32)
    scores.fill(1.0)  # touch every page before timing
    out = scores
    calls = [{"time": t} for t in range(num_frames)]
    if num_frames == 0:
        return 0.0, scores
    cost = sf_drive_get_scores(scorer.get_scores, calls, &out[0, 0] if copy else NULL, classes,
                               classes if keep else 0)
    return cost, scores


def drive_reset(scorer, num_frames):
    """``scorer.reset(num_frames=T)``; returns nanoseconds."""
    return sf_drive_calls(scorer.reset, [{"num_frames": num_frames}])


def drive_segment(scorer, frames, classes):
    """One whole buffer as RASR runs it: add_feature per frame, compute,
    get_scores per frame, reset. Returns ``(nanoseconds by phase, scores)``."""
    num_frames = len(frames)
    add = drive_add_feature(scorer, frames) * num_frames
    compute = drive_compute(scorer, num_frames)
    per_row, scores = drive_get_scores(scorer, num_frames, classes, keep=True)
    reset = drive_reset(scorer, num_frames)
    return {"add_feature": add, "compute": compute, "get_scores": per_row * num_frames, "reset": reset}, scores
