/* Body of the hot loops; included by ffm_hot_<isa>.c with FFM_ISA set. See ffm_kernels.h for
 * the model and the memory layouts. */
#include <math.h>
#include <stdlib.h>

#include "ffm_hot.h"

#if defined(__SSE2__) || defined(__x86_64__)
#include <immintrin.h>
#define FFM_SSE 1
#endif

#define FFM_CAT2(a, b) a##_##b
#define FFM_CAT(a, b) FFM_CAT2(a, b)
#define FFM_NAME(x) FFM_CAT(x, FFM_ISA)

typedef float v4 __attribute__((vector_size(16), aligned(16), may_alias));

/* Valid tokens of one row into `out`; returns their count and sets *scale to r. */
static inline int64_t gather(const ffm_model *model, const int32_t *fields,
                             const int32_t *features, const float *values, int64_t len,
                             int normalize, ffm_token *out, float *scale) {
    int64_t count = 0;
    float norm = 0.0f;
    for (int64_t p = 0; p < len; ++p) {
        /* Unsigned compares also drop negative ids read from an unchecked buffer. */
        const uint64_t j = (uint64_t)(uint32_t)features[p], f = (uint64_t)(uint32_t)fields[p];
        if (j >= (uint64_t)model->n || f >= (uint64_t)model->m) continue;
        const float v = values[p];
        if (model->hot_slot == NULL) {
            out[count].base = model->w + (int64_t)j * model->js;
        } else {
            /* Replicated or not is data-dependent and close to a coin flip for the features
             * just inside the replicated set: a branch here mispredicts often, a mask never. */
            const int64_t slot = model->hot_slot[j];
            const uintptr_t hot = (uintptr_t)0 - (uintptr_t)(slot >= 0);
            const uintptr_t shared = (uintptr_t)(model->w + (int64_t)j * model->js);
            const uintptr_t mine = (uintptr_t)model->hot_w +
                                   (uintptr_t)((int64_t)slot * model->js * (int64_t)sizeof(float));
            out[count].base = (float *)((mine & hot) | (shared & ~hot));
        }
        out[count].field = (int32_t)f;
        out[count].value = v;
        norm += v * v;
        ++count;
    }
    *scale = (normalize && norm > 0.0f) ? 1.0f / norm : 1.0f;
    return count;
}

static inline float hsum4(v4 x) { return (x[0] + x[1]) + (x[2] + x[3]); }

static inline v4 rsqrt4(v4 x) {
#ifdef FFM_SSE
    /* rsqrtps (12 bits) refined by one Newton step to ~22 bits: 1/sqrt at a fraction of
     * sqrt+div's cost. */
    const v4 y = (v4)_mm_rsqrt_ps((__m128)x);
    return y * (1.5f - 0.5f * x * y * y);
#else
    v4 y;
    for (int d = 0; d < 4; ++d) y[d] = 1.0f / sqrtf(x[d]);
    return y;
#endif
}

/* AdaGrad step of one pair on the lanes [0, kp): w1 = w[j_a, f_b], w2 = w[j_b, f_a], each
 * followed (at +kp) by its accumulators. When w1 and w2 are the same vector the second store
 * wins, as in a sequential reading of the algorithm. */
static inline void update_pair(float *w1p, float *w2p, int64_t kp, float kv, float eta,
                               float lambda) {
    for (int64_t d = 0; d < kp; d += 4) {
        v4 *w1 = (v4 *)(w1p + d), *w2 = (v4 *)(w2p + d);
        v4 *g1 = (v4 *)(w1p + kp + d), *g2 = (v4 *)(w2p + kp + d);
        const v4 x1 = *w1, x2 = *w2;
        const v4 d1 = lambda * x1 + kv * x2;
        const v4 d2 = lambda * x2 + kv * x1;
        const v4 s1 = *g1 + d1 * d1;
        const v4 s2 = *g2 + d2 * d2;
        *g1 = s1;
        *g2 = s2;
        *w1 = x1 - eta * d1 * rsqrt4(s1);
        *w2 = x2 - eta * d2 * rsqrt4(s2);
    }
}

