/* The per-row hot loops, compiled once per instruction set (ffm_hot_generic.c, ffm_hot_avx2.c)
 * and picked at run time by ffm_kernels.c, so one portable binary runs everywhere and uses
 * AVX2+FMA where the CPU has them. */
#ifndef FFM_HOT_H
#define FFM_HOT_H

#include "ffm_kernels.h"

/* One valid token of a row: where its feature's vectors start, its field, its value. */
typedef struct {
    float *base;
    int32_t field;
    float value;
} ffm_token;

#define FFM_HOT_DECLARE(isa)                                                                      \
    double ffm_train_slice_##isa(ffm_model *model, const ffm_rows *rows, const int64_t *order,    \
                                 int64_t lo, int64_t hi, float eta, float lambda, int normalize,  \
                                 ffm_token *scratch, int64_t *field_stamp);                       \
    void ffm_margin_slice_##isa(const ffm_model *model, const ffm_rows *rows, int64_t lo,         \
                                int64_t hi, int normalize, ffm_token *scratch, float *out);       \
    float ffm_margin_tokens_##isa(const ffm_model *model, const int32_t *fields,                  \
                                  const int32_t *features, const float *values, int64_t len,      \
                                  int normalize, ffm_token *scratch);                             \
    void ffm_eta_rsqrt_##isa(const float *x, float *out, int64_t n, float eta);

FFM_HOT_DECLARE(generic)
#if defined(__x86_64__) || defined(_M_X64)
#define FFM_HAVE_AVX2_BUILD 1
FFM_HOT_DECLARE(avx2_lanes)
FFM_HOT_DECLARE(avx2)
FFM_HOT_DECLARE(avx512)
#endif

#endif
