/*
 * sprintiface C core: the two loops on RASR's hot path.
 *
 *   - frame copies: one feature vector into a row of the frame buffer
 *     (float32 copied, float64 narrowed), no allocation;
 *   - score finishing: turn the model's raw (T, C) output into RASR scores
 *     in -log space, in place, with the prior term added, and find the first
 *     frame that is not finite.
 *
 * Storage is owned by the caller (the Cython wrapper keeps it in numpy arrays
 * so that views handed to Python stay valid when the buffer grows). All
 * validation and error messages live in the wrapper; these functions trust
 * their arguments.
 */
#ifndef SPRINTIFACE_H
#define SPRINTIFACE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the model's output is, and so how it becomes a -log score. */
typedef enum {
    SF_OUTPUT_LOGITS = 0,    /* unnormalised: score = logsumexp(x) - x   */
    SF_OUTPUT_PROBS = 1,     /* probabilities: score = -log(max(x, FLT_MIN)) */
    SF_OUTPUT_LOG_PROBS = 2, /* +log probabilities: score = -x           */
    SF_OUTPUT_SCORES = 3     /* already -log scores: score = x           */
} sf_output_kind;

/* Copy one frame of `dim` values into `dst`. */
void sf_copy_frame_f32(float *dst, const float *src, int64_t dim);
void sf_copy_frame_f64(float *dst, const double *src, int64_t dim);

/* Next capacity (in frames) that holds `needed` frames, growing geometrically
 * from `current` so that a long segment costs O(log T) reallocations. */
int64_t sf_grow_capacity(int64_t current, int64_t needed);

/*
 * Finish scores in place: `scores` holds `frames` rows of `classes` values
 * (row-major, contiguous). Each row becomes its -log score of `kind`, plus
 * `class_term[c]` when `class_term` is not NULL.
 *
 * `logit_bias` (SF_OUTPUT_LOGITS only; NULL for none): a per-class bias the
 * model adds before its softmax, cut off the graph so that ONNX Runtime writes
 * its last MatMul straight into `scores`. The logits are then x + bias, and
 * the caller folds -bias into `class_term`.
 *
 * With a prior, the caller passes class_term = prior_scale * log p(c) (- bias),
 * so the result is -log p(c|x) + prior_scale * log p(c).
 *
 * Returns -1 when every score is finite, else the index of the first frame
 * holding a NaN or an infinity (that row and later ones are left unspecified).
 */
int64_t sf_finish_scores(float *scores, int64_t frames, int64_t classes, sf_output_kind kind,
                         const float *logit_bias, const float *class_term);

/* The instruction set the score loop runs with: "avx512", "avx2" or
 * "baseline" (chosen at first use: the widest the CPU has). */
const char *sf_score_kernel(void);

/* Run the score loop with the kernel `name` from now on (for tests and
 * benchmarks). Returns 0, or -1 when this build or CPU does not have it. */
int sf_use_score_kernel(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* SPRINTIFACE_H */