/* The value of token b broadcast over its pair's four lanes, for 2 (or 4) consecutive tokens:
 * a token is 16 bytes with the value last, so one load and an in-lane broadcast do it. */
#ifdef __AVX2__
static inline __m256 values2(const ffm_token *t) {
    return _mm256_permute_ps(_mm256_loadu_ps((const float *)t), 0xFF);
}
#endif
#ifdef __AVX512F__
static inline __m512 values4(const ffm_token *t) {
    return _mm512_permute_ps(_mm512_loadu_ps((const float *)t), 0xFF);
}

static inline __m512 load4(const float *p, const float *q, const float *r, const float *s) {
    __m512 x = _mm512_castps128_ps512(_mm_load_ps(p));
    x = _mm512_insertf32x4(x, _mm_load_ps(q), 1);
    x = _mm512_insertf32x4(x, _mm_load_ps(r), 2);
    return _mm512_insertf32x4(x, _mm_load_ps(s), 3);
}

static inline void store4(float *p, float *q, float *r, float *s, __m512 x) {
    _mm_store_ps(p, _mm512_castps512_ps128(x));
    _mm_store_ps(q, _mm512_extractf32x4_ps(x, 1));
    _mm_store_ps(r, _mm512_extractf32x4_ps(x, 2));
    _mm_store_ps(s, _mm512_extractf32x4_ps(x, 3));
}
#endif

/* sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> x_a x_b, without r. With k <= 4 a pair is one 4-lane
 * vector, so AVX2 / AVX-512 builds take 2 / 4 pairs per register. */
static inline float pair_sum(const float *W, int64_t kp, int64_t fs, const ffm_token *t,
                             int64_t count) {
    v4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
#ifdef __AVX512F__
    __m512 acc16 = _mm512_setzero_ps();
#endif
#ifdef __AVX2__
    __m256 acc8 = _mm256_setzero_ps();
#endif
    for (int64_t a = 0; a < count; ++a) {
        const float *wa = t[a].base;
        const int64_t fa = (int64_t)t[a].field * fs;
        const float va = t[a].value;
        int64_t b = a + 1;
#ifdef __AVX512F__
        if (kp == 4) {
            const __m512 va16 = _mm512_set1_ps(va);
            for (; b + 3 < count; b += 4) {
                const __m512 x1 = load4(wa + t[b].field * fs, wa + t[b + 1].field * fs,
                                        wa + t[b + 2].field * fs, wa + t[b + 3].field * fs);
                const __m512 x2 = load4(t[b].base + fa, t[b + 1].base + fa,
                                        t[b + 2].base + fa, t[b + 3].base + fa);
                acc16 = _mm512_fmadd_ps(_mm512_mul_ps(x1, x2), _mm512_mul_ps(va16, values4(t + b)),
                                        acc16);
            }
        }
#endif
#ifdef __AVX2__
        if (kp == 4) {
            const __m256 va8 = _mm256_set1_ps(va);
            for (; b + 1 < count; b += 2) {
                const __m256 x1 = _mm256_insertf128_ps(
                    _mm256_castps128_ps256(_mm_load_ps(wa + t[b].field * fs)),
                    _mm_load_ps(wa + t[b + 1].field * fs), 1);
                const __m256 x2 = _mm256_insertf128_ps(
                    _mm256_castps128_ps256(_mm_load_ps(t[b].base + fa)),
                    _mm_load_ps(t[b + 1].base + fa), 1);
                acc8 = _mm256_fmadd_ps(_mm256_mul_ps(x1, x2), _mm256_mul_ps(va8, values2(t + b)),
                                       acc8);
            }
        }
#endif
        for (; b < count; ++b) {
            const v4 *w1 = (const v4 *)(wa + (int64_t)t[b].field * fs);
            const v4 *w2 = (const v4 *)(t[b].base + fa);
            const float v = va * t[b].value;
            for (int64_t d = 0; d < kp / 4; ++d) acc += w1[d] * w2[d] * v;
        }
    }
#ifdef __AVX512F__
    acc8 = _mm256_add_ps(acc8, _mm256_add_ps(_mm512_castps512_ps256(acc16),
                                             _mm512_extractf32x8_ps(acc16, 1)));
#endif
#ifdef __AVX2__
    acc += (v4)_mm256_castps256_ps128(acc8) + (v4)_mm256_extractf128_ps(acc8, 1);
#endif
    return hsum4(acc);
}

