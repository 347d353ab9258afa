# Declarations of the C core (csrc/sprintiface.h); see that header for the contracts.
from libc.stdint cimport int64_t

cdef extern from "sprintiface.h" nogil:
    ctypedef enum sf_output_kind:
        SF_OUTPUT_LOGITS
        SF_OUTPUT_PROBS
        SF_OUTPUT_LOG_PROBS
        SF_OUTPUT_SCORES

    void sf_copy_frame_f32(float *dst, const float *src, int64_t dim)
    void sf_copy_frame_f64(float *dst, const double *src, int64_t dim)
    int64_t sf_grow_capacity(int64_t current, int64_t needed)
    int64_t sf_finish_scores(float *scores, int64_t frames, int64_t classes, sf_output_kind kind,
                             const float *logit_bias, const float *class_term)
    const char *sf_score_kernel()
    int sf_use_score_kernel(const char *name)
