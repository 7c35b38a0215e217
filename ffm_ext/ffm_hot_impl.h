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

/* Valid tokens of one row into `out`; returns their count, sets *scale to r and *dense to 1
 * when their fields are consecutive (f, f+1, f+2, ...), as in rows that have every field in
 * order: then the vectors w[j_a, f_b] of consecutive b are adjacent in memory. */
static inline int64_t gather(const ffm_model *model, const int32_t *fields,
                             const int32_t *features, const float *values, int64_t len,
                             int normalize, ffm_token *out, float *scale, int *dense) {
    int64_t count = 0;
    float norm = 0.0f;
    int consecutive = 1;
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
        consecutive &= (int64_t)f == (int64_t)out[0].field + count;
        norm += v * v;
        ++count;
    }
    *scale = (normalize && norm > 0.0f) ? 1.0f / norm : 1.0f;
    *dense = consecutive;
    return count;
}

static inline float hsum4(v4 x) { return (x[0] + x[1]) + (x[2] + x[3]); }

/* eta / sqrt(x), AdaGrad's step size. The SIMD builds take the CPU's reciprocal square root
 * estimate as it is, as LIBFFM does: rsqrtps (12 bits: relative error <= 1.5 * 2^-12) in the
 * AVX2 build, rsqrt14 in the AVX-512 one, at every width, so a build's steps all round alike.
 * A Newton step refining it to ~22 bits cost 14% of a 1-thread epoch (the update loop is bound
 * by its FP operations) and moved no best validation logloss in the fifth decimal
 * (docs/performance.md). The generic build computes it exactly: the exact sequential algorithm
 * the SIMD builds are checked against. */
#if defined(__AVX512F__) && defined(__AVX512VL__)
static inline v4 eta_rsqrt4(v4 x, float eta) { return (v4)_mm_rsqrt14_ps((__m128)x) * eta; }
#elif defined(__AVX2__)
static inline v4 eta_rsqrt4(v4 x, float eta) { return (v4)_mm_rsqrt_ps((__m128)x) * eta; }
#else
static inline v4 eta_rsqrt4(v4 x, float eta) {
    v4 y;
    for (int d = 0; d < 4; ++d) y[d] = eta / sqrtf(x[d]);
    return y;
}
#endif

/* out[i] = eta / sqrt(x[i]) exactly as this build's training steps compute it: the reference
 * tests train with it, so they can hold the SIMD builds to float32-against-float64 tolerances. */
void FFM_NAME(ffm_eta_rsqrt)(const float *x, float *out, int64_t n, float eta) {
    for (int64_t i = 0; i < n; i += 4) {
        v4 chunk = {1.0f, 1.0f, 1.0f, 1.0f};
        for (int64_t d = 0; d < 4 && i + d < n; ++d) chunk[d] = x[i + d];
        const v4 y = eta_rsqrt4(chunk, eta);
        for (int64_t d = 0; d < 4 && i + d < n; ++d) out[i + d] = y[d];
    }
}

/* AdaGrad step of one pair on the lanes [0, kp): w1 = w[j_a, f_b], w2 = w[j_b, f_a], their
 * accumulators gs floats further on. When w1 and w2 are the same vector the second store
 * wins, as in a sequential reading of the algorithm. */
static inline void update_pair(float *w1p, float *w2p, int64_t kp, int64_t gs, float kv,
                               float eta, float lambda) {
    for (int64_t d = 0; d < kp; d += 4) {
        v4 *w1 = (v4 *)(w1p + d), *w2 = (v4 *)(w2p + d);
        v4 *g1 = (v4 *)(w1p + gs + d), *g2 = (v4 *)(w2p + gs + d);
        const v4 x1 = *w1, x2 = *w2;
        const v4 d1 = lambda * x1 + kv * x2;
        const v4 d2 = lambda * x2 + kv * x1;
        const v4 s1 = *g1 + d1 * d1;
        const v4 s2 = *g2 + d2 * d2;
        *g1 = s1;
        *g2 = s2;
        *w1 = x1 - d1 * eta_rsqrt4(s1, eta);
        *w2 = x2 - d2 * eta_rsqrt4(s2, eta);
    }
}

