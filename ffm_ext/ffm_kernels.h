/* Field-aware Factorization Machine kernels (Juan, Zhuang, Chin, Lin, RecSys 2016).
 *
 *   phi(x) = sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> * x_a * x_b * r,   r = 1 / sum_a x_a^2 (or 1)
 *
 * trained with per-coordinate AdaGrad on the logistic loss plus L2, one row at a time (SGD).
 * Everything here runs without the Python GIL. Tokens whose feature is >= n or field >= m are
 * dropped from the row before anything else (they count neither in the pairs nor in r), in
 * training and in both prediction paths alike; the Python layer rejects fields >= m up front.
 */
#ifndef FFM_KERNELS_H
#define FFM_KERNELS_H

#include <stdint.h>

/* Latent vectors are padded to a multiple of this many floats (one SSE/NEON register); the
 * padding stays exactly 0 through training, so it never changes a dot product. */
#define FFM_LANES 4
#define FFM_ALIGN 64

typedef struct {
    int64_t n;  /* features */
    int64_t m;  /* fields */
    int64_t k;  /* latent factors */
    int64_t kp; /* k rounded up to FFM_LANES */
    /* Vector (j, f) starts at w + j * js + f * kp: a feature's vectors of consecutive fields are
     * adjacent, so in rows that have every field in order the hot loops move two (or four) of
     * them with one access. Serving layout: contiguous weights (js = m kp). Training layout:
     * per feature its m weight vectors, then their m accumulator vectors (js = 2 m kp,
     * g = w + m kp), so a feature's weights and accumulators share its block of pages. */
    int64_t js;
    float *w;
    float *g; /* AdaGrad accumulators (training layout), or NULL */
    /* Multi-threaded training only: features with a slot >= 0 live in this thread's replica
     * hot_w (slot-major, same block layout) instead of w; NULL everywhere else. */
    const int16_t *hot_slot;
    float *hot_w;
    /* Multi-threaded training: the replicated features, picked from the first epoch's rows and
     * kept until ffm_forget_hot (NULL until then; zero-initialise the struct). */
    struct ffm_hot_set *hot_set;
} ffm_model;

typedef struct {
    const int64_t *indptr; /* n_rows + 1 */
    const int32_t *fields;
    const int32_t *features;
    const float *values;
    const float *labels; /* 0/1; may be NULL for prediction */
    int64_t n_rows;
} ffm_rows;

/* Aligned float buffer, zero-filled when `zero` (free with ffm_free); NULL when out of memory. */
float *ffm_alloc(int64_t count, int zero);
void ffm_free(float *p);

/* Touches the pages of an ffm_alloc'd buffer of `count` floats on a low-priority thread,
 * keeping their content (other threads may write the buffer meanwhile), so that its first use
 * does not pay for fresh memory; NULL when the buffer is small or no thread started.
 * ffm_prefault_finish(job) completes the touching and joins the thread; call it before the
 * buffer is freed. */
typedef struct ffm_prefault ffm_prefault;
ffm_prefault *ffm_prefault_start(float *p, int64_t count);
void ffm_prefault_finish(ffm_prefault *job);

/* LIBFFM's initialisation: w ~ U(0, 1) / sqrt(k) on the k real lanes (padding 0); in the
 * training layout also every accumulator = 1. Same weights in either layout for a seed. */
void ffm_init(ffm_model *model, uint64_t seed);

/* Serving layout (blocks of m kp floats per feature) -> training layout (blocks of 2 m kp:
 * the weights, then accumulators = 1); `block` = m kp. */
void ffm_pack(float *state, const float *weights, int64_t features, int64_t block);
/* Training layout -> serving layout (weights only), on n_threads threads. */
void ffm_unpack(float *weights, const float *state, int64_t features, int64_t block,
                int n_threads);
void ffm_fill(float *p, int64_t count, float value);
/* Training layout -> serving layout in the same buffer (its first half), returning the second
 * half's memory to the kernel: stopping training needs no second copy of the weights. */
void ffm_compact_in_place(float *state, int64_t features, int64_t block);

/* Longest row, to size per-thread scratch. */
int64_t ffm_max_row_length(const ffm_rows *rows);

/* A uniformly shuffled permutation of 0..count-1 (Fisher-Yates on a seeded xoshiro256**). */
void ffm_permutation(int64_t *order, int64_t count, uint64_t seed);

/* The rows in `order`, copied contiguously into caller-provided arrays of the same sizes.
 * Training an epoch over such a copy streams its rows instead of jumping between them, which
 * is much faster than visiting the original rows in shuffled order, with identical results. */
void ffm_permute_rows(const ffm_rows *src, const int64_t *order, int64_t *indptr,
                      int32_t *fields, int32_t *features, float *values, float *labels,
                      int n_threads);

/* One SGD epoch over rows in `order` (NULL = 0..n_rows-1), lock-free across n_threads threads
 * (Hogwild, with per-thread replicas of the most frequent features; see ffm_kernels.c). One
 * thread is the exact sequential algorithm. Returns the mean training logloss measured before
 * each row's update, or a negative value when memory ran out. */
double ffm_train_epoch(ffm_model *model, const ffm_rows *rows, const int64_t *order, float eta,
                       float lambda, int normalize, int n_threads);

/* Frees what multi-threaded training keeps between epochs (call when training stops, or
 * before training on different rows). */
void ffm_forget_hot(ffm_model *model);

/* Margins phi(x) for every row (n_threads threads). Returns 0, or -1 when out of memory. */
int ffm_margins(const ffm_model *model, const ffm_rows *rows, int normalize, int n_threads,
                float *out);

/* Mean logistic loss of margins against 0/1 labels, computed stably from the margin. */
double ffm_logloss_from_margins(const float *margins, const float *labels, int64_t count);

/* In place: margins -> probabilities. */
void ffm_sigmoid_inplace(float *values, int64_t count);

/* Margin of one row given as parallel arrays (the serving path). */
float ffm_margin_one(const ffm_model *model, const int32_t *fields, const int32_t *features,
                     const float *values, int64_t len, int normalize);

/* 1 when every value is finite. */
int ffm_all_finite(const float *p, int64_t count);

/* A dataset's O(nnz) checks in one read of its token arrays (a loaded one is memory-mapped:
 * each extra pass over it costs as much as the checks): the range of its field and feature
 * ids and whether a value is NaN or infinite, on up to n_threads threads. `count` > 0. */
typedef struct {
    int32_t field_min, field_max, feature_min, feature_max;
    int nonfinite;
} ffm_token_scan;
void ffm_scan_tokens(const int32_t *fields, const int32_t *features, const float *values,
                     int64_t count, int n_threads, ffm_token_scan *out);

/* Copy the k real lanes of every (feature, field) vector between padded buffers. */
void ffm_copy(float *dst, const float *src, int64_t count);

/* Which hot-loop build runs on this CPU: "avx2" or "generic". */
const char *ffm_isa(void);

/* out[i] = eta / sqrt(x[i]) as this CPU's build computes AdaGrad's step sizes: the SIMD builds
 * use the CPU's reciprocal square root estimate (for the reference tests). */
void ffm_eta_rsqrt(const float *x, float *out, int64_t n, float eta);

/* Number of OpenMP threads available (1 without OpenMP). */
int ffm_max_threads(void);

#endif
