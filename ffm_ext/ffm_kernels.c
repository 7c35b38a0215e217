/* FFM training and prediction kernels; see ffm_kernels.h for the model. */
#define _GNU_SOURCE /* madvise */
#include "ffm_kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifdef FFM_HAVE_OPENMP
#include <omp.h>
#endif

#include "ffm_hot.h"

/* ------------------------------------------------------------------ memory */

#define FFM_HUGE_PAGE ((size_t)2 << 20)

float *ffm_alloc(int64_t count, int zero) {
    size_t bytes = (size_t)(count > 0 ? count : 1) * sizeof(float);
    /* Rows hit features at random all over the model: on 4 KiB pages nearly every feature
     * costs a TLB miss. Large buffers ask for transparent huge pages (2 MiB) instead. */
    const int huge = bytes >= 2 * FFM_HUGE_PAGE;
    const size_t align = huge ? FFM_HUGE_PAGE : FFM_ALIGN;
    bytes = (bytes + align - 1) / align * align;
    void *p = NULL;
    if (posix_memalign(&p, align, bytes) != 0) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    if (zero) memset(p, 0, bytes);
    return (float *)p;
}

void ffm_free(float *p) { free(p); }

/* Fresh memory costs most at its first touch (on this project's VMs several times a later
 * one): a fit's snapshot of the best weights (187 MB on the reference workload) paid 0.4-0.5 s
 * in its first copy. A low-priority thread touches the buffer during the first epoch instead,
 * 2 MiB at a time, keeping its content (so it may run while another thread fills the buffer);
 * whoever needs the buffer first takes the chunks left and joins it. */
#define PREFAULT_CHUNK FFM_HUGE_PAGE

struct ffm_prefault {
    pthread_t thread;
    char *begin;
    int64_t chunks, next; /* next: the first chunk no thread has claimed */
};

static void prefault_chunks(ffm_prefault *job) {
    for (;;) {
        const int64_t c = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (c >= job->chunks) return;
        char *p = job->begin + c * (int64_t)PREFAULT_CHUNK;
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
        if (madvise(p, PREFAULT_CHUNK, MADV_POPULATE_WRITE) == 0) continue; /* Linux >= 5.14 */
#endif
        /* A write fault that keeps the content, also under another thread's writes. */
        for (size_t at = 0; at < PREFAULT_CHUNK; at += 4096)
            __atomic_fetch_or(p + at, 0, __ATOMIC_RELAXED);
    }
}

static void *prefault_main(void *arg) {
#if defined(__linux__) && defined(SYS_gettid)
    /* Only spare CPU time: a training thread on the same CPU must not wait for this one. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
#endif
    prefault_chunks(arg);
    return NULL;
}

ffm_prefault *ffm_prefault_start(float *p, int64_t count) {
    const size_t bytes = (size_t)(count > 0 ? count : 0) * sizeof(float);
    if (bytes < 2 * FFM_HUGE_PAGE) return NULL; /* small: not worth a thread */
    ffm_prefault *job = malloc(sizeof(ffm_prefault));
    if (job == NULL) return NULL;
    /* ffm_alloc gave such a buffer 2 MiB alignment and a size rounded up to 2 MiB. */
    *job = (ffm_prefault){.begin = (char *)p,
                          .chunks = (int64_t)((bytes + PREFAULT_CHUNK - 1) / PREFAULT_CHUNK),
                          .next = 0};
    if (pthread_create(&job->thread, NULL, prefault_main, job) != 0) {
        free(job);
        return NULL;
    }
    return job;
}

void ffm_prefault_finish(ffm_prefault *job) {
    if (job == NULL) return;
    prefault_chunks(job); /* the chunks the thread has not reached yet */
    pthread_join(job->thread, NULL);
    free(job);
}

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

/* Runs body(ctx, tid, nt) for tid = 0..nt-1 on nt threads: the caller is thread 0, the others
 * are started for this call and joined. Not OpenMP: libgomp's idle threads spin for about
 * 10 ms after every parallel region (and its locks spin before they sleep), which on a busy
 * 2-CPU machine takes the CPU from the thread still working; on a 70k-row set, whose epochs
 * take 20 ms, 2 threads used 1.7x the CPU time of one. Joined threads wait in the kernel.
 * A thread that cannot be started has its body run by the caller, after its own. */
typedef void (*thread_body)(void *ctx, int tid, int nt);

typedef struct {
    thread_body body;
    void *ctx;
    int tid, nt;
} thread_call;

static void *thread_main(void *arg) {
    const thread_call *call = arg;
    call->body(call->ctx, call->tid, call->nt);
    return NULL;
}

