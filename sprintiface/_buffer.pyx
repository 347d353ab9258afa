# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, binding=False
"""The compiled part of sprintiface: RASR's per-frame calls and the score kernel.

``FrameBuffer`` owns one RASR feature buffer: the frames that came in, one
contiguous float32 (T, input_dim) block that ONNX Runtime reads in place, and
their scores, a float32 (T, num_classes) matrix that ONNX Runtime writes and
the score kernel finishes in place. It does only what must be compiled: copy a
frame in (``add_feature``, with the per-call argument checks), hand a row out
(``get_scores``), finish a window, grow and shrink. Protocol policy (when to
forgive a reset count, logging, memory policy) lives in the Python scorer
(sprintiface.feature_scorer), which holds a FrameBuffer and binds its two per-frame
methods on itself, so that RASR's per-frame calls never enter a Python frame.

``finish_scores`` runs the same kernel on any float32 (T, C) array: the one
-log transform every path uses (scorer, forwarding, get_posteriors,
estimate-prior).

RASR hands every frame over as a fresh numpy array. Those are checked through
numpy's C API (type, ndim, strides: macros, no allocation), because the
buffer protocol makes numpy allocate buffer info for every new array, which
costs about a third of a call; other buffers (memoryviews, array subclasses)
take the buffer protocol. Built against numpy 2 headers, the module runs with
numpy 1.x and 2.x alike.

Storage lives in numpy arrays (allocated on growth only, never per frame): a
view handed out earlier keeps its array alive, so growth cannot leave a view
dangling. One call at a time: a call that comes while another is inside the
buffer (another thread, while compute() runs without the GIL) is refused with
ProtocolError instead of racing it.
"""
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_STRIDES, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.exc cimport PyErr_Clear
from cpython.long cimport PyLong_CheckExact
from cpython.number cimport PyIndex_Check, PyNumber_Index
from cpython.sequence cimport PySequence_GetItem
from libc.stdint cimport int64_t

cimport numpy as cnp

from sprintiface.frame_copy cimport sf_copy_frame_f32, sf_copy_frame_f64, sf_find_non_finite, sf_grow_capacity
from sprintiface.score_kernel cimport (SF_OUTPUT_LOG_PROBS, SF_OUTPUT_LOGITS, SF_OUTPUT_PROBS, SF_OUTPUT_SCORES,
                                       SF_SCORE_FLOOR, sf_finish_scores, sf_kernel_best, sf_kernel_count, sf_kernel_name,
                                       sf_kernel_runs_here, sf_output_kind)

import numpy

from sprintiface.errors import FeatureError, ProtocolError

cnp.import_array()


cdef extern from "Python.h":
    # Declared without Cython's error check: _exact_index handles the overflow.
    Py_ssize_t _long_as_ssize "PyLong_AsSsize_t"(object value)


cdef inline Py_ssize_t _exact_index(object value):
    """``value`` (an exact int) as a Py_ssize_t; -1 for a negative one or one too big."""
    cdef Py_ssize_t index = _long_as_ssize(value)
    if index == -1:
        PyErr_Clear()  # an OverflowError, if any: the caller treats -1 as "not a valid index"
    return index

#: The output kinds the score kernel knows, in the order the docs list them
#: (the one vocabulary: sprintiface.scores re-exports it).
OUTPUT_KIND_CODES = {
    "probs": SF_OUTPUT_PROBS,
    "log_probs": SF_OUTPUT_LOG_PROBS,
    "logits": SF_OUTPUT_LOGITS,
    "scores": SF_OUTPUT_SCORES,
}

#: The score of a masked class (p = 0), -log(FLT_MIN) in float32 (csrc/score_kernel.h).
SCORE_FLOOR = numpy.float32(SF_SCORE_FLOOR)

# -- kernels ---------------------------------------------------------------------


def score_kernels():
    """Names of the score kernels this build has, widest first."""
    return tuple(sf_kernel_name(i).decode("ascii") for i in range(sf_kernel_count()))


def available_score_kernels():
    """Names of the score kernels this build has and this CPU runs, widest first."""
    return tuple(sf_kernel_name(i).decode("ascii") for i in range(sf_kernel_count()) if sf_kernel_runs_here(i))