/* The value of token b broadcast over its pair's four lanes, for 2 (or 4) consecutive tokens:
 * a token is 16 bytes with the value last, so one load and an in-lane broadcast do it. */
#ifdef __AVX2__
static inline __m256 values2(const ffm_token *t) {
    return _mm256_permute_ps(_mm256_loadu_ps((const float *)t), 0xFF);
}

static inline __m256 load2(const float *lo, const float *hi) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_load_ps(lo)), _mm_load_ps(hi), 1);
}

static inline void store2(float *lo, float *hi, __m256 x) {
    _mm_store_ps(lo, _mm256_castps256_ps128(x));
    _mm_store_ps(hi, _mm256_extractf128_ps(x, 1));
}

/* Two 4-lane vectors in one register; `adjacent` (a constant where inlined): hi == lo + 4, so
 * one 32-byte access does it. */
static inline __m256 load_two(const float *lo, const float *hi, int adjacent) {
    return adjacent ? _mm256_loadu_ps(lo) : load2(lo, hi);
}

static inline void store_two(float *lo, float *hi, __m256 x, int adjacent) {
    if (adjacent)
        _mm256_storeu_ps(lo, x);
    else
        store2(lo, hi, x);
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

/* Four 4-lane vectors; `adjacent`: each follows the one before, one 64-byte access. */
static inline __m512 load_four(float *const p[4], int64_t off, int adjacent) {
    return adjacent ? _mm512_loadu_ps(p[0] + off)
                    : load4(p[0] + off, p[1] + off, p[2] + off, p[3] + off);
}

static inline void store_four(float *const p[4], int64_t off, __m512 x, int adjacent) {
    if (adjacent)
        _mm512_storeu_ps(p[0] + off, x);
    else
        store4(p[0] + off, p[1] + off, p[2] + off, p[3] + off, x);
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
/* [x.lo | y.lo] and [x.hi | y.hi]: a 2x2 transpose of 4-lane vectors. */
static inline __m256 low_halves(__m256 x, __m256 y) { return _mm256_permute2f128_ps(x, y, 0x20); }
static inline __m256 high_halves(__m256 x, __m256 y) { return _mm256_permute2f128_ps(x, y, 0x31); }

/* pair_sum of a dense row with k <= 4: the pairs (a, b), (a, b+1), (a+1, b), (a+1, b+1) at a
 * time, as in update_two_rows_dense. Rows a and a+1 sum <w, w> x_b over b first and multiply by
 * x_a once after: one multiply fewer per two pairs (1% of a 1-thread epoch on Zen 1). */
static inline float pair_sum_dense(const ffm_token *t, int64_t count) {
    __m256 total = _mm256_setzero_ps();
    v4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t a = 0; a + 1 < count; a += 2) {
        const float *wa = t[a].base, *wa1 = t[a + 1].base;
        const int64_t fa = (int64_t)t[a].field * 4;
        const float va = t[a].value, va1 = t[a + 1].value;
        acc += *(const v4 *)(wa + fa + 4) * *(const v4 *)(wa1 + fa) * (va * t[a + 1].value);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        const float *pa = wa + fa + 8, *pa1 = wa1 + fa + 8; /* w[j_a, f_a+2], w[j_a+1, f_a+2] */
        int64_t b = a + 2;
        for (; b + 1 < count; b += 2, pa += 8, pa1 += 8) {
            /* Fields f_a.. of the other rows' blocks come one line at a time, each from another
             * block: no hardware prefetcher guesses the next, so ask for the line after. */
            __builtin_prefetch(t[b].base + fa + 16, 0, 3);
            __builtin_prefetch(t[b + 1].base + fa + 16, 0, 3);
#ifdef FFM_LANE_LOADS
            const float *q0 = t[b].base + fa, *q1 = t[b + 1].base + fa;
            const __m256 lo = load2(q0, q1), hi = load2(q0 + 4, q1 + 4);
#else
            const __m256 b0 = _mm256_loadu_ps(t[b].base + fa), b1 = _mm256_loadu_ps(t[b + 1].base + fa);
            const __m256 lo = low_halves(b0, b1), hi = high_halves(b0, b1);
#endif
            const __m256 vb = values2(t + b);
            acc0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(pa), lo), vb, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(pa1), hi), vb, acc1);
        }
        if (b < count) { /* (a, b) and (a+1, b) */
            const __m256 kv = _mm256_mul_ps(_mm256_setr_m128(_mm_set1_ps(va), _mm_set1_ps(va1)),
                                            _mm256_set1_ps(t[b].value));
            total = _mm256_fmadd_ps(
                _mm256_mul_ps(_mm256_loadu_ps(t[b].base + fa), load2(pa, pa1)), kv, total);
        }
        total = _mm256_fmadd_ps(acc0, _mm256_set1_ps(va), total);
        total = _mm256_fmadd_ps(acc1, _mm256_set1_ps(va1), total);
    }
    acc += (v4)_mm256_castps256_ps128(total) + (v4)_mm256_extractf128_ps(total, 1);
    return hsum4(acc);
}
#endif

/* sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> x_a x_b, without r. With k <= 4 a pair is one 4-lane
 * vector, so AVX2 / AVX-512 builds take 2 / 4 pairs per register; in `dense` rows (a constant
 * where inlined) the w[j_a, f_b] of those pairs are adjacent and come in one load. */
static inline __attribute__((always_inline)) float pair_sum(int64_t kp, const ffm_token *t,
                                                            int64_t count, int dense) {
    v4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
#ifdef __AVX512F__
    __m512 acc16 = _mm512_setzero_ps();
#endif
#ifdef __AVX2__
    __m256 acc8 = _mm256_setzero_ps();
#endif
    for (int64_t a = 0; a < count; ++a) {
        const float *wa = t[a].base;
        const int64_t fa = (int64_t)t[a].field * kp;
        const float va = t[a].value;
        int64_t b = a + 1;
#ifdef __AVX512F__
        if (kp == 4) {
            const __m512 va16 = _mm512_set1_ps(va);
            for (; b + 3 < count; b += 4) {
                float *const p1[4] = {(float *)wa + t[b].field * 4, (float *)wa + t[b + 1].field * 4,
                                      (float *)wa + t[b + 2].field * 4,
                                      (float *)wa + t[b + 3].field * 4};
                const __m512 x1 = load_four(p1, 0, dense);
                const __m512 x2 = load4(t[b].base + fa, t[b + 1].base + fa,
                                        t[b + 2].base + fa, t[b + 3].base + fa);
                acc16 = _mm512_fmadd_ps(_mm512_mul_ps(x1, x2), _mm512_mul_ps(va16, values4(t + b)),
                                        acc16);
            }
        }
#endif
#ifdef __AVX2__
        if (kp == 4 && b + 1 < count) {
            __m256 row8 = _mm256_setzero_ps(); /* times x_a once, after the row's pairs */
            const float *next = wa + fa + 4 * (b - a); /* dense rows: w[j_a, f_b] */
            for (; b + 1 < count; b += 2, next += 8) {
                const __m256 x1 = dense ? _mm256_loadu_ps(next)
                                        : load2(wa + t[b].field * 4, wa + t[b + 1].field * 4);
                const __m256 x2 = load2(t[b].base + fa, t[b + 1].base + fa);
                row8 = _mm256_fmadd_ps(_mm256_mul_ps(x1, x2), values2(t + b), row8);
            }
            acc8 = _mm256_fmadd_ps(row8, _mm256_set1_ps(va), acc8);
        }
#else
        (void)dense;
#endif
        for (; b < count; ++b) {
            const v4 *w1 = (const v4 *)(wa + (int64_t)t[b].field * kp);
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
/* eta / sqrt(x), as eta_rsqrt4. */
static inline __m256 eta_rsqrt8(__m256 x, __m256 eta) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
    return _mm256_mul_ps(_mm256_rsqrt14_ps(x), eta);
#else
    return _mm256_mul_ps(_mm256_rsqrt_ps(x), eta);
#endif
}

/* AdaGrad steps of the two pairs in a pair of registers (k <= 4): lanes 0-3 of x1 and x2 are one
 * pair's w[j_a, f_b] and w[j_b, f_a], lanes 4-7 another's; g1, g2 their accumulators. */
static inline __attribute__((always_inline)) void adagrad8(__m256 *x1, __m256 *x2, __m256 *g1,
                                                           __m256 *g2, __m256 kv, __m256 eta,
                                                           __m256 lambda) {
    const __m256 w1 = *x1, w2 = *x2;
    const __m256 d1 = _mm256_fmadd_ps(lambda, w1, _mm256_mul_ps(kv, w2));
    const __m256 d2 = _mm256_fmadd_ps(lambda, w2, _mm256_mul_ps(kv, w1));
    const __m256 s1 = _mm256_fmadd_ps(d1, d1, *g1);
    const __m256 s2 = _mm256_fmadd_ps(d2, d2, *g2);
    *g1 = s1;
    *g2 = s2;
    *x1 = _mm256_fnmadd_ps(d1, eta_rsqrt8(s1, eta), w1);
    *x2 = _mm256_fnmadd_ps(d2, eta_rsqrt8(s2, eta), w2);
}

/* AdaGrad steps of two pairs (k <= 4) that touch four distinct vectors, in one register:
 * w[j_a, f_b] at p1 and q1, w[j_b, f_a] at p2 and q2, accumulators gs floats further on. */
static inline __attribute__((always_inline)) void
update_two_pairs(float *p1, float *p2, float *q1, float *q2, int64_t gs, __m256 kv, __m256 eta,
                 __m256 lambda, int adjacent) {
    __m256 x1 = load_two(p1, q1, adjacent), x2 = load2(p2, q2);
    __m256 g1 = load_two(p1 + gs, q1 + gs, adjacent), g2 = load2(p2 + gs, q2 + gs);
    adagrad8(&x1, &x2, &g1, &g2, kv, eta, lambda);
    store_two(p1 + gs, q1 + gs, g1, adjacent);
    store2(p2 + gs, q2 + gs, g2);
    store_two(p1, q1, x1, adjacent);
    store2(p2, q2, x2);
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)

/* AdaGrad steps of the pairs (a, b), (a, b+1), (a+1, b), (a+1, b+1) of a dense row, which touch
 * eight distinct vectors when j_a != j_a+1 and j_b != j_b+1: w[j_a, f_b..f_b+1] at pa,
 * w[j_a+1, f_b..] at pa1, w[j_b, f_a..f_a+1] at pb, w[j_b+1, f_a..] at pb1, each two adjacent
 * vectors, so every access is one 32-byte load or store; kv0 / kv1 the step factors of a's /
 * a+1's two pairs. */
static inline __attribute__((always_inline)) void
update_four_dense(float *pa, float *pa1, float *pb, float *pb1, int64_t gs, __m256 kv0,
                  __m256 kv1, __m256 eta, __m256 lambda) {
    __m256 x1 = _mm256_loadu_ps(pa), y1 = _mm256_loadu_ps(pa1);
    __m256 gx1 = _mm256_loadu_ps(pa + gs), gy1 = _mm256_loadu_ps(pa1 + gs);
    /* x1's partners are w[j_b, f_a] and w[j_b+1, f_a]; y1's the same at f_a+1. */
#ifdef FFM_LANE_LOADS
    __m256 x2 = load2(pb, pb1), y2 = load2(pb + 4, pb1 + 4);
    __m256 gx2 = load2(pb + gs, pb1 + gs), gy2 = load2(pb + gs + 4, pb1 + gs + 4);
#else
    const __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb1);
    const __m256 h0 = _mm256_loadu_ps(pb + gs), h1 = _mm256_loadu_ps(pb1 + gs);
    __m256 x2 = low_halves(b0, b1), y2 = high_halves(b0, b1);
    __m256 gx2 = low_halves(h0, h1), gy2 = high_halves(h0, h1);
#endif
    adagrad8(&x1, &x2, &gx1, &gx2, kv0, eta, lambda);
    adagrad8(&y1, &y2, &gy1, &gy2, kv1, eta, lambda);
    _mm256_storeu_ps(pa + gs, gx1);
    _mm256_storeu_ps(pa1 + gs, gy1);
#ifdef FFM_LANE_LOADS
    store2(pb + gs, pb1 + gs, gx2);
    store2(pb + gs + 4, pb1 + gs + 4, gy2);
#else
    _mm256_storeu_ps(pb + gs, low_halves(gx2, gy2));
    _mm256_storeu_ps(pb1 + gs, high_halves(gx2, gy2));
#endif
    _mm256_storeu_ps(pa, x1);
    _mm256_storeu_ps(pa1, y1);
#ifdef FFM_LANE_LOADS
    store2(pb, pb1, x2);
    store2(pb + 4, pb1 + 4, y2);
#else
    _mm256_storeu_ps(pb, low_halves(x2, y2));
    _mm256_storeu_ps(pb1, high_halves(x2, y2));
#endif
}

/* Every pair (a, *) and (a+1, *) of a dense row with k <= 4 (j_a != j_a+1), four at a time.
 * The order differs from a, then a+1, only between pairs that share no vector (the fields are
 * distinct), so the result is the same. */
static inline void update_two_rows_dense(const ffm_token *t, int64_t a, int64_t count, int64_t gs,
                                         float kr, float eta, float lambda) {
    const __m256 eta8 = _mm256_set1_ps(eta), lambda8 = _mm256_set1_ps(lambda);
    float *wa = t[a].base, *wa1 = t[a + 1].base;
    const int64_t fa = (int64_t)t[a].field * 4;
    const float va = kr * t[a].value, va1 = kr * t[a + 1].value;
    update_pair(wa + fa + 4, wa1 + fa, 4, gs, va * t[a + 1].value, eta, lambda);
    const __m256 va8 = _mm256_set1_ps(va), va18 = _mm256_set1_ps(va1);
    float *pa = wa + fa + 8, *pa1 = wa1 + fa + 8; /* w[j_a, f_a+2], w[j_a+1, f_a+2] */
    int64_t b = a + 2;
    for (; b + 1 < count; b += 2, pa += 8, pa1 += 8) {
        float *pb = t[b].base + fa, *pb1 = t[b + 1].base + fa;
        const __m256 vb = values2(t + b);
        __builtin_prefetch(pb + 16, 1, 3); /* as in pair_sum_dense, weights and accumulators */
        __builtin_prefetch(pb1 + 16, 1, 3);
        __builtin_prefetch(pb + gs + 16, 1, 3);
        __builtin_prefetch(pb1 + gs + 16, 1, 3);
        if (t[b].base != t[b + 1].base) {
            update_four_dense(pa, pa1, pb, pb1, gs, _mm256_mul_ps(va8, vb),
                              _mm256_mul_ps(va18, vb), eta8, lambda8);
        } else { /* one feature in fields b and b+1: one pair at a time, in order */
            update_pair(pa, pb, 4, gs, va * t[b].value, eta, lambda);
            update_pair(pa + 4, pb1, 4, gs, va * t[b + 1].value, eta, lambda);
            update_pair(pa1, pb + 4, 4, gs, va1 * t[b].value, eta, lambda);
            update_pair(pa1 + 4, pb1 + 4, 4, gs, va1 * t[b + 1].value, eta, lambda);
        }
    }
    if (b < count) { /* (a, b) and (a+1, b): w[j_b, f_a] and w[j_b, f_a+1] are adjacent */
        const __m256 kv = _mm256_mul_ps(_mm256_setr_m128(_mm_set1_ps(va), _mm_set1_ps(va1)),
                                        _mm256_set1_ps(t[b].value));
        update_two_pairs(t[b].base + fa, pa, t[b].base + fa + 4, pa1, gs, kv, eta8, lambda8, 1);
    }
}
#endif

#ifdef __AVX512F__
/* eta / sqrt(x), as eta_rsqrt4. */
static inline __m512 eta_rsqrt16(__m512 x, __m512 eta) {
    return _mm512_mul_ps(_mm512_rsqrt14_ps(x), eta);
}

/* AdaGrad steps of four pairs (k <= 4) that touch eight distinct vectors, in one register. */
static inline __attribute__((always_inline)) void
update_four_pairs(float *const p1[4], float *const p2[4], int64_t gs, __m512 kv, __m512 eta,
                  __m512 lambda, int adjacent) {
    const __m512 x1 = load_four(p1, 0, adjacent);
    const __m512 x2 = load4(p2[0], p2[1], p2[2], p2[3]);
    const __m512 d1 = _mm512_fmadd_ps(lambda, x1, _mm512_mul_ps(kv, x2));
    const __m512 d2 = _mm512_fmadd_ps(lambda, x2, _mm512_mul_ps(kv, x1));
    const __m512 s1 = _mm512_fmadd_ps(d1, d1, load_four(p1, gs, adjacent));
    const __m512 s2 = _mm512_fmadd_ps(d2, d2, load4(p2[0] + gs, p2[1] + gs, p2[2] + gs, p2[3] + gs));
    store_four(p1, gs, s1, adjacent);
    store4(p2[0] + gs, p2[1] + gs, p2[2] + gs, p2[3] + gs, s2);
    store_four(p1, 0, _mm512_fnmadd_ps(d1, eta_rsqrt16(s1, eta), x1), adjacent);
    store4(p2[0], p2[1], p2[2], p2[3], _mm512_fnmadd_ps(d2, eta_rsqrt16(s2, eta), x2));
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

/* AdaGrad step on every pair of the row for dloss/dphi = kappa (kr = kappa * r), accumulators
 * gs floats after their weights. Pairs run in the order a < b, or batched where the batch's
 * pairs touch disjoint vectors (`simple` rows: no field repeats), which gives the same result;
 * `dense` (a constant where inlined) as in pair_sum. */
static inline __attribute__((always_inline)) void
pair_update(int64_t kp, int64_t gs, const ffm_token *t, int64_t count, float kr, float eta,
            float lambda, int simple, int dense) {
#ifdef __AVX512F__
    const __m512 eta16 = _mm512_set1_ps(eta), lambda16 = _mm512_set1_ps(lambda);
#endif
#ifdef __AVX2__
    const __m256 eta8 = _mm256_set1_ps(eta), lambda8 = _mm256_set1_ps(lambda);
#endif
    for (int64_t a = 0; a < count; ++a) {
#if defined(__AVX2__) && !defined(__AVX512F__)
        if (kp == 4 && dense && a + 1 < count && t[a].base != t[a + 1].base) {
            update_two_rows_dense(t, a, count, gs, kr, eta, lambda);
            ++a;
            continue;
        }
#endif
        float *wa = t[a].base;
        const int64_t fa = (int64_t)t[a].field * kp;
        const float va = kr * t[a].value;
        int64_t b = a + 1;
#ifdef __AVX512F__
        if (kp == 4 && simple) {
            const __m512 va16 = _mm512_set1_ps(va);
            for (; b + 3 < count; b += 4) {
                const float *o0 = t[b].base, *o1 = t[b + 1].base, *o2 = t[b + 2].base, *o3 = t[b + 3].base;
                float *const p1[4] = {wa + t[b].field * 4, wa + t[b + 1].field * 4,
                                      wa + t[b + 2].field * 4, wa + t[b + 3].field * 4};
                float *const p2[4] = {t[b].base + fa, t[b + 1].base + fa, t[b + 2].base + fa,
                                      t[b + 3].base + fa};
                if (o0 != o1 && o0 != o2 && o0 != o3 && o1 != o2 && o1 != o3 && o2 != o3) {
                    update_four_pairs(p1, p2, gs, _mm512_mul_ps(va16, values4(t + b)), eta16,
                                      lambda16, dense);
                } else {
                    for (int q = 0; q < 4; ++q)
                        update_pair(p1[q], p2[q], 4, gs, va * t[b + q].value, eta, lambda);
                }
            }
        }
#endif
#ifdef __AVX2__
        if (kp == 4 && simple) {
            const __m256 va8 = _mm256_set1_ps(va);
            float *next = wa + fa + 4 * (b - a); /* dense rows: w[j_a, f_b] */
            for (; b + 1 < count; b += 2, next += 8) {
                float *p1 = dense ? next : wa + (int64_t)t[b].field * 4, *p2 = t[b].base + fa;
                float *q1 = dense ? next + 4 : wa + (int64_t)t[b + 1].field * 4;
                float *q2 = t[b + 1].base + fa;
                if (t[b].base != t[b + 1].base) {
                    update_two_pairs(p1, p2, q1, q2, gs, _mm256_mul_ps(va8, values2(t + b)), eta8,
                                     lambda8, dense);
                } else {
                    update_pair(p1, p2, 4, gs, va * t[b].value, eta, lambda);
                    update_pair(q1, q2, 4, gs, va * t[b + 1].value, eta, lambda);
                }
            }
        }
#else
        (void)simple;
        (void)dense;
#endif
        for (; b < count; ++b) {
            float *w1 = wa + (int64_t)t[b].field * kp;
            float *w2 = t[b].base + fa;
            update_pair(w1, w2, kp, gs, va * t[b].value, eta, lambda);
        }
    }
}

/* Stable log(1 + exp(-z)). */
static inline double log1pexp_neg(double z) {
    return z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z));
}

