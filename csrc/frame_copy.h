/*
 * Frame copies: one feature vector from RASR into a row of the frame block.
 *
 * The caller (sprintiface/_buffer.pyx) owns the storage and checks shapes and
 * dtypes; these functions trust their arguments and never allocate.
 */
#ifndef SPRINTIFACE_FRAME_COPY_H
#define SPRINTIFACE_FRAME_COPY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Copy `dim` values into `dst`; `stride` is the distance between source
 * values in bytes (4 resp. 8 for a contiguous source). float64 is narrowed
 * to float32 with C's rounding. */
void sf_copy_frame_f32(float *dst, const char *src, int64_t stride, int64_t dim);
void sf_copy_frame_f64(float *dst, const char *src, int64_t stride, int64_t dim);

/* Index of the first value of x[0..n) that is NaN or infinite, or -1. */
int64_t sf_find_non_finite(const float *x, int64_t n);

/* Next capacity (in frames) that holds `needed` frames, growing geometrically
 * from `current`, so that a long segment costs O(log T) reallocations. */
int64_t sf_grow_capacity(int64_t current, int64_t needed);

#ifdef __cplusplus
}
#endif

#endif /* SPRINTIFACE_FRAME_COPY_H */
