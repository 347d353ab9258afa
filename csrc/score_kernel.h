/*
 * The score kernel: turn a model's raw (T, C) output into RASR scores in
 * -log space, in place, with the prior term added, and find the first frame
 * that is not finite.
 *
 * The loop is compiled once per instruction set (score_kernel_body.inc) and
 * the caller names the kernel on every call: there is no process-wide
 * setting to change, so scorers with different kernels can live in one
 * process and no call races another.
 */
#ifndef SPRINTIFACE_SCORE_KERNEL_H
#define SPRINTIFACE_SCORE_KERNEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The score of a class the model makes impossible (p = 0, a masked class): -log(FLT_MIN) =
 * 126 ln 2, rounded to float32 (87.33655). Probabilities are floored at FLT_MIN, so RASR
 * never sees +inf, which would poison its pruning arithmetic; the rule for every kind is
 * at sf_finish_scores. The one place this number is written.
 */
#define SF_SCORE_FLOOR 87.3365447505531f

/* What the model's output holds, how it becomes a -log score, and which value is a masked
 * class (p = 0). */
typedef enum {               /* score                                         masked class              */
    SF_OUTPUT_LOGITS = 0,    /* log(sum exp(z - m)) - (z - m), z = x + bias   z = -inf (after the bias) */
    SF_OUTPUT_PROBS = 1,     /* -log(max(x, FLT_MIN)), +prob space            x < FLT_MIN (0: masked)   */
    SF_OUTPUT_LOG_PROBS = 2, /* -x, +log space                                x = -inf                  */
    SF_OUTPUT_SCORES = 3     /* x, already -log space                         x = +inf                  */
} sf_output_kind;

/* Kernels this build has, widest first: indices 0 .. sf_kernel_count() - 1. */
int sf_kernel_count(void);

/* "avx512", "avx2" or "baseline" (SSE2 on x86-64, NEON on aarch64). */
const char *sf_kernel_name(int kernel);

/* 1 when this CPU runs `kernel`, else 0. */
int sf_kernel_runs_here(int kernel);

/* The widest kernel this CPU runs. */
int sf_kernel_best(void);

/*
 * Finish scores in place with `kernel` (which must run here): `scores` holds
 * `frames` rows of `classes` values (row-major, contiguous). Each row becomes
 * its -log score of `kind`, plus `class_term[c]` when `class_term` is not NULL.
 *
 * `logit_bias` (SF_OUTPUT_LOGITS only; NULL for none): the per-class bias a
 * model adds before its softmax, cut off the graph so that ONNX Runtime writes
 * its last MatMul straight into `scores`. It is added to each value first,
 * z = x + bias, exactly as the model's Add would round it, and the score is
 * log(sum exp(z - s)) - (z - s) with the shift s taken from z (the row's
 * maximum, or the last row's log-sum-exp when that is close enough to keep the
 * sum a modest number): so scores stay as exact as a bare run at any logit
 * magnitude.
 *
 * The shift is a fast path with an exact answer: the last row's log-sum-exp is
 * taken only when the row's sum under it lies in [2^-23, 2^23], which it can only
 * when that shift is within 16 + ln C of the row's maximum, for any sequence of
 * rows (score_kernel_body.inc says why).
 *
 * With a prior, the caller passes class_term = prior_scale * log p(c), so the
 * result is -log p(c|x) + prior_scale * log p(c).
 *
 * A masked class (p = 0: the table above) scores exactly SF_SCORE_FLOOR (+ class_term[c]),
 * as the uncut model's p = 0 does under the probs floor: one rule for every kind. So
 * does a logit more than FLT_MAX below its row's maximum (z - m is -inf in float32,
 * where the uncut Softmax gives 0). Every other score is exact, 87.34 or more too.
 *
 * Returns -1 when every score is finite, else the index of the first frame that is not:
 * one holding a NaN, the other infinity (a logit or log-prob of +inf, a score of -inf,
 * a probability of +inf), nothing possible (every class masked), a score beyond float32,
 * or a masked class with a class_term of 2^103 or more (no prior gives one: there +inf
 * after the term cannot be told from an overflow). That row and later ones are left
 * unspecified.
 */
int64_t sf_finish_scores(int kernel, float *scores, int64_t frames, int64_t classes, sf_output_kind kind,
                         const float *logit_bias, const float *class_term);

#ifdef __cplusplus
}
#endif

#endif /* SPRINTIFACE_SCORE_KERNEL_H */
