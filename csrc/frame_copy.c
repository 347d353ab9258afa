/* Frame copies; contracts in frame_copy.h. */
#include "frame_copy.h"

#include <string.h>

void sf_copy_frame_f32(float *dst, const char *src, int64_t stride, int64_t dim)
{
    if (stride == (int64_t)sizeof(float)) {
        memcpy(dst, src, (size_t)dim * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < dim; ++i)
        memcpy(dst + i, src + i * stride, sizeof(float));
}

void sf_copy_frame_f64(float *dst, const char *src, int64_t stride, int64_t dim)
{
    for (int64_t i = 0; i < dim; ++i) {
        double value;
        memcpy(&value, src + i * stride, sizeof value);
        dst[i] = (float)value;
    }
}

int64_t sf_find_non_finite(const float *x, int64_t n)
{
    /* v - v is 0 for a finite v and NaN otherwise; summing blocks of them keeps
     * the common case (all finite) a branch-free pass the compiler vectorises. */
    const int64_t block = 1024;
    for (int64_t start = 0; start < n; start += block) {
        const int64_t stop = start + block < n ? start + block : n;
        float check = 0.0f;
        for (int64_t i = start; i < stop; ++i)
            check += x[i] - x[i];
        if (check != check) {
            for (int64_t i = start; i < stop; ++i)
                if (x[i] - x[i] != 0.0f)
                    return i;
        }
    }
    return -1;
}

int64_t sf_grow_capacity(int64_t current, int64_t needed)
{
    int64_t capacity = current > 0 ? current : 256;
    while (capacity < needed)
        capacity += capacity / 2 > 256 ? capacity / 2 : 256;
    return capacity;
}
