/*
 * A C-level stand-in for RASR's PythonFeatureScorer calls, for benchmarks and
 * tests: each call is PyObject_Call(method, (), kwargs) as RASR makes it, and
 * score rows are copied out as RASR copies them (memcpy when contiguous,
 * element by element when strided). Timing is taken inside C around the calls
 * only, so building the per-frame arrays and kwargs dicts (done by the caller
 * beforehand) is not part of the figures.
 *
 * All functions need the GIL. They return -1.0 with a Python exception set on
 * failure.
 */
#ifndef SPRINTIFACE_RASR_DRIVER_H
#define SPRINTIFACE_RASR_DRIVER_H

#include <Python.h>

/* Call `method(**kwargs)` for every dict in the list `kwargs_list`; returns
 * the mean nanoseconds per call. */
double sf_drive_calls(PyObject *method, PyObject *kwargs_list);

/* Call `get_scores(**kwargs)` for every dict in `kwargs_list` and copy the
 * returned 1-D float32 row (`classes` values) to `out + i * out_step`:
 * out_step = classes keeps every row (tests), 0 copies each into the same
 * buffer, as RASR's one-row score cache does (benchmarks); `out` NULL copies
 * nothing (the call's own cost). Returns the mean
 * nanoseconds per call (call plus copy, as RASR pays both). */
double sf_drive_get_scores(PyObject *get_scores, PyObject *kwargs_list, float *out, Py_ssize_t classes,
                           Py_ssize_t out_step);

#endif