def best_score_kernel():
    """The widest score kernel this CPU runs (what ``score_kernel:auto`` picks)."""
    return sf_kernel_name(sf_kernel_best()).decode("ascii")


cdef int _kernel_index(str name) except -1:
    cdef int index
    for index in range(sf_kernel_count()):
        if sf_kernel_name(index).decode("ascii") == name:
            if not sf_kernel_runs_here(index):
                raise ValueError(f"score kernel {name!r}: this CPU does not run it; it runs "
                                 f"{', '.join(available_score_kernels())}")
            return index
    raise ValueError(f"score kernel {name!r}: this build has {', '.join(score_kernels())}")


cdef const float *_class_vector(object values, Py_ssize_t classes, str name) except? NULL:
    # The caller holds ``values`` for the whole call, so its data outlives a nogil section.
    if values is None:
        return NULL
    if not cnp.PyArray_CheckExact(values) or (<cnp.ndarray>values).dtype != numpy.float32 or \
            cnp.PyArray_NDIM(<cnp.ndarray>values) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>values):
        raise ValueError(f"{name}: expected a contiguous float32 numpy vector, got {_describe(values)}")
    if cnp.PyArray_DIM(<cnp.ndarray>values, 0) != classes:
        raise ValueError(f"{name} has {cnp.PyArray_DIM(<cnp.ndarray>values, 0)} values, expected {classes}")
    return <const float *>cnp.PyArray_DATA(<cnp.ndarray>values)


def finish_scores(array, str kind, logit_bias=None, class_term=None, str kernel=None):
    """Turn a model's raw output into -log scores, in place (sprintiface.scores has the contract).

    ``array``: float32 (T, C), C-contiguous and writable. ``kind``: a key of
    OUTPUT_KIND_CODES. ``logit_bias`` (logits only) and ``class_term``: None or
    float32 (C,). ``kernel``: a name from available_score_kernels(), None for
    the best. Returns -1 when every score is finite, else the first frame that
    is not.
    """
    cdef float[:, ::1] scores = array
    cdef Py_ssize_t classes = scores.shape[1]
    cdef const float *bias = _class_vector(logit_bias, classes, "logit_bias")
    cdef const float *term = _class_vector(class_term, classes, "class_term")
    cdef sf_output_kind code = <sf_output_kind>OUTPUT_KIND_CODES[kind]
    cdef int index = sf_kernel_best() if kernel is None else _kernel_index(kernel)
    cdef int64_t bad
    if bias != NULL and code != SF_OUTPUT_LOGITS:
        raise ValueError(f"logit_bias is for logits, not {kind}")
    if scores.shape[0] == 0:
        return -1
    with nogil:  # the memoryview holds the array: nothing can free it meanwhile
        bad = sf_finish_scores(index, &scores[0, 0], scores.shape[0], classes, code, bias, term)
    return bad


# -- the buffer --------------------------------------------------------------------

cdef enum Busy:
    IDLE = 0
    IN_CALL = 1      # inside a per-frame call (or clear/shrink)
    IN_COMPUTE = 2   # between open_window and finish_window / abandon_window


cdef inline bint _is_native(const char *fmt, char code):
    # numpy exports native float32 as "f"; "<f", "=f", "@f" also mean native on
    # the little-endian machines RASR runs on. ">f"/"!f" are byte-swapped.
    if fmt[0] == code and fmt[1] == 0:
        return True
    return (fmt[0] == b'<' or fmt[0] == b'=' or fmt[0] == b'@') and fmt[1] == code and fmt[2] == 0


cdef str _describe(object value):
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    return type(value).__name__


