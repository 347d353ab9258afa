/* sprintiface C core; contracts in sprintiface.h. */
#include "sprintiface.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

void sf_copy_frame_f32(float *dst, const float *src, int64_t dim)
{
    memcpy(dst, src, (size_t)dim * sizeof(float));
}

void sf_copy_frame_f64(float *dst, const double *src, int64_t dim)
{
    for (int64_t i = 0; i < dim; ++i)
        dst[i] = (float)src[i];
}

int64_t sf_grow_capacity(int64_t current, int64_t needed)
{
    int64_t capacity = current > 0 ? current : 256;
    while (capacity < needed)
        capacity += capacity / 2 > 256 ? capacity / 2 : 256;
    return capacity;
}

/* Probabilities are floored at the smallest normal float: a softmax that
 * underflowed to 0 in float32 gets score ~87.3 ("impossible") instead of inf,
 * which would poison RASR's pruning arithmetic. */
static void sf_row_neg_log(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
        x[i] = -logf(x[i] < FLT_MIN ? FLT_MIN : x[i]);
}

/* The portable kernel: 16-byte vectors (SSE2 on x86-64, NEON on aarch64). */
#define SF_BYTES 16
#define SF_NAME(x) sf_baseline_##x
#include "score_kernel.inc"
#undef SF_NAME
#undef SF_BYTES

/*
 * Wheels are built for the x86-64 baseline. The score loop is the one place
 * where wider vectors pay (T x C exponentials per segment), so with GCC it is
 * compiled a second time for AVX2+FMA and chosen at run time on CPUs that have
 * it. Define SPRINTIFACE_NO_AVX2 to build the portable kernel only.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SPRINTIFACE_NO_AVX2)
#define SF_HAVE_AVX2 1 /* and AVX-512: both need GCC on x86-64 */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define SF_BYTES 32
#define SF_NAME(x) sf_avx2_##x
#include "score_kernel.inc"
#undef SF_NAME
#undef SF_BYTES
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define SF_BYTES 64
#define SF_NAME(x) sf_avx512_##x
#include "score_kernel.inc"
#undef SF_NAME
#undef SF_BYTES
#pragma GCC pop_options
#endif

typedef int64_t (*sf_kernel_fn)(float *, int64_t, int64_t, sf_output_kind, const float *, const float *);

static const struct {
    const char *name;
    sf_kernel_fn run;
} sf_kernels[] = {
#ifdef SF_HAVE_AVX2
    {"avx512", sf_avx512_finish_scores},
    {"avx2", sf_avx2_finish_scores},
#endif
    {"baseline", sf_baseline_finish_scores},
};
#define SF_NUM_KERNELS ((int)(sizeof sf_kernels / sizeof sf_kernels[0]))

static int sf_kernel_supported(int index)
{
#ifdef SF_HAVE_AVX2
    if (sf_kernels[index].run == sf_avx512_finish_scores)
        return __builtin_cpu_supports("avx512f");
    if (sf_kernels[index].run == sf_avx2_finish_scores)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

/* -1: not chosen yet. Every thread that races here writes the same value. */
static int sf_kernel_index = -1;

static int sf_current_kernel(void)
{
    if (sf_kernel_index < 0) {
        int index = 0;
        while (!sf_kernel_supported(index))
            ++index;
        sf_kernel_index = index;
    }
    return sf_kernel_index;
}

const char *sf_score_kernel(void)
{
    return sf_kernels[sf_current_kernel()].name;
}

int sf_use_score_kernel(const char *name)
{
    for (int index = 0; index < SF_NUM_KERNELS; ++index)
        if (strcmp(sf_kernels[index].name, name) == 0) {
            if (!sf_kernel_supported(index))
                return -1;
            sf_kernel_index = index;
            return 0;
        }
    return -1;
}

int64_t sf_finish_scores(float *scores, int64_t frames, int64_t classes, sf_output_kind kind,
                         const float *logit_bias, const float *class_term)
{
    return sf_kernels[sf_current_kernel()].run(scores, frames, classes, kind, logit_bias, class_term);
}
