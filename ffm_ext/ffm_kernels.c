/* FFM training and prediction kernels; see ffm_kernels.h for the model. */
#include "ffm_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef FFM_HAVE_OPENMP
#include <omp.h>
#endif

#if defined(__SSE__) || defined(__x86_64__)
#include <immintrin.h>
#define FFM_HAVE_SSE 1
#endif

/* Hot loops get an AVX2+FMA clone picked at load time (ifunc), so one portable binary is fast
 * on current x86 hosts and still runs on any x86-64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define FFM_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FFM_HOT
#endif

typedef float v4 __attribute__((vector_size(16), aligned(16), may_alias));

/* One valid token of a row: where its feature's (m, kp) block starts, its field, its value. */
typedef struct {
    int64_t off;
    int32_t field;
    float value;
} token;

/* ------------------------------------------------------------------ memory */

float *ffm_alloc(int64_t count) {
    size_t bytes = (size_t)(count > 0 ? count : 1) * sizeof(float);
    bytes = (bytes + FFM_ALIGN - 1) / FFM_ALIGN * FFM_ALIGN;
    void *p = NULL;
    if (posix_memalign(&p, FFM_ALIGN, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return (float *)p;
}

void ffm_free(float *p) { free(p); }

void ffm_fill(float *p, int64_t count, float value) {
    for (int64_t i = 0; i < count; ++i) p[i] = value;
}

void ffm_copy(float *dst, const float *src, int64_t count) {
    memcpy(dst, src, (size_t)count * sizeof(float));
}

int ffm_all_finite(const float *p, int64_t count) {
    int ok = 1;
    for (int64_t i = 0; i < count; ++i) ok &= isfinite(p[i]) ? 1 : 0;
    return ok;
}

int ffm_max_threads(void) {
#ifdef FFM_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int clamp_threads(int n_threads) {
#ifdef FFM_HAVE_OPENMP
    return n_threads < 1 ? 1 : n_threads;
#else
    (void)n_threads;
    return 1;
#endif
}

/* ------------------------------------------------------------------ random numbers */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t s[4];
} xoshiro;

static void rng_seed(xoshiro *rng, uint64_t seed) {
    for (int i = 0; i < 4; ++i) rng->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(xoshiro *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static inline float rng_uniform(xoshiro *rng) { /* [0, 1) with 24 random bits */
    return (float)(rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

static inline uint64_t rng_below(xoshiro *rng, uint64_t bound) { /* unbiased, Lemire */
    __uint128_t product = (__uint128_t)rng_next(rng) * bound;
    uint64_t low = (uint64_t)product;
    if (low < bound) {
        uint64_t threshold = -bound % bound;
        while (low < threshold) {
            product = (__uint128_t)rng_next(rng) * bound;
            low = (uint64_t)product;
        }
    }
    return (uint64_t)(product >> 64);
}

void ffm_init(ffm_model *model, uint64_t seed) {
    xoshiro rng;
    rng_seed(&rng, seed);
    const float coef = 1.0f / sqrtf((float)model->k);
    const int64_t vectors = model->n * model->m;
    for (int64_t v = 0; v < vectors; ++v) {
        float *w = model->w + v * model->kp;
        for (int64_t d = 0; d < model->kp; ++d) w[d] = d < model->k ? coef * rng_uniform(&rng) : 0.0f;
    }
    if (model->g) ffm_fill(model->g, vectors * model->kp, 1.0f);
}

void ffm_permutation(int64_t *order, int64_t count, uint64_t seed) {
    xoshiro rng;
    rng_seed(&rng, seed);
    for (int64_t i = 0; i < count; ++i) order[i] = i;
    for (int64_t i = count - 1; i > 0; --i) {
        int64_t j = (int64_t)rng_below(&rng, (uint64_t)i + 1);
        int64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ------------------------------------------------------------------ row helpers */

int64_t ffm_max_row_length(const ffm_rows *rows) {
    int64_t best = 0;
    for (int64_t i = 0; i < rows->n_rows; ++i) {
        int64_t len = rows->indptr[i + 1] - rows->indptr[i];
        if (len > best) best = len;
    }
    return best;
}

/* Valid tokens of one row into `out`; returns their count and sets *scale to r. */
static inline int64_t gather(const ffm_model *model, const int32_t *fields,
                             const int32_t *features, const float *values, int64_t len,
                             int normalize, token *out, float *scale) {
    const int64_t stride = model->m * model->kp;
    int64_t count = 0;
    float norm = 0.0f;
    for (int64_t p = 0; p < len; ++p) {
        /* Unsigned compares also drop negative ids read from an unchecked buffer. */
        uint64_t j = (uint64_t)(uint32_t)features[p], f = (uint64_t)(uint32_t)fields[p];
        if (j >= (uint64_t)model->n || f >= (uint64_t)model->m) continue;
        float v = values[p];
        out[count].off = (int64_t)j * stride;
        out[count].field = (int32_t)f;
        out[count].value = v;
        norm += v * v;
        ++count;
    }
    *scale = (normalize && norm > 0.0f) ? 1.0f / norm : 1.0f;
    return count;
}

static inline float hsum(v4 x) { return (x[0] + x[1]) + (x[2] + x[3]); }

static inline v4 rsqrt4(v4 x) {
#ifdef FFM_HAVE_SSE
    /* rsqrtps (12 bits) refined by one Newton step to ~22 bits: close to 1/sqrt at a
     * fraction of sqrt+div's cost. */
    v4 y = (v4)_mm_rsqrt_ps((__m128)x);
    return y * (1.5f - 0.5f * x * y * y);
#else
    v4 y;
    for (int d = 0; d < 4; ++d) y[d] = 1.0f / sqrtf(x[d]);
    return y;
#endif
}

/* sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> x_a x_b  (without r) */
static inline float pair_sum(const float *W, int64_t kp, const token *t, int64_t count) {
    v4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t a = 0; a < count; ++a) {
        const float *wa = W + t[a].off;
        const int64_t fa = (int64_t)t[a].field * kp;
        const float va = t[a].value;
        for (int64_t b = a + 1; b < count; ++b) {
            const v4 *w1 = (const v4 *)(wa + (int64_t)t[b].field * kp);
            const v4 *w2 = (const v4 *)(W + t[b].off + fa);
            const float v = va * t[b].value;
            for (int64_t d = 0; d < kp / 4; ++d) acc += w1[d] * w2[d] * v;
        }
    }
    return hsum(acc);
}

/* AdaGrad step on every pair of the row for dloss/dphi = kappa (kr = kappa * r). */
static inline void pair_update(float *W, float *G, int64_t kp, const token *t, int64_t count,
                               float kr, float eta, float lambda) {
    for (int64_t a = 0; a < count; ++a) {
        float *wa = W + t[a].off;
        float *ga = G + t[a].off;
        const int64_t fa = (int64_t)t[a].field * kp;
        const float va = kr * t[a].value;
        for (int64_t b = a + 1; b < count; ++b) {
            const int64_t fb = (int64_t)t[b].field * kp;
            v4 *w1 = (v4 *)(wa + fb), *g1 = (v4 *)(ga + fb);
            v4 *w2 = (v4 *)(W + t[b].off + fa), *g2 = (v4 *)(G + t[b].off + fa);
            const float kv = va * t[b].value;
            for (int64_t d = 0; d < kp / 4; ++d) {
                const v4 x1 = w1[d], x2 = w2[d];
                const v4 d1 = lambda * x1 + kv * x2;
                const v4 d2 = lambda * x2 + kv * x1;
                const v4 s1 = g1[d] + d1 * d1;
                const v4 s2 = g2[d] + d2 * d2;
                g1[d] = s1;
                g2[d] = s2;
                w1[d] = x1 - eta * d1 * rsqrt4(s1);
                w2[d] = x2 - eta * d2 * rsqrt4(s2);
            }
        }
    }
}

/* Stable log(1 + exp(-z)). */
static inline double log1pexp_neg(double z) {
    return z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z));
}

/* Bring the next row's feature blocks towards the cache while this row computes: rows hit
 * random features, so without this each block start is a cache miss. */
static inline void prefetch_row(const ffm_model *model, const ffm_rows *rows, int64_t row) {
    const int64_t stride = model->m * model->kp;
    const int64_t lines = (stride * (int64_t)sizeof(float) + 63) / 64;
    for (int64_t p = rows->indptr[row]; p < rows->indptr[row + 1]; ++p) {
        uint64_t j = (uint64_t)(uint32_t)rows->features[p];
        if (j >= (uint64_t)model->n) continue;
        const char *w = (const char *)(model->w + (int64_t)j * stride);
        const char *g = (const char *)(model->g + (int64_t)j * stride);
        for (int64_t l = 0; l < lines; ++l) {
            __builtin_prefetch(w + 64 * l, 1, 3);
            __builtin_prefetch(g + 64 * l, 1, 3);
        }
    }
}

/* ------------------------------------------------------------------ training */

FFM_HOT static double train_slice(ffm_model *model, const ffm_rows *rows, const int64_t *order,
                                  int64_t lo, int64_t hi, float eta, float lambda, int normalize,
                                  token *scratch) {
    double loss = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
        const int64_t row = order ? order[i] : i;
        if (i + 1 < hi) prefetch_row(model, rows, order ? order[i + 1] : i + 1);
        const int64_t begin = rows->indptr[row];
        float r;
        const int64_t count =
            gather(model, rows->fields + begin, rows->features + begin, rows->values + begin,
                   rows->indptr[row + 1] - begin, normalize, scratch, &r);
        const float t = r * pair_sum(model->w, model->kp, scratch, count);
        const float y = rows->labels[row] > 0.5f ? 1.0f : -1.0f;
        const float z = y * t;
        loss += log1pexp_neg(z);
        const float kappa = -y / (1.0f + expf(z)); /* d loss / d phi */
        pair_update(model->w, model->g, model->kp, scratch, count, kappa * r, eta, lambda);
    }
    return loss;
}

double ffm_train_epoch(ffm_model *model, const ffm_rows *rows, const int64_t *order, float eta,
                       float lambda, int normalize, int n_threads) {
    const int threads = clamp_threads(n_threads);
    const int64_t max_len = ffm_max_row_length(rows);
    double total = 0.0;
    int failed = 0;
#ifdef FFM_HAVE_OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : total)
#endif
    {
#ifdef FFM_HAVE_OPENMP
        const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int64_t tid = 0, nt = 1;
#endif
        /* Hogwild: threads update shared weights without locks; collisions are rare and
         * harmless for sparse rows (Recht et al. 2011). Contiguous slices keep one thread's
         * run identical to a single-threaded pass over the same slice. */
        const int64_t lo = rows->n_rows * tid / nt, hi = rows->n_rows * (tid + 1) / nt;
        token *scratch = (token *)malloc((size_t)(max_len > 0 ? max_len : 1) * sizeof(token));
        if (scratch == NULL) {
#ifdef FFM_HAVE_OPENMP
#pragma omp atomic write
#endif
            failed = 1;
        } else {
            total += train_slice(model, rows, order, lo, hi, eta, lambda, normalize, scratch);
        }
        free(scratch);
    }
    (void)threads;
    if (failed) return -1.0;
    return rows->n_rows > 0 ? total / (double)rows->n_rows : 0.0;
}

/* ------------------------------------------------------------------ prediction */

FFM_HOT static void margin_slice(const ffm_model *model, const ffm_rows *rows, int64_t lo,
                                 int64_t hi, int normalize, token *scratch, float *out) {
    for (int64_t row = lo; row < hi; ++row) {
        const int64_t begin = rows->indptr[row];
        float r;
        const int64_t count =
            gather(model, rows->fields + begin, rows->features + begin, rows->values + begin,
                   rows->indptr[row + 1] - begin, normalize, scratch, &r);
        out[row] = r * pair_sum(model->w, model->kp, scratch, count);
    }
}

int ffm_margins(const ffm_model *model, const ffm_rows *rows, int normalize, int n_threads,
                float *out) {
    const int threads = clamp_threads(n_threads);
    const int64_t max_len = ffm_max_row_length(rows);
    int failed = 0;
#ifdef FFM_HAVE_OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
#ifdef FFM_HAVE_OPENMP
        const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int64_t tid = 0, nt = 1;
#endif
        const int64_t lo = rows->n_rows * tid / nt, hi = rows->n_rows * (tid + 1) / nt;
        token *scratch = (token *)malloc((size_t)(max_len > 0 ? max_len : 1) * sizeof(token));
        if (scratch == NULL) {
#ifdef FFM_HAVE_OPENMP
#pragma omp atomic write
#endif
            failed = 1;
        } else {
            margin_slice(model, rows, lo, hi, normalize, scratch, out);
        }
        free(scratch);
    }
    (void)threads;
    return failed ? -1 : 0;
}

FFM_HOT float ffm_margin_one(const ffm_model *model, const int32_t *fields,
                             const int32_t *features, const float *values, int64_t len,
                             int normalize) {
    token stack[256];
    token *scratch = len <= 256 ? stack : (token *)malloc((size_t)len * sizeof(token));
    if (scratch == NULL) return NAN;
    float r;
    const int64_t count = gather(model, fields, features, values, len, normalize, scratch, &r);
    const float t = r * pair_sum(model->w, model->kp, scratch, count);
    if (scratch != stack) free(scratch);
    return t;
}

double ffm_logloss_from_margins(const float *margins, const float *labels, int64_t count) {
    double total = 0.0;
    for (int64_t i = 0; i < count; ++i) {
        const double y = labels[i] > 0.5f ? 1.0 : -1.0;
        total += log1pexp_neg(y * (double)margins[i]);
    }
    return count > 0 ? total / (double)count : 0.0;
}

void ffm_sigmoid_inplace(float *values, int64_t count) {
    for (int64_t i = 0; i < count; ++i) values[i] = 1.0f / (1.0f + expf(-values[i]));
}