cdef class FrameBuffer:
    """One RASR feature buffer: frames in, score rows out.

    ``input_dim`` features per frame, ``num_classes`` scores per frame;
    ``max_frames`` -1 grows without limit (geometrically, never per frame),
    N > 0 is RASR's chunked mode (allocated once; frame N + 1 is refused).
    ``kernel``: the score kernel's name, None for the best this CPU runs.

    Counters: ``count`` frames in the buffer, ``scored`` frames with scores
    (0 until a window is finished, and again once a frame is added), and
    ``rejected`` per-frame calls refused so far (the scorer reads it to tell a
    reset after an error from one that disagrees with the buffer).
    """

    cdef readonly Py_ssize_t input_dim
    cdef readonly Py_ssize_t num_classes
    cdef readonly Py_ssize_t max_frames
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t scored
    cdef readonly Py_ssize_t rejected
    cdef readonly str kernel
    cdef int _kernel
    cdef int _busy
    cdef object _frames        # numpy float32 (frame_capacity, input_dim)
    cdef float *_frame_data
    cdef Py_ssize_t _frame_capacity
    cdef object _scores        # numpy float32 (score_capacity, num_classes) or None
    cdef float *_score_data
    cdef Py_ssize_t _score_capacity

    def __cinit__(self, Py_ssize_t input_dim, Py_ssize_t num_classes, Py_ssize_t max_frames=-1, str kernel=None):
        if input_dim <= 0 or num_classes <= 0:
            raise ValueError(f"FrameBuffer: expected input_dim > 0 and num_classes > 0, got {input_dim}, {num_classes}")
        if max_frames == 0 or max_frames < -1:
            raise ValueError(f"FrameBuffer: expected max_frames -1 (no limit) or > 0, got {max_frames}")
        self._kernel = sf_kernel_best() if kernel is None else _kernel_index(kernel)
        self.kernel = sf_kernel_name(self._kernel).decode("ascii")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.max_frames = max_frames
        self._reserve_frames(max_frames if max_frames > 0 else 1024)

    # -- storage -------------------------------------------------------------------

    cdef int _reserve_frames(self, Py_ssize_t frames) except -1:
        cdef float[:, ::1] view
        cdef Py_ssize_t capacity
        if frames <= self._frame_capacity:
            return 0
        capacity = frames if self.max_frames > 0 else <Py_ssize_t>sf_grow_capacity(self._frame_capacity, frames)
        storage = numpy.empty((capacity, self.input_dim), dtype=numpy.float32)
        if self.count:
            storage[:self.count] = self._frames[:self.count]
        view = storage
        self._frames = storage
        self._frame_data = &view[0, 0]
        self._frame_capacity = capacity
        return 0

    cdef int _reserve_scores(self, Py_ssize_t frames) except -1:
        cdef float[:, ::1] view
        cdef Py_ssize_t capacity
        if frames <= self._score_capacity:
            return 0
        capacity = max(frames, self._frame_capacity, <Py_ssize_t>sf_grow_capacity(self._score_capacity, frames))
        self._scores = None  # free the old matrix before allocating the new one
        self._score_capacity = 0
        storage = numpy.empty((capacity, self.num_classes), dtype=numpy.float32)
        view = storage
        self._scores = storage
        self._score_data = &view[0, 0]
        self._score_capacity = capacity
        return 0

    @property
    def frame_capacity(self):
        """Frames the frame block holds before it grows."""
        return self._frame_capacity

    @property
    def score_capacity(self):
        """Frames the score matrix holds before it grows (0: none allocated)."""
        return self._score_capacity

    cdef int _enter(self, str call) except -1:
        if self._busy != IDLE:
            self.rejected += 1
            raise ProtocolError(
                f"{call}: the scorer is inside another call ({'compute()' if self._busy == IN_COMPUTE else 'a call'})"
                f", from another thread; a scorer serves one thread at a time")
        self._busy = IN_CALL
        return 0

    # -- RASR's per-frame calls ----------------------------------------------------

    def add_feature(self, feature, time):
        """Copy ``feature`` (float32 or float64, shape (input_dim,)) into row ``time``.

        ``time`` (an int) must equal the number of frames already buffered.
        Raises FeatureError for a frame or time that is not what RASR sends,
        ProtocolError for a frame beyond ``max_frames`` or a concurrent call.
        """
        self._enter("add_feature")
        try:
            if not PyLong_CheckExact(time) or _exact_index(time) != self.count:
                self._check_time(time, self.count, "add_feature")
            if self.count == self._frame_capacity:
                if self.max_frames > 0:
                    raise ProtocolError(
                        f"add_feature(time={self.count}): the feature buffer holds at most {self.max_frames} frames "
                        f"(buffer_size); RASR must call compute() and reset() first")
                self._reserve_frames(self.count + 1)
            self._push(feature)
        except BaseException:
            self.rejected += 1
            raise
        finally:
            self._busy = IDLE

    cdef int _check_time(self, object time, Py_ssize_t expected, str call) except -1:
        # Off the fast path: time is not an exact int, or not the expected one.
        if isinstance(time, (bool, numpy.bool_)) or not PyIndex_Check(time):
            raise FeatureError(f"{call}: expected time to be an int, got {type(time).__name__} {time!r}")
        if PyNumber_Index(time) != expected:
            raise FeatureError(f"{call}: expected time {expected} (frames in the buffer so far), got time {time}")
        return 0

    cdef int _push(self, object frame) except -1:
        cdef cnp.ndarray array
        cdef int type_num
        cdef float *row = self._frame_data + self.count * self.input_dim
        if not cnp.PyArray_CheckExact(frame):
            return self._push_buffer(frame)
        array = <cnp.ndarray>frame
        if cnp.PyArray_NDIM(array) != 1 or cnp.PyArray_DIM(array, 0) != self.input_dim:
            raise FeatureError(f"add_feature(time={self.count}): expected shape ({self.input_dim},) (input_dim), "
                               f"got {(<object>array).shape}")
        type_num = cnp.PyArray_TYPE(array)
        if not cnp.PyArray_ISNOTSWAPPED(array) or (type_num != cnp.NPY_FLOAT32 and type_num != cnp.NPY_FLOAT64):
            raise FeatureError(f"add_feature(time={self.count}): expected float32 (or float64) values in native "
                               f"byte order, got dtype {(<object>array).dtype}")
        if type_num == cnp.NPY_FLOAT32:
            sf_copy_frame_f32(row, <const char *>cnp.PyArray_DATA(array), cnp.PyArray_STRIDE(array, 0), self.input_dim)
        else:
            sf_copy_frame_f64(row, <const char *>cnp.PyArray_DATA(array), cnp.PyArray_STRIDE(array, 0), self.input_dim)
        self.count += 1
        self.scored = 0  # scores never describe a window that has changed since
        return 0

    cdef int _push_buffer(self, object frame) except -1:
        # Not an exact ndarray (a memoryview, an array subclass): the buffer
        # protocol, strided allowed. Anything else (a list, None) is refused:
        # RASR sends arrays, and a converted list would hide a caller's bug.
        cdef Py_buffer buf
        cdef float *row = self._frame_data + self.count * self.input_dim
        if not PyObject_CheckBuffer(frame):
            raise FeatureError(f"add_feature(time={self.count}): expected a float32 numpy array of shape "
                               f"({self.input_dim},), got {_describe(frame)}")
        PyObject_GetBuffer(frame, &buf, PyBUF_STRIDES | PyBUF_FORMAT)
        try:
            if buf.ndim != 1 or buf.shape[0] != self.input_dim:
                shape = tuple(buf.shape[i] for i in range(buf.ndim))
                raise FeatureError(f"add_feature(time={self.count}): expected shape ({self.input_dim},) "
                                   f"(input_dim), got {shape}")
            if buf.itemsize == 4 and _is_native(buf.format, b'f'):
                sf_copy_frame_f32(row, <const char *>buf.buf, buf.strides[0], self.input_dim)
            elif buf.itemsize == 8 and _is_native(buf.format, b'd'):
                sf_copy_frame_f64(row, <const char *>buf.buf, buf.strides[0], self.input_dim)
            else:
                raise FeatureError(f"add_feature(time={self.count}): expected float32 (or float64) values in native "
                                   f"byte order, got buffer format {buf.format.decode('ascii', 'replace')!r}")
        finally:
            PyBuffer_Release(&buf)
        self.count += 1
        self.scored = 0
        return 0

    def get_scores(self, time):
        """The -log scores of frame ``time``: a float32 (num_classes,) C-contiguous
        view of the score matrix (no copy), valid until the next window is opened
        or the buffer is cleared."""
        cdef Py_ssize_t index
        if self._busy != IDLE:
            self.rejected += 1
            raise ProtocolError("get_scores: the scorer is inside compute() in another thread; "
                                "a scorer serves one thread at a time")
        if PyLong_CheckExact(time):
            index = _exact_index(time)
            if 0 <= index < self.scored:
                return PySequence_GetItem(self._scores, index)
        elif not isinstance(time, (bool, numpy.bool_)) and PyIndex_Check(time):  # numpy integers, int subclasses
            value = PyNumber_Index(time)  # a Python int of any size
            if 0 <= value < self.scored:
                return PySequence_GetItem(self._scores, <Py_ssize_t>value)
        self.rejected += 1
        if isinstance(time, (bool, numpy.bool_)) or not PyIndex_Check(time):
            raise ProtocolError(f"get_scores: expected time to be an int, got {type(time).__name__} {time!r}")
        if self.scored == 0:
            raise ProtocolError(f"get_scores(time={time}): no scores: compute() has not run on the "
                                f"{self.count} buffered frames")
        raise ProtocolError(f"get_scores: time {time} is outside the computed window [0, {self.scored})")

    # -- once per buffer -------------------------------------------------------------

    def frames(self):
        """The buffered frames, a float32 (count, input_dim) C-contiguous view (no copy).

        The view stays readable after growth but shows the old storage then; its
        rows are overwritten by frames added after the next clear().
        """
        return self._frames[:self.count]

    def find_non_finite(self):
        """``(frame, feature index)`` of the first NaN or infinite feature value, or None."""
        cdef int64_t at = sf_find_non_finite(self._frame_data, self.count * self.input_dim)
        return None if at < 0 else divmod(at, self.input_dim)

    def open_window(self, frames):
        """Start scoring the ``frames`` buffered frames: make room for their scores and
        return ``(frames address, scores address)``, float32 row-major (frames,
        input_dim) and (frames, num_classes), for the model to read and write in place.

        ``frames`` (an int) must be the buffer's count (ProtocolError otherwise): checked here,
        under the same guard, so no call from another thread can change the count
        between the check and the run. Until finish_window() or abandon_window(),
        every other call is refused, so neither block can move or be freed while the
        model runs without the GIL.
        """
        self._enter("compute")
        try:
            if frames != self.count or frames <= 0:
                raise ProtocolError(f"compute(num_frames={frames}): the buffer holds {self.count} frames"
                                    + (f"; expected num_frames == {self.count}" if self.count else
                                       ": add_feature() comes first"))
            self.scored = 0
            self._reserve_scores(self.count)
        except BaseException:
            self._busy = IDLE
            raise
        self._busy = IN_COMPUTE
        return <size_t>self._frame_data, <size_t>self._score_data

    def finish_window(self, str kind, logit_bias=None, class_term=None):
        """Finish the open window's raw model output into -log scores in place (see
        finish_scores) and end the window. Returns -1 when all scores are finite
        (get_scores then serves them), else the first frame that is not."""
        cdef const float *bias
        cdef const float *term
        cdef sf_output_kind code
        cdef int64_t bad
        if self._busy != IN_COMPUTE:
            raise ProtocolError("finish_window() without open_window()")
        try:
            bias = _class_vector(logit_bias, self.num_classes, "logit_bias")
            term = _class_vector(class_term, self.num_classes, "class_term")
            code = <sf_output_kind>OUTPUT_KIND_CODES[kind]
            if bias != NULL and code != SF_OUTPUT_LOGITS:
                raise ValueError(f"logit_bias is for logits, not {kind}")
            with nogil:
                bad = sf_finish_scores(self._kernel, self._score_data, self.count, self.num_classes, code, bias, term)
            self.scored = self.count if bad < 0 else 0
        finally:
            self._busy = IDLE
        return bad

    def abandon_window(self):
        """End the open window without scores (the model run failed)."""
        if self._busy == IN_COMPUTE:
            self.scored = 0
            self._busy = IDLE

    def clear(self):
        """Drop frames and scores; storage is kept."""
        self._enter("reset")
        self.count = 0
        self.scored = 0
        self._busy = IDLE

    def shrink(self, Py_ssize_t frames):
        """Give back storage beyond ``frames`` rows (frames and scores), keeping
        what is buffered. A no-op where storage is already that small."""
        cdef float[:, ::1] view
        cdef Py_ssize_t keep = max(frames, self.count, 1)
        self._enter("shrink")
        try:
            if self.max_frames < 0 and self._frame_capacity > keep:
                storage = numpy.empty((keep, self.input_dim), dtype=numpy.float32)
                storage[:self.count] = self._frames[:self.count]
                view = storage
                self._frames = storage
                self._frame_data = &view[0, 0]
                self._frame_capacity = keep
            if self._score_capacity > keep:
                self._scores = None
                self._score_capacity = 0
                self.scored = 0
        finally:
            self._busy = IDLE

    def __len__(self):
        return self.count