#ifdef __AVX2__
static inline __m256 load2(const float *lo, const float *hi) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_load_ps(lo)), _mm_load_ps(hi), 1);
}

static inline void store2(float *lo, float *hi, __m256 x) {
    _mm_store_ps(lo, _mm256_castps256_ps128(x));
    _mm_store_ps(hi, _mm256_extractf128_ps(x, 1));
}

static inline __m256 rsqrt8(__m256 x) {
    const __m256 y = _mm256_rsqrt_ps(x);
    const __m256 yy = _mm256_mul_ps(y, y);
    return _mm256_mul_ps(y, _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), yy,
                                             _mm256_set1_ps(1.5f)));
}

/* AdaGrad steps of two pairs (k <= 4) that touch four distinct vectors, in one register. */
static inline void update_two_pairs(float *p1, float *p2, float *q1, float *q2, __m256 kv,
                                    __m256 eta, __m256 lambda) {
    const __m256 x1 = load2(p1, q1), x2 = load2(p2, q2);
    const __m256 d1 = _mm256_fmadd_ps(lambda, x1, _mm256_mul_ps(kv, x2));
    const __m256 d2 = _mm256_fmadd_ps(lambda, x2, _mm256_mul_ps(kv, x1));
    const __m256 s1 = _mm256_fmadd_ps(d1, d1, load2(p1 + 4, q1 + 4));
    const __m256 s2 = _mm256_fmadd_ps(d2, d2, load2(p2 + 4, q2 + 4));
    store2(p1 + 4, q1 + 4, s1);
    store2(p2 + 4, q2 + 4, s2);
    store2(p1, q1, _mm256_fnmadd_ps(_mm256_mul_ps(eta, d1), rsqrt8(s1), x1));
    store2(p2, q2, _mm256_fnmadd_ps(_mm256_mul_ps(eta, d2), rsqrt8(s2), x2));
}
#endif

#ifdef __AVX512F__
static inline __m512 rsqrt16(__m512 x) {
    const __m512 y = _mm512_rsqrt14_ps(x);
    const __m512 yy = _mm512_mul_ps(y, y);
    return _mm512_mul_ps(y, _mm512_fnmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), yy,
                                             _mm512_set1_ps(1.5f)));
}

/* AdaGrad steps of four pairs (k <= 4) that touch eight distinct vectors, in one register. */
static inline void update_four_pairs(float *const p1[4], float *const p2[4], __m512 kv,
                                     __m512 eta, __m512 lambda) {
    const __m512 x1 = load4(p1[0], p1[1], p1[2], p1[3]);
    const __m512 x2 = load4(p2[0], p2[1], p2[2], p2[3]);
    const __m512 d1 = _mm512_fmadd_ps(lambda, x1, _mm512_mul_ps(kv, x2));
    const __m512 d2 = _mm512_fmadd_ps(lambda, x2, _mm512_mul_ps(kv, x1));
    const __m512 s1 = _mm512_fmadd_ps(d1, d1, load4(p1[0] + 4, p1[1] + 4, p1[2] + 4, p1[3] + 4));
    const __m512 s2 = _mm512_fmadd_ps(d2, d2, load4(p2[0] + 4, p2[1] + 4, p2[2] + 4, p2[3] + 4));
    store4(p1[0] + 4, p1[1] + 4, p1[2] + 4, p1[3] + 4, s1);
    store4(p2[0] + 4, p2[1] + 4, p2[2] + 4, p2[3] + 4, s2);
    store4(p1[0], p1[1], p1[2], p1[3], _mm512_fnmadd_ps(_mm512_mul_ps(eta, d1), rsqrt16(s1), x1));
    store4(p2[0], p2[1], p2[2], p2[3], _mm512_fnmadd_ps(_mm512_mul_ps(eta, d2), rsqrt16(s2), x2));
}
#endif

