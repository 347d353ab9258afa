# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The buffers on RASR's per-frame hot path, wrapping the C core in csrc/.

``FrameBuffer`` holds the frames of the current buffer as one contiguous
float32 (T, dim) block that ONNX Runtime reads in place. ``ScorerBuffers`` is
the base class of the feature scorer: it owns a FrameBuffer and the (T, C)
score matrix and implements the two calls RASR makes per frame,
``add_feature`` and ``get_scores``, so that those calls never enter a Python
frame. Validation is done here, at the boundary, and raises the exception types
of :mod:`sprintiface.errors`; everything else is policy in Python.

RASR hands every frame over as a fresh numpy array. Those are checked through
numpy's C API (type, ndim, contiguity: macros, no allocation), because the
buffer protocol makes numpy allocate buffer info for every new array, which
costs about a third of a call; anything that is not an ndarray takes the
buffer protocol. Built against numpy 2 headers, the module runs with numpy 1.x
and 2.x alike.

Storage lives in numpy arrays (allocated at growth only, never per frame): a
view handed out earlier keeps its array alive, so growth cannot leave a view
dangling.
"""
from cpython.buffer cimport (PyBUF_FORMAT, PyBUF_ND, PyBuffer_Release, PyObject_CheckBuffer,
                             PyObject_GetBuffer)
from cpython.sequence cimport PySequence_GetItem
from libc.stdint cimport int64_t

cimport numpy as cnp

from sprintiface._core cimport (SF_OUTPUT_LOGITS, sf_copy_frame_f32, sf_copy_frame_f64, sf_finish_scores,
                                sf_grow_capacity, sf_output_kind, sf_score_kernel,
                                sf_use_score_kernel)

import numpy

from sprintiface.errors import FeatureError, ProtocolError, ScoreError

cnp.import_array()

OUTPUT_KINDS = {"logits": 0, "probs": 1, "log_probs": 2, "scores": 3}


SCORE_KERNELS = ("avx512", "avx2", "baseline")


def score_kernel():
    """The instruction set the score loop runs with: avx512, avx2 or baseline."""
    return sf_score_kernel().decode("ascii")


def use_score_kernel(name):
    """Run the score loop with kernel ``name`` from now on (tests, benchmarks)."""
    if name not in SCORE_KERNELS or sf_use_score_kernel(name.encode("ascii")) != 0:
        raise ValueError(f"score kernel {name!r} is not available here; this build and CPU have "
                         f"{', '.join(available_score_kernels())}")


def available_score_kernels():
    """Kernels this build has and this CPU runs."""
    current = score_kernel()
    names = [name for name in SCORE_KERNELS if sf_use_score_kernel(name.encode("ascii")) == 0]
    sf_use_score_kernel(current.encode("ascii"))
    return tuple(names)


cdef inline bint _is_native(const char *fmt, char code):
    # numpy exports native float32 as "f"; "<f", "=f", "@f" also mean native on
    # the little-endian machines RASR runs on. ">f"/"!f" are byte-swapped.
    if fmt[0] == code and fmt[1] == 0:
        return True
    return (fmt[0] == b'<' or fmt[0] == b'=' or fmt[0] == b'@') and fmt[1] == code and fmt[2] == 0


cdef class FrameBuffer:
    """Frames of one RASR buffer: float32, shape (capacity, dim), rows [0, count) valid.

    Grows geometrically (never per frame) when ``max_frames`` is -1; with a
    finite ``max_frames`` (RASR's chunked mode) it is allocated once and a frame
    beyond the limit is a ProtocolError.
    """

    cdef readonly Py_ssize_t dim
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t max_frames
    cdef object _storage
    cdef float *_data

    def __cinit__(self, Py_ssize_t dim, Py_ssize_t max_frames=-1, Py_ssize_t capacity=0):
        if dim <= 0:
            raise ValueError(f"FrameBuffer: dim must be > 0, got {dim}")
        if max_frames == 0 or max_frames < -1:
            raise ValueError(f"FrameBuffer: max_frames must be -1 (no limit) or > 0, got {max_frames}")
        self.dim = dim
        self.max_frames = max_frames
        self.count = 0
        self.capacity = 0
        self._storage = None
        if max_frames > 0:
            capacity = max_frames
        self._reserve(capacity if capacity > 0 else 1024)

    cdef int _reserve(self, Py_ssize_t frames) except -1:
        cdef Py_ssize_t capacity
        cdef float[:, ::1] view
        if frames <= self.capacity:
            return 0
        capacity = frames if self.max_frames > 0 else <Py_ssize_t>sf_grow_capacity(self.capacity, frames)
        storage = numpy.empty((capacity, self.dim), dtype=numpy.float32)
        if self.count:
            storage[:self.count] = self._storage[:self.count]
        view = storage
        self._storage = storage
        self._data = &view[0, 0]
        self.capacity = capacity
        return 0

    cdef int push(self, object frame) except -1:
        """Copy `frame` (1-D, `dim` values, float32 or float64) into row `count`."""
        cdef cnp.ndarray array
        cdef int type_num
        if self.count == self.capacity:
            if self.max_frames > 0:
                raise ProtocolError(
                    f"frame {self.count} does not fit: the feature buffer holds at most "
                    f"{self.max_frames} frames (buffer_size); RASR must call reset() first")
            self._reserve(self.count + 1)
        if not cnp.PyArray_CheckExact(frame):
            return self._push_buffer(frame)
        array = <cnp.ndarray>frame
        if cnp.PyArray_NDIM(array) != 1 or cnp.PyArray_DIM(array, 0) != self.dim:
            raise FeatureError(
                f"feature at time {self.count}: expected shape ({self.dim},) (input_dim), got {(<object>array).shape}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(array) or not cnp.PyArray_ISNOTSWAPPED(array):
            return self._push_converted(frame)
        type_num = cnp.PyArray_TYPE(array)
        if type_num == cnp.NPY_FLOAT32:
            sf_copy_frame_f32(self._data + self.count * self.dim, <const float *>cnp.PyArray_DATA(array), self.dim)
        elif type_num == cnp.NPY_FLOAT64:
            sf_copy_frame_f64(self._data + self.count * self.dim, <const double *>cnp.PyArray_DATA(array), self.dim)
        else:
            raise FeatureError(
                f"feature at time {self.count}: expected float32 (or float64) values, got dtype {(<object>array).dtype}")
        self.count += 1
        return 0

    cdef int _push_buffer(self, object frame) except -1:
        # Not an exact ndarray (a memoryview, an array subclass): go through the
        # buffer protocol, or convert what is not a buffer at all.
        cdef Py_buffer buf
        if not PyObject_CheckBuffer(frame):
            return self._push_converted(frame)
        try:
            PyObject_GetBuffer(frame, &buf, PyBUF_ND | PyBUF_FORMAT)
        except BufferError:  # a strided buffer
            return self._push_converted(frame)
        try:
            if buf.ndim != 1 or buf.shape[0] != self.dim:
                shape = tuple(buf.shape[i] for i in range(buf.ndim))
                raise FeatureError(
                    f"feature at time {self.count}: expected shape ({self.dim},) (input_dim), got {shape}")
            if buf.itemsize == 4 and _is_native(buf.format, b'f'):
                sf_copy_frame_f32(self._data + self.count * self.dim, <const float *>buf.buf, self.dim)
            elif buf.itemsize == 8 and _is_native(buf.format, b'd'):
                sf_copy_frame_f64(self._data + self.count * self.dim, <const double *>buf.buf, self.dim)
            else:
                raise FeatureError(
                    f"feature at time {self.count}: expected float32 (or float64) values, "
                    f"got buffer format {buf.format.decode('ascii', 'replace')!r}")
        finally:
            PyBuffer_Release(&buf)
        self.count += 1
        return 0

    cdef int _push_converted(self, object frame) except -1:
        # Slow path, off RASR's normal route: a strided or byte-swapped array, or
        # something that is not a buffer at all (a list). Convert, then copy.
        if isinstance(frame, numpy.ndarray) and frame.dtype not in (numpy.float32, numpy.float64):
            raise FeatureError(
                f"feature at time {self.count}: expected float32 (or float64) values, got dtype {frame.dtype}")
        try:
            array = numpy.ascontiguousarray(frame, dtype=numpy.float32)
        except (TypeError, ValueError) as error:
            raise FeatureError(
                f"feature at time {self.count}: expected a float32 numpy array of shape "
                f"({self.dim},), got {type(frame).__name__} ({error})") from None
        if array.ndim != 1:
            raise FeatureError(
                f"feature at time {self.count}: expected shape ({self.dim},) (input_dim), got {(<object>array).shape}")
        return self.push(array)

    def append(self, frame):
        """Append one frame (1-D, ``dim`` float32/float64 values)."""
        self.push(frame)

    def clear(self):
        """Drop all frames; capacity is kept."""
        self.count = 0

    def window(self):
        """The valid frames as a float32 (count, dim) C-contiguous view (no copy).

        The view stays readable after growth, but shows the old storage then;
        its values are overwritten by frames added after the next clear().
        """
        return self._storage[:self.count]

    @property
    def address(self):
        """Address of row 0 (for binding the block to ONNX Runtime in place)."""
        return <size_t>self._data

    def __len__(self):
        return self.count


cdef class ScorerBuffers:
    """Base of the RASR feature scorer: frames in, score rows out.

    Subclasses (sprintiface.scorer) run the model between the two: they write
    the raw model output into ``score_window(T)`` and call ``finish_scores``.
    """

    cdef readonly FrameBuffer frames
    cdef readonly Py_ssize_t num_classes
    cdef readonly Py_ssize_t scored_frames
    # Set when a hot-path call raised: reset() then clears without checking the
    # frame count, so the next segment is served normally.
    cdef public bint failed
    cdef object _scores
    cdef float *_score_data
    cdef Py_ssize_t _score_capacity

    def __cinit__(self, *args, **kwargs):
        self.frames = None
        self.num_classes = 0
        self.scored_frames = 0
        self.failed = False
        self._scores = None
        self._score_capacity = 0

    def _init_buffers(self, Py_ssize_t input_dim, Py_ssize_t num_classes, Py_ssize_t max_frames=-1):
        if num_classes <= 0:
            raise ValueError(f"num_classes must be > 0, got {num_classes}")
        self.frames = FrameBuffer(input_dim, max_frames)
        self.num_classes = num_classes
        self._scores = None
        self._score_capacity = 0
        self.scored_frames = 0

    def add_feature(self, feature, Py_ssize_t time):
        """Called by RASR per frame: copy ``feature`` (float32 (input_dim,)) into the buffer.

        ``time`` must equal the number of frames already in the buffer.
        """
        cdef FrameBuffer frames = self.frames
        if frames is None:
            raise ProtocolError("add_feature() before init(input_dim, output_dim)")
        if time != frames.count:
            self.failed = True
            raise FeatureError(
                f"add_feature: expected time {frames.count} (frames in the buffer so far), got time {time}")
        if self.scored_frames:
            # RASR resets before adding to a consumed buffer; scores of a stale
            # window must never be served for new frames.
            self.scored_frames = 0
        try:
            frames.push(feature)
        except BaseException:
            self.failed = True
            raise

    def get_scores(self, Py_ssize_t time):
        """Called by RASR: the -log scores of frame ``time``, float32 (num_classes,).

        A C-contiguous view of one row of the score matrix (no copy), valid until
        the next compute() or reset().
        """
        if time < 0 or time >= self.scored_frames:
            self.failed = True
            if self.scored_frames == 0:
                raise ProtocolError(
                    f"get_scores(time={time}): no scores: compute() has not run for the "
                    f"{self.frames.count if self.frames is not None else 0} buffered frames")
            raise ProtocolError(
                f"get_scores: time {time} is outside the computed window [0, {self.scored_frames})")
        return PySequence_GetItem(self._scores, time)

    def score_window(self, Py_ssize_t frames):
        """A float32 (frames, num_classes) C-contiguous view to write model output into.

        Grows the score storage geometrically; invalidates earlier scores.
        """
        cdef float[:, ::1] view
        self.scored_frames = 0
        if frames > self._score_capacity:
            capacity = max(frames, self.frames.capacity, <Py_ssize_t>sf_grow_capacity(self._score_capacity, frames))
            self._scores = None  # free the old block before allocating the new one
            storage = numpy.empty((capacity, self.num_classes), dtype=numpy.float32)
            view = storage
            self._scores = storage
            self._score_data = &view[0, 0]
            self._score_capacity = capacity
        return self._scores[:frames]

    @property
    def scores_address(self):
        """Address of the score storage's row 0 (valid until the next score_window)."""
        return <size_t>self._score_data

    def finish_scores(self, Py_ssize_t frames, str kind, logit_bias=None, class_term=None):
        """Turn the raw output in ``score_window(frames)`` into -log scores, in place.

        ``kind``: one of ``OUTPUT_KINDS``. ``logit_bias`` (logits only) and
        ``class_term``: None or float32 (num_classes,); see sf_finish_scores in
        csrc/sprintiface.h. Returns -1 when all scores are finite (they are then
        served by get_scores), else the first frame that is not.
        """
        cdef const float *bias_data = self._class_vector(logit_bias, "logit_bias")
        cdef const float *term_data = self._class_vector(class_term, "class_term")
        cdef sf_output_kind c_kind = <sf_output_kind>OUTPUT_KINDS[kind]
        cdef int64_t bad
        if frames > self._score_capacity:
            raise ValueError(f"finish_scores: {frames} frames, but score_window holds {self._score_capacity}")
        if bias_data != NULL and c_kind != SF_OUTPUT_LOGITS:
            raise ValueError(f"finish_scores: logit_bias is for logits, not {kind}")
        with nogil:
            bad = sf_finish_scores(self._score_data, frames, self.num_classes, c_kind, bias_data, term_data)
        self.scored_frames = frames if bad < 0 else 0
        return bad

    cdef const float *_class_vector(self, values, str name) except? NULL:
        cdef const float[::1] view
        if values is None:
            return NULL
        view = values
        if view.shape[0] != self.num_classes:
            raise ValueError(f"{name} has {view.shape[0]} values, expected {self.num_classes}")
        return &view[0]

    def clear_buffers(self):
        """Drop frames and scores; capacities are kept."""
        if self.frames is not None:
            self.frames.clear()
        self.scored_frames = 0
        self.failed = False