/* Literal 4s let the compiler drop the lane loop for the common k <= 4. */
static inline float margin_of(const ffm_model *model, const ffm_token *t, int64_t count,
                              float r, int dense) {
    float sum;
    if (model->kp == 4)
#if defined(__AVX2__) && !defined(__AVX512F__)
        sum = dense ? pair_sum_dense(t, count) : pair_sum(4, t, count, 0);
#else
        sum = dense ? pair_sum(4, t, count, 1) : pair_sum(4, t, count, 0);
#endif
    else
        sum = pair_sum(model->kp, t, count, 0);
    return r * sum;
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
    /* Training layout: a feature's weights of every field, then their accumulators. */
    const int64_t gs = model->g - model->w;
    double loss = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
        const int64_t row = order ? order[i] : i;
        prefetch_rows(rows, order, i, hi);
        const int64_t begin = rows->indptr[row];
        float r;
        int dense;
        const int64_t count =
            gather(model, rows->fields + begin, rows->features + begin, rows->values + begin,
                   rows->indptr[row + 1] - begin, normalize, scratch, &r, &dense);
        const float t = margin_of(model, scratch, count, r, dense);
        const float y = rows->labels[row] > 0.5f ? 1.0f : -1.0f;
        const float z = y * t;
        loss += log1pexp_neg(z);
        const float kappa = -y / (1.0f + expf(z)); /* d loss / d phi */
        const float kr = kappa * r;
        if (model->kp != 4)
            pair_update(model->kp, gs, scratch, count, kr, eta, lambda,
                        distinct_fields(scratch, count, stamp, i), 0);
        else if (dense) /* consecutive fields are also distinct */
            pair_update(4, gs, scratch, count, kr, eta, lambda, 1, 1);
        else
            pair_update(4, gs, scratch, count, kr, eta, lambda,
                        distinct_fields(scratch, count, stamp, i), 0);
    }
    return loss;
}

void FFM_NAME(ffm_margin_slice)(const ffm_model *model, const ffm_rows *rows, int64_t lo,
                                int64_t hi, int normalize, ffm_token *scratch, float *out) {
    for (int64_t row = lo; row < hi; ++row) {
        const int64_t begin = rows->indptr[row];
        float r;
        int dense;
        const int64_t count =
            gather(model, rows->fields + begin, rows->features + begin, rows->values + begin,
                   rows->indptr[row + 1] - begin, normalize, scratch, &r, &dense);
        out[row] = margin_of(model, scratch, count, r, dense);
    }
}

float FFM_NAME(ffm_margin_tokens)(const ffm_model *model, const int32_t *fields,
                                  const int32_t *features, const float *values, int64_t len,
                                  int normalize, ffm_token *scratch) {
    float r;
    int dense;
    const int64_t count =
        gather(model, fields, features, values, len, normalize, scratch, &r, &dense);
    return margin_of(model, scratch, count, r, dense);
}
