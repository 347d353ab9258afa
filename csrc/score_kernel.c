/* The score kernel, once per instruction set; contracts in score_kernel.h. */
#include "score_kernel.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Probabilities are floored at the smallest normal float: a softmax that gives 0 (a
 * masked class, or one that underflowed in float32) gets SF_SCORE_FLOOR ("impossible",
 * -logf(FLT_MIN)) instead of inf, which would poison RASR's pruning arithmetic. A NaN
 * stays NaN. Returns 1 when some class is possible (p >= FLT_MIN), else 0. */
static int sf_row_neg_log(float *x, int64_t n)
{
    int possible = 0;
    for (int64_t i = 0; i < n; ++i) {
        possible |= x[i] >= FLT_MIN;
        x[i] = x[i] < FLT_MIN ? SF_SCORE_FLOOR : -logf(x[i]);
    }
    return possible;
}

/*
 * SF_MAX(a, b), SF_MIN(a, b): lane-wise maximum and minimum in one instruction where
 * the instruction set has one; b is returned where either lane is NaN (x86's rule;
 * NEON's fmax and fmin return the NaN), so SF_MAX(constant, x) and SF_MIN(constant, x)
 * let a NaN x through.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SF_MAX16(a, b) ((__typeof__(a))_mm_max_ps((__m128)(a), (__m128)(b)))
#define SF_MIN16(a, b) ((__typeof__(a))_mm_min_ps((__m128)(a), (__m128)(b)))
#elif defined(__aarch64__)
#include <arm_neon.h>
#define SF_MAX16(a, b) ((__typeof__(a))vmaxq_f32((float32x4_t)(a), (float32x4_t)(b)))
#define SF_MIN16(a, b) ((__typeof__(a))vminq_f32((float32x4_t)(a), (float32x4_t)(b)))
#else
#define SF_MAX16(a, b) ((a) > (b) ? (a) : (b))
#define SF_MIN16(a, b) ((a) < (b) ? (a) : (b))
#endif

/* The portable kernel: 16-byte vectors (SSE2 on x86-64, NEON on aarch64). */
#define SF_BYTES 16
#define SF_NAME(x) sf_baseline_##x
#define SF_MAX SF_MAX16
#define SF_MIN SF_MIN16
#include "score_kernel_body.inc"
#undef SF_MIN
#undef SF_MAX
#undef SF_NAME
#undef SF_BYTES

/*
 * Wheels are built for the x86-64 baseline. The score loop is the one place
 * where wider vectors pay (T x C exponentials per segment), so it is compiled
 * again for AVX2+FMA and for AVX-512 and chosen at run time on CPUs that have
 * them. GCC and clang take the instruction set per region of functions, each
 * in its own way. Define SPRINTIFACE_NO_AVX2 to build the portable kernel only.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(SPRINTIFACE_NO_AVX2)
#define SF_HAVE_AVX2 1 /* and AVX-512 */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define SF_BYTES 32
#define SF_NAME(x) sf_avx2_##x
#define SF_MAX(a, b) ((__typeof__(a))_mm256_max_ps((__m256)(a), (__m256)(b)))
#define SF_MIN(a, b) ((__typeof__(a))_mm256_min_ps((__m256)(a), (__m256)(b)))
#include "score_kernel_body.inc"
#undef SF_MIN
#undef SF_MAX
#undef SF_NAME
#undef SF_BYTES
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
#define SF_BYTES 64
#define SF_NAME(x) sf_avx512_##x
#define SF_MAX(a, b) ((__typeof__(a))_mm512_max_ps((__m512)(a), (__m512)(b)))
#define SF_MIN(a, b) ((__typeof__(a))_mm512_min_ps((__m512)(a), (__m512)(b)))
#include "score_kernel_body.inc"
#undef SF_MIN
#undef SF_MAX
#undef SF_NAME
#undef SF_BYTES
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
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

int sf_kernel_count(void)
{
    return (int)(sizeof sf_kernels / sizeof sf_kernels[0]);
}

const char *sf_kernel_name(int kernel)
{
    return sf_kernels[kernel].name;
}

int sf_kernel_runs_here(int kernel)
{
#ifdef SF_HAVE_AVX2
    if (sf_kernels[kernel].run == sf_avx512_finish_scores)
        return __builtin_cpu_supports("avx512f") != 0;
    if (sf_kernels[kernel].run == sf_avx2_finish_scores)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    (void)kernel;
    return 1;
}

int sf_kernel_best(void)
{
    int kernel = 0;
    while (!sf_kernel_runs_here(kernel))
        ++kernel;
    return kernel; /* the baseline, last, always runs */
}

int64_t sf_finish_scores(int kernel, float *scores, int64_t frames, int64_t classes, sf_output_kind kind,
                         const float *logit_bias, const float *class_term)
{
    return sf_kernels[kernel].run(scores, frames, classes, kind, logit_bias, class_term);
}