static void run_threads(thread_body body, void *ctx, int nt) {
    enum { MAX_THREADS = 256 };
    if (nt > MAX_THREADS) nt = MAX_THREADS;
    pthread_t ids[MAX_THREADS];
    thread_call calls[MAX_THREADS];
    int started[MAX_THREADS];
    for (int t = 1; t < nt; ++t) {
        calls[t] = (thread_call){body, ctx, t, nt};
        started[t] = pthread_create(&ids[t], NULL, thread_main, &calls[t]) == 0;
    }
    body(ctx, 0, nt);
    for (int t = 1; t < nt; ++t) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            body(ctx, t, nt);
    }
}

/* ------------------------------------------------------------------ checks */

typedef struct {
    const int32_t *fields, *features;
    const float *values;
    int64_t count;
    ffm_token_scan *parts; /* one per thread */
} scan_job;

static void scan_body(void *ctx, int tid, int nt) {
    const scan_job *job = ctx;
    const int64_t lo = job->count * tid / nt, hi = job->count * (tid + 1) / nt;
    const int32_t *fields = job->fields, *features = job->features;
    int32_t fmin = fields[lo], fmax = fields[lo], jmin = features[lo], jmax = features[lo];
    uint32_t nonfinite = 0;
    for (int64_t i = lo; i < hi; ++i) {
        const int32_t f = fields[i], j = features[i];
        uint32_t bits;
        memcpy(&bits, &job->values[i], sizeof bits);
        fmin = f < fmin ? f : fmin;
        fmax = f > fmax ? f : fmax;
        jmin = j < jmin ? j : jmin;
        jmax = j > jmax ? j : jmax;
        nonfinite |= (bits & 0x7f800000u) == 0x7f800000u; /* exponent all ones: inf or NaN */
    }
    job->parts[tid] = (ffm_token_scan){fmin, fmax, jmin, jmax, nonfinite != 0};
}

void ffm_scan_tokens(const int32_t *fields, const int32_t *features, const float *values,
                     int64_t count, int n_threads, ffm_token_scan *out) {
    /* Each thread takes a share of at least this many tokens (12 MB): below it, starting a
     * thread costs more than the share's page faults and memory reads. */
    enum { MIN_SHARE = 1 << 20, MAX_SCAN_THREADS = 64 };
    int nt = clamp_threads(n_threads);
    if (nt > MAX_SCAN_THREADS) nt = MAX_SCAN_THREADS;
    if (count / nt < MIN_SHARE) nt = count / MIN_SHARE > 1 ? (int)(count / MIN_SHARE) : 1;
    ffm_token_scan parts[MAX_SCAN_THREADS];
    scan_job job = {fields, features, values, count, parts};
    run_threads(scan_body, &job, nt);
    *out = parts[0];
    for (int t = 1; t < nt; ++t) {
        const ffm_token_scan *p = &parts[t];
        out->field_min = p->field_min < out->field_min ? p->field_min : out->field_min;
        out->field_max = p->field_max > out->field_max ? p->field_max : out->field_max;
        out->feature_min = p->feature_min < out->feature_min ? p->feature_min : out->feature_min;
        out->feature_max = p->feature_max > out->feature_max ? p->feature_max : out->feature_max;
        out->nonfinite |= p->nonfinite;
    }
}

/* ------------------------------------------------------------------ layouts */

typedef struct {
    float *weights;
    const float *state;
    int64_t features, block;
} unpack_job;

static void unpack_body(void *ctx, int tid, int nt) {
    const unpack_job *job = ctx;
    const int64_t lo = job->features * tid / nt, hi = job->features * (tid + 1) / nt;
    for (int64_t j = lo; j < hi; ++j)
        memcpy(job->weights + j * job->block, job->state + 2 * j * job->block,
               (size_t)job->block * sizeof(float));
}

void ffm_unpack(float *weights, const float *state, int64_t features, int64_t block,
                int n_threads) {
    /* A fit snapshots its best weights after every improving epoch (187 MB on the reference
     * workload): serial, that copy was 8% of a 2-thread epoch. Each thread copies one slice. */
    unpack_job job = {weights, state, features, block};
    run_threads(unpack_body, &job, clamp_threads(n_threads));
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
    for (int64_t j = 0; j < model->n; ++j)
        for (int64_t f = 0; f < model->m; ++f) {
            float *w = model->w + j * model->js + f * model->kp;
            for (int64_t d = 0; d < model->kp; ++d)
                w[d] = d < model->k ? coef * rng_uniform(&rng) : 0.0f;
            if (model->g) ffm_fill(model->g + j * model->js + f * model->kp, model->kp, 1.0f);
        }
}

void ffm_pack(float *state, const float *weights, int64_t features, int64_t block) {
    for (int64_t j = 0; j < features; ++j) {
        memcpy(state + 2 * j * block, weights + j * block, (size_t)block * sizeof(float));
        ffm_fill(state + 2 * j * block + block, block, 1.0f);
    }
}