/* 1 when no field repeats in the row. Then two pairs (a, b), (a, c) of the same a can share a
 * weight vector only through a repeated feature among b, c, which the batched updates check;
 * `stamp` (one slot per field) remembers which row last saw each field. */
static inline int distinct_fields(const ffm_token *t, int64_t count, int64_t *stamp,
                                  int64_t row_id) {
    for (int64_t a = 0; a < count; ++a) {
        if (stamp[t[a].field] == row_id) return 0;
        stamp[t[a].field] = row_id;
    }
    return 1;
}

/* AdaGrad step on every pair of the row for dloss/dphi = kappa (kr = kappa * r). Pairs run
 * in the order a < b, or batched where the batch's pairs touch disjoint vectors (`simple`
 * rows), which gives the same result. */
static inline void pair_update(float *W, int64_t kp, int64_t fs, const ffm_token *t,
                               int64_t count, float kr, float eta, float lambda, int simple) {
#ifdef __AVX512F__
    const __m512 eta16 = _mm512_set1_ps(eta), lambda16 = _mm512_set1_ps(lambda);
#endif
#ifdef __AVX2__
    const __m256 eta8 = _mm256_set1_ps(eta), lambda8 = _mm256_set1_ps(lambda);
#endif
    for (int64_t a = 0; a < count; ++a) {
        float *wa = t[a].base;
        const int64_t fa = (int64_t)t[a].field * fs;
        const float va = kr * t[a].value;
        int64_t b = a + 1;
#ifdef __AVX512F__
        if (kp == 4 && simple) {
            const __m512 va16 = _mm512_set1_ps(va);
            for (; b + 3 < count; b += 4) {
                const float *o0 = t[b].base, *o1 = t[b + 1].base, *o2 = t[b + 2].base, *o3 = t[b + 3].base;
                float *const p1[4] = {wa + t[b].field * fs, wa + t[b + 1].field * fs,
                                      wa + t[b + 2].field * fs, wa + t[b + 3].field * fs};
                float *const p2[4] = {t[b].base + fa, t[b + 1].base + fa, t[b + 2].base + fa,
                                      t[b + 3].base + fa};
                if (o0 != o1 && o0 != o2 && o0 != o3 && o1 != o2 && o1 != o3 && o2 != o3) {
                    update_four_pairs(p1, p2, _mm512_mul_ps(va16, values4(t + b)), eta16,
                                      lambda16);
                } else {
                    for (int q = 0; q < 4; ++q)
                        update_pair(p1[q], p2[q], 4, va * t[b + q].value, eta, lambda);
                }
            }
        }
#endif
#ifdef __AVX2__
        if (kp == 4 && simple) {
            const __m256 va8 = _mm256_set1_ps(va);
            for (; b + 1 < count; b += 2) {
                float *p1 = wa + (int64_t)t[b].field * fs, *p2 = t[b].base + fa;
                float *q1 = wa + (int64_t)t[b + 1].field * fs, *q2 = t[b + 1].base + fa;
                if (t[b].base != t[b + 1].base) {
                    update_two_pairs(p1, p2, q1, q2, _mm256_mul_ps(va8, values2(t + b)), eta8,
                                     lambda8);
                } else {
                    update_pair(p1, p2, 4, va * t[b].value, eta, lambda);
                    update_pair(q1, q2, 4, va * t[b + 1].value, eta, lambda);
                }
            }
        }
#else
        (void)simple;
#endif
        for (; b < count; ++b) {
            float *w1 = wa + (int64_t)t[b].field * fs;
            float *w2 = t[b].base + fa;
            update_pair(w1, w2, kp, va * t[b].value, eta, lambda);
        }
    }
}

