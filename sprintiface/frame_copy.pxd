# Declarations of csrc/frame_copy.h; the contracts are in that header.
from libc.stdint cimport int64_t

cdef extern from "frame_copy.h" nogil:
    void sf_copy_frame_f32(float *dst, const char *src, int64_t stride, int64_t dim)
    void sf_copy_frame_f64(float *dst, const char *src, int64_t stride, int64_t dim)
    int64_t sf_find_non_finite(const float *x, int64_t n)
    int64_t sf_grow_capacity(int64_t current, int64_t needed)