void ffm_compact_in_place(float *state, int64_t features, int64_t block) {
    /* Feature j's weights move from 2 j block down to j block: front to back, never onto ones
     * not yet moved. */
    for (int64_t j = 1; j < features; ++j)
        memmove(state + j * block, state + 2 * j * block, (size_t)block * sizeof(float));
#if defined(__linux__) && defined(MADV_DONTNEED)
    /* Hand the second half's whole pages back to the kernel (they read as zeros if touched). */
    const uintptr_t page = 4096;
    const uintptr_t from = ((uintptr_t)(state + features * block) + page - 1) / page * page;
    const uintptr_t to = (uintptr_t)(state + 2 * features * block) / page * page;
    if (to > from) madvise((void *)from, to - from, MADV_DONTNEED);
#endif
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

/* ------------------------------------------------------------------ dispatch */

typedef double (*train_slice_fn)(ffm_model *, const ffm_rows *, const int64_t *, int64_t, int64_t,
                                 float, float, int, ffm_token *, int64_t *);
typedef void (*margin_slice_fn)(const ffm_model *, const ffm_rows *, int64_t, int64_t, int,
                                ffm_token *, float *);
typedef float (*margin_tokens_fn)(const ffm_model *, const int32_t *, const int32_t *,
                                  const float *, int64_t, int, ffm_token *);

enum { ISA_GENERIC, ISA_AVX2_LANES, ISA_AVX2, ISA_AVX512 };

/* The fastest build this CPU runs; FFM_ISA=generic|avx2_lanes|avx2|avx512 picks another (the
 * best one the CPU runs, up to that), for tests and for comparing builds. */
static int cpu_isa(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    int best = ISA_GENERIC, isa;
#if defined(FFM_HAVE_AVX2_BUILD) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = ISA_AVX2;
    if (best == ISA_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        best = ISA_AVX512;
    isa = best;
    /* AMD's AVX-512 (Zen 4) runs 512-bit operations as two 256-bit halves, so the AVX-512
     * build's four-pair lane inserts and extracts cost more than they save: on the reference
     * workload its epochs took 15-20% more CPU time than the AVX2 build's, and 24% more since
     * the AVX2 build updates four pairs with 32-byte accesses (docs/performance.md). */
    if (isa == ISA_AVX512 && __builtin_cpu_is("amd")) isa = ISA_AVX2;
    /* Zen 1 runs 256-bit operations as two halves and vperm2f128 as eight micro-ops: the build
     * that moves 128-bit lanes with loads and stores took 8% less time for a 4-epoch fit at 1
     * thread and 6% at 2 (docs/performance.md, session 10). */
    if (isa == ISA_AVX2 && __builtin_cpu_is("znver1")) isa = ISA_AVX2_LANES;
#else
    isa = best;
#endif
    const char *pick = getenv("FFM_ISA");
    if (pick && strcmp(pick, "generic") == 0) isa = ISA_GENERIC;
    if (pick && strcmp(pick, "avx2_lanes") == 0) isa = best < ISA_AVX2 ? best : ISA_AVX2_LANES;
    if (pick && strcmp(pick, "avx2") == 0) isa = best < ISA_AVX2 ? best : ISA_AVX2;
    if (pick && strcmp(pick, "avx512") == 0) isa = best;
    cached = isa;
    return isa;
}

const char *ffm_isa(void) {
    static const char *names[] = {"generic", "avx2_lanes", "avx2", "avx512"};
    return names[cpu_isa()];
}

#ifdef FFM_HAVE_AVX2_BUILD
#define FFM_PICK(fn)                                                                               \
    (cpu_isa() == ISA_AVX512         ? fn##_avx512                                                 \
     : cpu_isa() == ISA_AVX2         ? fn##_avx2                                                   \
     : cpu_isa() == ISA_AVX2_LANES   ? fn##_avx2_lanes                                             \
                                     : fn##_generic)
#else
#define FFM_PICK(fn) fn##_generic
#endif

static train_slice_fn train_slice(void) { return FFM_PICK(ffm_train_slice); }
static margin_slice_fn margin_slice(void) { return FFM_PICK(ffm_margin_slice); }
static margin_tokens_fn margin_tokens(void) { return FFM_PICK(ffm_margin_tokens); }

void ffm_eta_rsqrt(const float *x, float *out, int64_t n, float eta) {
    FFM_PICK(ffm_eta_rsqrt)(x, out, n, eta);
}

/* ------------------------------------------------------------------ epochs and batches */

void ffm_permute_rows(const ffm_rows *src, const int64_t *order, int64_t *indptr,
                      int32_t *fields, int32_t *features, float *values, float *labels,
                      int n_threads) {
    const int64_t n_rows = src->n_rows;
    indptr[0] = 0;
    for (int64_t i = 0; i < n_rows; ++i) {
        const int64_t row = order[i];
        indptr[i + 1] = indptr[i] + (src->indptr[row + 1] - src->indptr[row]);
        labels[i] = src->labels[row];
    }
#ifdef FFM_HAVE_OPENMP
#pragma omp parallel for num_threads(clamp_threads(n_threads)) schedule(static)
#else
    (void)n_threads;
#endif
    for (int64_t i = 0; i < n_rows; ++i) {
        const int64_t from = src->indptr[order[i]], len = indptr[i + 1] - indptr[i];
        memcpy(fields + indptr[i], src->fields + from, (size_t)len * sizeof(int32_t));
        memcpy(features + indptr[i], src->features + from, (size_t)len * sizeof(int32_t));
        memcpy(values + indptr[i], src->values + from, (size_t)len * sizeof(float));
    }
}

int64_t ffm_max_row_length(const ffm_rows *rows) {
    int64_t best = 0;
    for (int64_t i = 0; i < rows->n_rows; ++i) {
        int64_t len = rows->indptr[i + 1] - rows->indptr[i];
        if (len > best) best = len;
    }
    return best;
}

static void *thread_buffer(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, 64, (bytes + 63) / 64 * 64) == 0 ? p : NULL;
}

/* Rows in shuffled order sit all over the dataset: training straight from it waits on a cache
 * miss for every row. A thread therefore copies the next STAGE_ROWS rows of the order into its
 * own small buffer (a tight loop of independent loads, which the CPU overlaps) and trains on
 * that contiguous copy. Same rows, same order, same arithmetic: the results are those of
 * training over a full shuffled copy of the dataset, without the memory for one. */
#define STAGE_ROWS 256

typedef struct {
    ffm_rows rows; /* over the buffers below */
    int64_t *indptr;
    int32_t *fields, *features;
    float *values, *labels;
} stage;

static void stage_free(stage *st) {
    free(st->indptr);
    free(st->fields);
    free(st->features);
    free(st->values);
    free(st->labels);
}

/* Buffers for STAGE_ROWS rows of at most max_len tokens; 0 when out of memory. */
static int stage_alloc(stage *st, int64_t max_len) {
    const size_t tokens = (size_t)STAGE_ROWS * (size_t)(max_len > 0 ? max_len : 1);
    st->indptr = thread_buffer((STAGE_ROWS + 1) * sizeof(int64_t));
    st->fields = thread_buffer(tokens * sizeof(int32_t));
    st->features = thread_buffer(tokens * sizeof(int32_t));
    st->values = thread_buffer(tokens * sizeof(float));
    st->labels = thread_buffer(STAGE_ROWS * sizeof(float));
    return st->indptr && st->fields && st->features && st->values && st->labels;
}

/* Copies the rows order[a..b) (b - a <= STAGE_ROWS) into the stage; returns its rows. */
static const ffm_rows *stage_rows(stage *st, const ffm_rows *src, const int64_t *order, int64_t a,
                                  int64_t b) {
    int64_t *indptr = st->indptr;
    indptr[0] = 0;
    for (int64_t i = a; i < b; ++i) {
        const int64_t row = order[i], from = src->indptr[row];
        const int64_t len = src->indptr[row + 1] - from, at = indptr[i - a];
        memcpy(st->fields + at, src->fields + from, (size_t)len * sizeof(int32_t));
        memcpy(st->features + at, src->features + from, (size_t)len * sizeof(int32_t));
        memcpy(st->values + at, src->values + from, (size_t)len * sizeof(float));
        st->labels[i - a] = src->labels[row];
        indptr[i - a + 1] = at + len;
    }
    st->rows = (ffm_rows){indptr, st->fields, st->features, st->values, st->labels, b - a};
    return &st->rows;
}

/* One thread's SGD over order[lo..hi), STAGE_ROWS rows at a time through a stage. */
static double train_staged(train_slice_fn run, ffm_model *model, const ffm_rows *rows,
                           const int64_t *order, float eta, float lambda, int normalize) {
    const int64_t n_rows = rows->n_rows, max_len = ffm_max_row_length(rows);
    stage st = {0};
    ffm_token *scratch = thread_buffer((size_t)(max_len + 1) * sizeof(ffm_token));
    int64_t *stamp = thread_buffer((size_t)model->m * sizeof(int64_t));
    double total = -1.0;
    if (scratch != NULL && stamp != NULL && stage_alloc(&st, max_len)) {
        total = 0.0;
        for (int64_t a = 0; a < n_rows; a += STAGE_ROWS) {
            const int64_t b = a + STAGE_ROWS < n_rows ? a + STAGE_ROWS : n_rows;
            const ffm_rows *staged = stage_rows(&st, rows, order, a, b);
            total += run(model, staged, NULL, 0, b - a, eta, lambda, normalize, scratch, stamp);
        }
    }
    stage_free(&st);
    free(scratch);
    free(stamp);
    return total;
}

/* One pass over the rows: training when `train` is set, else margins into `out`. */
typedef struct {
    ffm_model *model;
    const ffm_rows *rows;
    const int64_t *order;
    float eta, lambda;
    int normalize;
    train_slice_fn train;
    margin_slice_fn margins;
    float *out;
} pass;

typedef struct {
    const pass *job;
    int64_t max_len;
    double *totals; /* per thread */
    int failed;
} pass_run;

static void pass_body(void *ctx, int tid, int nt) {
    pass_run *run = ctx;
    const pass *job = run->job;
    const int64_t n_rows = job->rows->n_rows, max_len = run->max_len;
    /* Training is Hogwild (Recht et al. 2011): threads update shared weights without locks;
     * rows are sparse, so collisions are rare and harmless. Contiguous slices keep one
     * thread's run identical to a single-threaded pass over the same rows. */
    const int64_t lo = n_rows * tid / nt, hi = n_rows * (tid + 1) / nt;
    /* Per-thread buffers on their own cache lines: written every row, they must not share a
     * line with the other thread's (false sharing). */
    ffm_token *scratch = thread_buffer((size_t)(max_len > 0 ? max_len : 1) * sizeof(ffm_token));
    int64_t *stamp = thread_buffer((size_t)job->model->m * sizeof(int64_t));
    if (scratch == NULL || stamp == NULL) {
        __atomic_store_n(&run->failed, 1, __ATOMIC_RELAXED);
    } else if (job->train) {
        run->totals[tid] = job->train(job->model, job->rows, job->order, lo, hi, job->eta,
                                      job->lambda, job->normalize, scratch, stamp);
    } else {
        job->margins(job->model, job->rows, lo, hi, job->normalize, scratch, job->out);
    }
    free(scratch);
    free(stamp);
}

/* Runs a pass on one contiguous slice of the rows per thread, each thread with its own scratch.
 * Returns the summed training loss (0 for margins), or -1 when scratch memory ran out. */
static double run_pass(const pass *job, int n_threads) {
    const int threads = clamp_threads(n_threads);
    double totals[256] = {0};
    pass_run run = {job, ffm_max_row_length(job->rows), totals, 0};
    run_threads(pass_body, &run, threads);
    double total = 0.0;
    for (int t = 0; t < threads && t < 256; ++t) total += totals[t];
    return run.failed ? -1.0 : total;
}

/* Hogwild across threads loses to cache-line ping-pong on the hottest features: every row
 * writes the blocks of the numeric fields' few values and the categorical fields' top values,
 * and so does the other thread (2 threads ran slower than 1). With several threads, each
 * trains on a private replica of the most frequent features' blocks (up to HOT_MAX, each in at
 * least 1/HOT_MIN_SHARE of the rows) and now and then folds what it changed since its last
 * fold into the shared blocks (w += replica - base, accumulators alike) and takes the merged
 * values back. Folds are asynchronous, one thread at a time under a lock: no barrier, so no
 * thread waits for a slower (or descheduled) one. The other features stay plain Hogwild. One
 * thread never takes this path, so its results stay exactly LIBFFM's algorithm. */
#define SYNC_ROWS 256      /* rows per window; the hottest features fold after every window */
/* Replicated features, at most. The features just below the 1,024 hottest still cost a lot as
 * plain Hogwild: on the reference workload, 2,037 replicated features (all in 1/1,024 of the rows)
 * took a 2-thread epoch 16-20% less CPU than 1,024 when the vCPUs were slow to pass cache lines
 * (x1.41 against x1.16), and the same (x1.85 against x1.81) when they were quick. 4,992 (1/4,096)
 * gained more in the slow phase (x1.56) but lost in the quick one (x1.73): three copies of each
 * replicated block (shared, replica, base) crowd the caches. Best validation logloss over 6 seeds:
 * +0.0008 against 1 thread, +0.0007 with 1,024. */
#define HOT_MAX 2048
#define HOT_MIN_SHARE 1024 /* a replicated feature is in at least 1/HOT_MIN_SHARE of the rows */
#define HOT_SAMPLE 8       /* features are counted in every HOT_SAMPLE-th row */
#define REPLICA_BYTES ((int64_t)8 << 20) /* per thread, replica and base together */
/* A feature in share s of the rows folds every SYNC_ROWS * 2^t rows: the longest such period
 * (t <= MAX_TIER) in which one thread updates it at most about FOLD_UPDATES times. So every
 * replicated feature is about equally stale, and folds cost in proportion to the updates, not
 * to the number of replicated features. On the reference workload (200k rows, 2 threads),
 * the best validation logloss over 6 seeds was 0.00055 above one thread's with 32 updates per
 * fold (at most 0.00074) and 0.00085 with 64 (at most 0.00116; benchmark runs read up to
 * 0.0018, one fit 0.0029, against a limit of 0.002), for 3% (within the noise) to 5% faster
 * 2-thread epochs; 128, or the hottest features folding every 512 rows, lost 0.0012 to 0.0017.
 * The limit's margin wins. */
#define FOLD_UPDATES 32
#define MAX_TIER 6

static int by_count_desc(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

typedef struct ffm_hot_set {
    int64_t n_rows, nnz;    /* of the rows it was picked from */
    int16_t *slot;          /* per feature: its replica slot, or -1 */
    int64_t *feature;       /* per slot, hottest first */
    int64_t count;          /* slots used */
    int64_t tier_end[MAX_TIER + 1]; /* tier t is the slots [tier_end[t-1], tier_end[t]) */
    /* Per thread: its replica, then the shared values the replica last took (its base). Kept
     * from epoch to epoch: allocated afresh, the kernel faulted in and zeroed its pages every
     * epoch (6% of a 2-thread epoch's CPU on the reference workload). */
    float *replicas;
    int replica_threads;
} ffm_hot_set;

void ffm_forget_hot(ffm_model *model) {
    ffm_hot_set *hot = model->hot_set;
    if (hot == NULL) return;
    free(hot->slot);
    free(hot->feature);
    ffm_free(hot->replicas);
    free(hot);
    model->hot_set = NULL;
}

/* Picks the replicated features of these rows and their fold tiers; 0 when out of memory. */
static int hot_set_pick(ffm_hot_set *hot, const ffm_model *model, const ffm_rows *rows) {
    const int64_t limit_by_bytes = REPLICA_BYTES / (2 * model->js * (int64_t)sizeof(float));
    const int64_t limit = limit_by_bytes < HOT_MAX ? limit_by_bytes : HOT_MAX;
    hot->n_rows = rows->n_rows;
    hot->nnz = rows->indptr[rows->n_rows];
    hot->count = 0;
    hot->slot = malloc((size_t)model->n * sizeof(int16_t));
    hot->feature = malloc((size_t)(limit > 0 ? limit : 1) * sizeof(int64_t));
    int32_t *count = calloc((size_t)model->n, sizeof(int32_t));
    int64_t *ranked = NULL;
    int ok = 0;
    if (hot->slot == NULL || hot->feature == NULL || count == NULL) goto done;
    /* A sample of the rows ranks the heads well enough, at a fraction of a full count. */
    int64_t sampled = 0;
    for (int64_t i = 0; i < rows->n_rows; i += HOT_SAMPLE, ++sampled) {
        for (int64_t p = rows->indptr[i]; p < rows->indptr[i + 1]; ++p) {
            const uint64_t j = (uint64_t)(uint32_t)rows->features[p];
            if (j < (uint64_t)model->n && count[j] < INT32_MAX) ++count[j];
        }
    }
    const int64_t threshold = sampled / HOT_MIN_SHARE > 1 ? sampled / HOT_MIN_SHARE : 2;
    int64_t candidates = 0;
    for (int64_t j = 0; j < model->n; ++j) {
        hot->slot[j] = -1;
        if (count[j] >= threshold) ++candidates;
    }
    ranked = malloc((size_t)(candidates > 0 ? candidates : 1) * sizeof(int64_t));
    if (ranked == NULL) goto done;
    for (int64_t j = 0, c = 0; j < model->n; ++j)
        if (count[j] >= threshold) ranked[c++] = ((int64_t)count[j] << 32) | (int64_t)j;
    qsort(ranked, (size_t)candidates, sizeof(int64_t), by_count_desc);
    hot->count = candidates < limit ? candidates : limit;
    for (int64_t h = 0; h < hot->count; ++h) {
        const int64_t j = ranked[h] & 0xFFFFFFFF;
        hot->slot[j] = (int16_t)h;
        hot->feature[h] = j;
    }
    for (int64_t t = 0, h = 0; t <= MAX_TIER; ++t) {
        /* Slot h stays in tier t while one thread expects more than FOLD_UPDATES updates of
         * it in tier t+1's period: sampled count * period > FOLD_UPDATES * sampled rows. */
        while (h < hot->count && (t == MAX_TIER || (ranked[h] >> 32) * (SYNC_ROWS << (t + 1)) >
                                                       FOLD_UPDATES * sampled))
            ++h;
        hot->tier_end[t] = h;
    }
    ok = 1;
done:
    free(ranked);
    free(count);
    return ok;
}

typedef pthread_mutex_t fold_lock;
static void fold_lock_init(fold_lock *lock) { pthread_mutex_init(lock, NULL); }
static void fold_lock_set(fold_lock *lock) { pthread_mutex_lock(lock); }
static int fold_lock_try(fold_lock *lock) { return pthread_mutex_trylock(lock) == 0; }
static void fold_lock_unset(fold_lock *lock) { pthread_mutex_unlock(lock); }
static void fold_lock_destroy(fold_lock *lock) { pthread_mutex_destroy(lock); }

/* The shared blocks of a fold sit at random in the model, last written by the other thread, so
 * no hardware prefetcher sees them coming: each line's transfer between the vCPUs stalled the
 * fold on its own. Asking for the blocks FOLD_PREFETCH slots ahead overlaps them; a 2-thread
 * epoch took 4% less CPU, on both workloads (2, 4 and 8 ahead alike). */
#define FOLD_PREFETCH 4

static inline void prefetch_block(const float *block, int64_t floats) {
    const char *at = (const char *)block;
    const int64_t bytes = floats * (int64_t)sizeof(float);
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(at + b, 1, 3);
}

/* Folds the first `slots` slots of one thread's replica: shared += replica - base, then
 * replica = base = shared. Under the fold lock, so no fold is lost to another's. Without
 * `wait`, a fold finding the lock taken returns 0 at once and is left for a later window:
 * the thread trains on instead of waiting, for as long as the lock's holder may be
 * descheduled on a busy machine. */
static int fold_replica(ffm_model *model, const ffm_hot_set *hot, int64_t slots, float *mine,
                        float *base, fold_lock *lock, int wait) {
    const int64_t js = model->js;
    if (wait)
        fold_lock_set(lock);
    else if (!fold_lock_try(lock))
        return 0;
    for (int64_t h = 0; h < slots; ++h) {
        if (h + FOLD_PREFETCH < slots)
            prefetch_block(model->w + hot->feature[h + FOLD_PREFETCH] * js, js);
        float *restrict shared = model->w + hot->feature[h] * js;
        float *restrict rep = mine + h * js, *restrict was = base + h * js;
        for (int64_t i = 0; i < js; ++i) {
            const float merged = shared[i] + (rep[i] - was[i]);
            shared[i] = merged;
            rep[i] = merged;
            was[i] = merged;
        }
    }
    fold_lock_unset(lock);
    return 1;
}

/* A thread's replica and base start as copies of the shared blocks. */
static void load_replica(const ffm_model *model, const ffm_hot_set *hot, float *mine, float *base,
                         fold_lock *lock) {
    const int64_t js = model->js;
    fold_lock_set(lock); /* another thread may already be folding */
    for (int64_t h = 0; h < hot->count; ++h)
        memcpy(mine + h * js, model->w + hot->feature[h] * js, (size_t)js * sizeof(float));
    fold_lock_unset(lock);
    memcpy(base, mine, (size_t)(hot->count * js) * sizeof(float));
}

typedef struct {
    ffm_model *model;
    const ffm_rows *rows;
    const int64_t *order;
    float eta, lambda;
    int normalize;
    train_slice_fn run;
    const ffm_hot_set *hot;
    float *replicas;
    ffm_token **scratch;
    int64_t **stamps;
    stage *stages;
    int64_t n_windows, next_window;
    double *totals; /* per thread */
    fold_lock lock;
} replicated_epoch;

static void replicated_body(void *ctx, int tid, int nt) {
    replicated_epoch *job = ctx;
    (void)nt;
    ffm_model *model = job->model;
    const ffm_hot_set *hot = job->hot;
    const ffm_rows *rows = job->rows;
    const int64_t n_hot = hot->count, js = model->js, n_rows = rows->n_rows;
    float *mine = job->replicas ? job->replicas + 2 * tid * n_hot * js : NULL;
    float *base = mine ? mine + n_hot * js : NULL;
    ffm_model local = *model;
    local.hot_slot = n_hot > 0 ? hot->slot : NULL;
    local.hot_w = mine;
    if (n_hot > 0) load_replica(model, hot, mine, base, &job->lock);
    double total = 0.0;
    /* Windows are handed out in turn rather than one slice per thread: a thread slowed down
     * (by another process on its core, say) takes fewer of them instead of holding the others
     * up at the end. */
    int pending = -1; /* deepest tier whose fold found the lock taken */
    for (int64_t done = 1;; ++done) {
        const int64_t window = __atomic_fetch_add(&job->next_window, 1, __ATOMIC_RELAXED);
        if (window >= job->n_windows) break;
        const int64_t a = window * SYNC_ROWS;
        const int64_t b = a + SYNC_ROWS < n_rows ? a + SYNC_ROWS : n_rows;
        if (job->stages != NULL)
            total += job->run(&local, stage_rows(&job->stages[tid], rows, job->order, a, b), NULL,
                              0, b - a, job->eta, job->lambda, job->normalize, job->scratch[tid],
                              job->stamps[tid]);
        else
            total += job->run(&local, rows, NULL, a, b, job->eta, job->lambda, job->normalize,
                              job->scratch[tid], job->stamps[tid]);
        if (n_hot == 0) continue;
        /* After this thread's window number `done`, the tiers t with 2^t dividing it, and any
         * deeper one whose fold found the lock taken. */
        const int tz = __builtin_ctzll((unsigned long long)done);
        const int tier = tz < MAX_TIER ? (tz > pending ? tz : pending) : MAX_TIER;
        pending = fold_replica(model, hot, hot->tier_end[tier], mine, base, &job->lock, 0)
                      ? -1
                      : tier;
    }
    if (n_hot > 0) fold_replica(model, hot, n_hot, mine, base, &job->lock, 1);
    job->totals[tid] = total;
}

static double train_replicated(ffm_model *model, const ffm_rows *rows, const int64_t *order,
                               float eta, float lambda, int normalize, int threads) {
    const int64_t n_rows = rows->n_rows, max_len = ffm_max_row_length(rows);
    const int64_t js = model->js;
    /* Every epoch of a fit trains on the same rows reshuffled: pick once, keep with the model
     * until training stops (ffm_forget_hot). */
    const int64_t nnz = rows->indptr[n_rows];
    const ffm_hot_set *kept = model->hot_set;
    if (kept != NULL && (kept->n_rows != n_rows || kept->nnz != nnz)) ffm_forget_hot(model);
    if (model->hot_set == NULL) {
        model->hot_set = calloc(1, sizeof(ffm_hot_set));
        if (model->hot_set == NULL) return -1.0;
        if (!hot_set_pick(model->hot_set, model, rows)) {
            ffm_forget_hot(model);
            return -1.0;
        }
    }
    ffm_hot_set *kept_set = model->hot_set;
    const int64_t n_hot = kept_set->count;
    if (n_hot > 0 && kept_set->replica_threads < threads) {
        ffm_free(kept_set->replicas);
        kept_set->replicas = ffm_alloc(2 * (int64_t)threads * n_hot * js, 0);
        kept_set->replica_threads = kept_set->replicas ? threads : 0;
    }
    const ffm_hot_set hot = *kept_set;
    float *replicas = hot.replicas;
    /* Each thread's row buffers on their own cache lines: written every row, they must not
     * share a line with another thread's (false sharing). */
    ffm_token **scratch = calloc((size_t)threads, sizeof(ffm_token *));
    int64_t **stamps = calloc((size_t)threads, sizeof(int64_t *));
    stage *stages = order ? calloc((size_t)threads, sizeof(stage)) : NULL;
    int buffers = scratch != NULL && stamps != NULL && (order == NULL || stages != NULL);
    for (int t = 0; buffers && t < threads; ++t) {
        scratch[t] = thread_buffer((size_t)(max_len + 1) * sizeof(ffm_token));
        stamps[t] = thread_buffer((size_t)model->m * sizeof(int64_t));
        buffers = scratch[t] != NULL && stamps[t] != NULL && (!stages || stage_alloc(&stages[t], max_len));
    }
    double total = -1.0;
    double *totals = calloc((size_t)threads, sizeof(double));
    if ((n_hot == 0 || replicas) && buffers && totals) {
        replicated_epoch job = {model, rows, order, eta, lambda, normalize, train_slice(), &hot,
                                replicas, scratch, stamps, stages,
                                (n_rows + SYNC_ROWS - 1) / SYNC_ROWS, 0, totals};
        fold_lock_init(&job.lock);
        run_threads(replicated_body, &job, threads);
        fold_lock_destroy(&job.lock);
        total = 0.0;
        for (int t = 0; t < threads; ++t) total += totals[t];
    }
    free(totals);
    for (int t = 0; t < threads; ++t) {
        if (scratch) free(scratch[t]);
        if (stamps) free(stamps[t]);
    }
    for (int t = 0; stages && t < threads; ++t) stage_free(&stages[t]);
    free(stages);
    free(scratch);
    free(stamps);
    return total;
}

double ffm_train_epoch(ffm_model *model, const ffm_rows *rows, const int64_t *order, float eta,
                       float lambda, int normalize, int n_threads) {
    const int threads = clamp_threads(n_threads);
    double total;
    if (threads > 1 && rows->n_rows >= 2 * SYNC_ROWS) {
        total = train_replicated(model, rows, order, eta, lambda, normalize, threads);
    } else if (threads == 1 && order != NULL) {
        total = train_staged(train_slice(), model, rows, order, eta, lambda, normalize);
    } else {
        const pass job = {model, rows, order, eta, lambda, normalize, train_slice(), NULL, NULL};
        total = run_pass(&job, n_threads);
    }
    if (total < 0) return -1.0;
    return rows->n_rows > 0 ? total / (double)rows->n_rows : 0.0;
}

int ffm_margins(const ffm_model *model, const ffm_rows *rows, int normalize, int n_threads,
                float *out) {
    /* The pass never writes the model when `train` is NULL. */
    const pass job = {(ffm_model *)model, rows, NULL, 0.0f, 0.0f, normalize, NULL, margin_slice(),
                      out};
    return run_pass(&job, n_threads) < 0 ? -1 : 0;
}

float ffm_margin_one(const ffm_model *model, const int32_t *fields, const int32_t *features,
                     const float *values, int64_t len, int normalize) {
    ffm_token stack[256];
    ffm_token *scratch = len <= 256 ? stack : malloc((size_t)len * sizeof(ffm_token));
    if (scratch == NULL) return NAN;
    const float t = margin_tokens()(model, fields, features, values, len, normalize, scratch);
    if (scratch != stack) free(scratch);
    return t;
}

/* Stable log(1 + exp(-z)). */
static double log1pexp_neg(double z) { return z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z)); }

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
