/* sprintiface C core; contracts in sprintiface.h. */
#include "sprintiface.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/*
 * Wheels are built for the x86-64 baseline (SSE2). The score loop is the one
 * place where wider vectors pay (T x C exponentials per segment), so on x86-64
 * with GCC it is compiled twice and the loader picks the AVX2 copy on CPUs that
 * have it. Define SPRINTIFACE_NO_CLONES to build a single portable copy.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(SPRINTIFACE_NO_CLONES)
#define SF_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define SF_CLONES
#endif

/* Lanes the reductions are split into, so that GCC keeps them in vector
 * registers without -ffast-math (which a shared library must not impose). */
#define SF_LANES 16

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

/*
 * exp(x) for x <= 0 (x is a logit minus the row maximum), branch-free so that
 * it vectorises: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6
 * polynomial (relative error about 2e-7), 2^n assembled in the exponent bits.
 * Below -87 the result is flushed to 0, which a row sum cannot notice.
 */
static inline float sf_exp_nonpositive(float x)
{
    const float below = x < -87.0f ? 0.0f : 1.0f;
    x = x < -87.0f ? -87.0f : x;
    /* Adding and subtracting 1.5 * 2^23 rounds to the nearest integer. */
    const float shifter = 12582912.0f;
    const float n = (x * 1.44269504088896341f + shifter) - shifter;
    const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale * below;
}

static float sf_row_max(const float *x, int64_t n)
{
    float lane[SF_LANES];
    int64_t i = 0;
    float m = -INFINITY;
    if (n >= SF_LANES) {
        for (int j = 0; j < SF_LANES; ++j)
            lane[j] = x[j];
        for (i = SF_LANES; i + SF_LANES <= n; i += SF_LANES)
            for (int j = 0; j < SF_LANES; ++j)
                lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
        for (int j = 0; j < SF_LANES; ++j)
            m = lane[j] > m ? lane[j] : m;
    }
    for (; i < n; ++i)
        m = x[i] > m ? x[i] : m;
    return m;
}

static float sf_row_sum_exp(const float *x, int64_t n, float shift)
{
    float lane[SF_LANES] = {0};
    int64_t i = 0;
    for (; i + SF_LANES <= n; i += SF_LANES)
        for (int j = 0; j < SF_LANES; ++j)
            lane[j] += sf_exp_nonpositive(x[i + j] - shift);
    float s = 0.0f;
    for (int j = 0; j < SF_LANES; ++j)
        s += lane[j];
    for (; i < n; ++i)
        s += sf_exp_nonpositive(x[i] - shift);
    return s;
}

/* Write out[c] = offset + sign * x[c] (+ prior[c]) and return a value that is
 * NaN exactly when some out[c] is not finite (inf - inf and NaN propagate). */
static float sf_row_affine(float *x, int64_t n, float offset, float sign,
                           const float *prior)
{
    float lane[SF_LANES] = {0};
    int64_t i = 0;
    if (prior) {
        for (; i + SF_LANES <= n; i += SF_LANES)
            for (int j = 0; j < SF_LANES; ++j) {
                const float s = offset + sign * x[i + j] + prior[i + j];
                x[i + j] = s;
                lane[j] += s - s;
            }
        for (; i < n; ++i) {
            const float s = offset + sign * x[i] + prior[i];
            x[i] = s;
            lane[0] += s - s;
        }
    } else {
        for (; i + SF_LANES <= n; i += SF_LANES)
            for (int j = 0; j < SF_LANES; ++j) {
                const float s = offset + sign * x[i + j];
                x[i + j] = s;
                lane[j] += s - s;
            }
        for (; i < n; ++i) {
            const float s = offset + sign * x[i];
            x[i] = s;
            lane[0] += s - s;
        }
    }
    float check = 0.0f;
    for (int j = 0; j < SF_LANES; ++j)
        check += lane[j];
    return check;
}

/* Probabilities are floored at the smallest normal float: a softmax that
 * underflowed to 0 in float32 gets score ~87.3 ("impossible") instead of inf,
 * which would poison RASR's pruning arithmetic. */
static void sf_row_neg_log(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
        x[i] = -logf(x[i] < FLT_MIN ? FLT_MIN : x[i]);
}

SF_CLONES
int64_t sf_finish_scores(float *scores, int64_t frames, int64_t classes,
                         sf_output_kind kind, const float *prior_term)
{
    for (int64_t t = 0; t < frames; ++t) {
        float *row = scores + t * classes;
        float check;
        switch (kind) {
        case SF_OUTPUT_LOGITS: {
            const float m = sf_row_max(row, classes);
            const float lse = m + logf(sf_row_sum_exp(row, classes, m));
            check = sf_row_affine(row, classes, lse, -1.0f, prior_term);
            /* a row of NaN has m = -inf, so lse is NaN and check catches it */
            break;
        }
        case SF_OUTPUT_PROBS:
            sf_row_neg_log(row, classes);
            check = sf_row_affine(row, classes, 0.0f, 1.0f, prior_term);
            break;
        case SF_OUTPUT_LOG_PROBS:
            check = sf_row_affine(row, classes, 0.0f, -1.0f, prior_term);
            break;
        default: /* SF_OUTPUT_SCORES */
            check = sf_row_affine(row, classes, 0.0f, 1.0f, prior_term);
            break;
        }
        if (check != check)
            return t;
    }
    return -1;
}
