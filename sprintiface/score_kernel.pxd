# Declarations of csrc/score_kernel.h; the contracts are in that header.
from libc.stdint cimport int64_t

cdef extern from "score_kernel.h" nogil:
    const float SF_SCORE_FLOOR
    ctypedef enum sf_output_kind:
        SF_OUTPUT_LOGITS
        SF_OUTPUT_PROBS
        SF_OUTPUT_LOG_PROBS
        SF_OUTPUT_SCORES

    int sf_kernel_count()
    const char *sf_kernel_name(int kernel)
    int sf_kernel_runs_here(int kernel)
    int sf_kernel_best()
    int64_t sf_finish_scores(int kernel, float *scores, int64_t frames, int64_t classes, sf_output_kind kind,
                             const float *logit_bias, const float *class_term)