/* Stable log(1 + exp(-z)). */
static inline double log1pexp_neg(double z) {
    return z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z));
}

/* A literal 4 lets the compiler drop the lane loop for the common k <= 4. */
static inline float margin_of(const ffm_model *model, const ffm_token *t, int64_t count,
                              float r) {
    return r * (model->kp == 4 ? pair_sum(model->w, 4, model->fs, t, count)
                               : pair_sum(model->w, model->kp, model->fs, t, count));
}

/* Rows come in shuffled order, so each row's tokens sit somewhere cold in three arrays; ask for
 * them one row ahead (and for the row offsets two rows ahead) while this row computes. */
static inline void prefetch_rows(const ffm_rows *rows, const int64_t *order, int64_t i,
                                 int64_t hi) {
    if (i + 2 < hi) __builtin_prefetch(rows->indptr + (order ? order[i + 2] : i + 2), 0, 1);
    if (i + 1 < hi) {
        const int64_t next = order ? order[i + 1] : i + 1;
        const int64_t begin = rows->indptr[next], end = rows->indptr[next + 1];
        for (int64_t p = begin; p < end; p += 16) {
            __builtin_prefetch(rows->fields + p, 0, 1);
            __builtin_prefetch(rows->features + p, 0, 1);
            __builtin_prefetch(rows->values + p, 0, 1);
        }
        __builtin_prefetch(rows->fields + end - 1, 0, 1);
        __builtin_prefetch(rows->features + end - 1, 0, 1);
        __builtin_prefetch(rows->values + end - 1, 0, 1);
        __builtin_prefetch(rows->labels + next, 0, 1);
    }
}

double FFM_NAME(ffm_train_slice)(ffm_model *model, const ffm_rows *rows, const int64_t *order,
                                 int64_t lo, int64_t hi, float eta, float lambda, int normalize,
                                 ffm_token *scratch, int64_t *stamp) {
    for (int64_t f = 0; f < model->m; ++f) stamp[f] = -1;
    double loss = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
        const int64_t row = order ? order[i] : i;
        prefetch_rows(rows, order, i, hi);
        const int64_t begin = rows->indptr[row];
        float r;
        const int64_t count =
            gather(model, rows->fields + begin, rows->features + begin, rows->values + begin,
                   rows->indptr[row + 1] - begin, normalize, scratch, &r);
        const float t = margin_of(model, scratch, count, r);
        const float y = rows->labels[row] > 0.5f ? 1.0f : -1.0f;
        const float z = y * t;
        loss += log1pexp_neg(z);
        const float kappa = -y / (1.0f + expf(z)); /* d loss / d phi */
        const int simple = distinct_fields(scratch, count, stamp, i);
        if (model->kp == 4)
            pair_update(model->w, 4, model->fs, scratch, count, kappa * r, eta, lambda, simple);
        else
            pair_update(model->w, model->kp, model->fs, scratch, count, kappa * r, eta, lambda,
                        simple);
    }
    return loss;
}

void FFM_NAME(ffm_margin_slice)(const ffm_model *model, const ffm_rows *rows, int64_t lo,
                                int64_t hi, int normalize, ffm_token *scratch, float *out) {
    for (int64_t row = lo; row < hi; ++row) {
        const int64_t begin = rows->indptr[row];
        float r;
        const int64_t count =
            gather(model, rows->fields + begin, rows->features + begin, rows->values + begin,
                   rows->indptr[row + 1] - begin, normalize, scratch, &r);
        out[row] = margin_of(model, scratch, count, r);
    }
}

float FFM_NAME(ffm_margin_tokens)(const ffm_model *model, const int32_t *fields,
                                  const int32_t *features, const float *values, int64_t len,
                                  int normalize, ffm_token *scratch) {
    float r;
    const int64_t count = gather(model, fields, features, values, len, normalize, scratch, &r);
    return margin_of(model, scratch, count, r);
}
