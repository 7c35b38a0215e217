/* LIBFFM text parser; see libffm_text.h for what is accepted and rejected. */
#define _POSIX_C_SOURCE 200809L
#include "libffm_text.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *ffm_text_message(int error) {
    switch (error) {
    case FFM_TEXT_OK: return "ok";
    case FFM_TEXT_BAD_LABEL: return "label must be 0 or 1 (or -1/+1)";
    case FFM_TEXT_BAD_TOKEN: return "token must be field:feature:value with exactly two colons";
    case FFM_TEXT_BAD_FIELD: return "field is not a non-negative integer";
    case FFM_TEXT_NEGATIVE_FIELD: return "field is negative";
    case FFM_TEXT_BAD_FEATURE: return "feature is not a non-negative integer";
    case FFM_TEXT_NEGATIVE_FEATURE: return "feature is negative";
    case FFM_TEXT_BAD_VALUE: return "value is not a number";
    case FFM_TEXT_NONFINITE_VALUE: return "value is not finite (NaN or infinity)";
    case FFM_TEXT_EMPTY_LINE: return "empty line (pass skip_empty_lines=True to skip empty lines)";
    case FFM_TEXT_TOO_LARGE: return "field or feature does not fit in 32 bits (max 2147483647)";
    case FFM_TEXT_NO_MEMORY: return "out of memory";
    case FFM_TEXT_IO: return "cannot read the file";
    default: return "unknown error";
    }
}

static int fail(ffm_text *out, int code, int64_t line, const char *line_start, const char *tok,
                const char *tok_end) {
    out->error = code;
    out->error_line = line;
    out->error_column = tok ? (int64_t)(tok - line_start) + 1 : 0;
    out->error_token[0] = '\0';
    out->error_token_length = tok ? (int64_t)(tok_end - tok) : 0;
    if (tok) {
        size_t len = (size_t)(tok_end - tok);
        if (len > FFM_TEXT_TOKEN_MAX) len = FFM_TEXT_TOKEN_MAX;
        memcpy(out->error_token, tok, len);
        out->error_token[len] = '\0';
    }
    return code;
}

static int grow(void **p, int64_t *cap, int64_t need, size_t item) {
    if (need <= *cap) return 1;
    int64_t cap2 = *cap > 0 ? *cap : 1024;
    while (cap2 < need) cap2 += cap2 / 2 + 1024;
    void *q = realloc(*p, (size_t)cap2 * item);
    if (!q) return 0;
    *p = q;
    *cap = cap2;
    return 1;
}

/* Non-negative decimal integer into *out: 1 ok, 0 not an integer, -1 negative, -2 too large. */
static int parse_index(const char *s, const char *e, int32_t *out) {
    if (s == e) return 0;
    if (*s == '-') {
        const char *q = s + 1;
        if (q == e) return 0;
        for (; q < e; ++q)
            if ((unsigned)(*q - '0') > 9) return 0;
        return -1;
    }
    int64_t v = 0;
    for (const char *q = s; q < e; ++q) {
        unsigned d = (unsigned)(*q - '0');
        if (d > 9) return 0;
        v = v * 10 + d;
        if (v > INT32_MAX) return -2;
    }
    *out = (int32_t)v;
    return 1;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A finite number into *out: 1 ok, 0 not a number, -1 not finite. Plain decimals take an exact
 * fast path (Clinger: <= 15 digits and |exponent| <= 22 give a correctly rounded double);
 * anything else goes through strtod. */
static int parse_value(const char *s, const char *e, float *out) {
    const char *q = s;
    int negative = 0;
    if (q < e && (*q == '+' || *q == '-')) negative = *q++ == '-';
    uint64_t mant = 0;
    int digits = 0, frac = 0, seen = 0;
    for (; q < e && (unsigned)(*q - '0') <= 9; ++q, ++seen)
        if (digits < 19) mant = mant * 10 + (unsigned)(*q - '0'), digits += (mant != 0);
        else goto slow;
    if (q < e && *q == '.') {
        for (++q; q < e && (unsigned)(*q - '0') <= 9; ++q, ++seen, ++frac)
            if (digits < 19) mant = mant * 10 + (unsigned)(*q - '0'), digits += (mant != 0);
            else goto slow;
    }
    if (seen == 0) goto slow; /* "nan", "inf", "e5", garbage: let strtod decide */
    int exp10 = -frac;
    if (q < e && (*q == 'e' || *q == 'E')) {
        ++q;
        int eneg = 0, ev = 0, edigits = 0;
        if (q < e && (*q == '+' || *q == '-')) eneg = *q++ == '-';
        for (; q < e && (unsigned)(*q - '0') <= 9; ++q, ++edigits)
            if (ev < 10000) ev = ev * 10 + (*q - '0');
        if (edigits == 0) return 0;
        exp10 += eneg ? -ev : ev;
    }
    if (q != e) return 0;
    if (digits > 15 || exp10 < -22 || exp10 > 22) goto slow;
    {
        double v = (double)mant;
        v = exp10 >= 0 ? v * POW10[exp10] : v / POW10[-exp10];
        if (v > 3.4028234663852886e38) return -1;
        *out = (float)(negative ? -v : v);
        return 1;
    }
slow: {
    char buf[128];
    size_t len = (size_t)(e - s);
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end = NULL;
    errno = 0;
    double v = strtod(buf, &end);
    if (end != buf + len) return 0;
    if (!isfinite(v) || fabs(v) > 3.4028234663852886e38) return -1;
    *out = (float)v;
    return 1;
}
}

static inline int is_space(char c) { return c == ' ' || c == '\t'; }

int ffm_text_parse(const char *data, int64_t size, int skip_empty, ffm_text *out) {
    memset(out, 0, sizeof *out);
    out->max_field = out->max_feature = -1;
    /* First guesses from the size; realloc grows them when wrong. */
    if (!grow((void **)&out->indptr, &out->rows_cap, size / 64 + 2, sizeof(int64_t)))
        return fail(out, FFM_TEXT_NO_MEMORY, 0, NULL, NULL, NULL);
    out->indptr[0] = 0;
    int64_t labels_cap = 0, fcap = 0, jcap = 0, vcap = 0;
    const int64_t nnz_guess = size / 8 + 16;
    if (!grow((void **)&out->labels, &labels_cap, size / 64 + 2, sizeof(float)) ||
        !grow((void **)&out->fields, &fcap, nnz_guess, sizeof(int32_t)) ||
        !grow((void **)&out->features, &jcap, nnz_guess, sizeof(int32_t)) ||
        !grow((void **)&out->values, &vcap, nnz_guess, sizeof(float)))
        return fail(out, FFM_TEXT_NO_MEMORY, 0, NULL, NULL, NULL);

    const char *p = data, *const end = data + size;
    int64_t line = 0, nnz = 0, rows = 0, max_field = -1, max_feature = -1;
    while (p < end) {
        ++line;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        const char *le = line_end;
        if (le > p && le[-1] == '\r') --le;
        const char *s = p;
        while (s < le && is_space(*s)) ++s;
        if (s == le) {
            if (skip_empty) {
                p = next;
                continue;
            }
            return fail(out, FFM_TEXT_EMPTY_LINE, line, p, NULL, NULL);
        }
        /* label */
        const char *t = s;
        while (t < le && !is_space(*t)) ++t;
        float label;
        const size_t llen = (size_t)(t - s);
        if (llen == 1 && *s == '1') label = 1.0f;
        else if (llen == 1 && *s == '0') label = 0.0f;
        else if (llen == 2 && s[0] == '+' && s[1] == '1') label = 1.0f;
        else if (llen == 2 && s[0] == '-' && s[1] == '1') label = 0.0f;
        else return fail(out, FFM_TEXT_BAD_LABEL, line, p, s, t);
        /* tokens */
        for (s = t;;) {
            while (s < le && is_space(*s)) ++s;
            if (s == le) break;
            t = s;
            const char *c1 = NULL, *c2 = NULL;
            int colons = 0;
            while (t < le && !is_space(*t)) {
                if (*t == ':') {
                    ++colons;
                    if (!c1) c1 = t;
                    else if (!c2) c2 = t;
                }
                ++t;
            }
            if (colons != 2) return fail(out, FFM_TEXT_BAD_TOKEN, line, p, s, t);
            int32_t field = 0, feature = 0;
            float value = 0.0f;
            int rc = parse_index(s, c1, &field);
            if (rc != 1)
                return fail(out, rc == -1 ? FFM_TEXT_NEGATIVE_FIELD
                                 : rc == -2 ? FFM_TEXT_TOO_LARGE
                                            : FFM_TEXT_BAD_FIELD,
                            line, p, s, t);
            rc = parse_index(c1 + 1, c2, &feature);
            if (rc != 1)
                return fail(out, rc == -1 ? FFM_TEXT_NEGATIVE_FEATURE
                                 : rc == -2 ? FFM_TEXT_TOO_LARGE
                                            : FFM_TEXT_BAD_FEATURE,
                            line, p, s, t);
            rc = parse_value(c2 + 1, t, &value);
            if (rc != 1)
                return fail(out, rc == -1 ? FFM_TEXT_NONFINITE_VALUE : FFM_TEXT_BAD_VALUE, line,
                            p, s, t);
            if (nnz == fcap) {
                if (!grow((void **)&out->fields, &fcap, nnz + 1, sizeof(int32_t)) ||
                    !grow((void **)&out->features, &jcap, nnz + 1, sizeof(int32_t)) ||
                    !grow((void **)&out->values, &vcap, nnz + 1, sizeof(float)))
                    return fail(out, FFM_TEXT_NO_MEMORY, line, NULL, NULL, NULL);
            }
            out->fields[nnz] = field;
            out->features[nnz] = feature;
            out->values[nnz] = value;
            if (field > max_field) max_field = field;
            if (feature > max_feature) max_feature = feature;
            ++nnz;
            s = t;
        }
        if (rows + 2 > out->rows_cap || rows + 1 > labels_cap) {
            if (!grow((void **)&out->indptr, &out->rows_cap, rows + 2, sizeof(int64_t)) ||
                !grow((void **)&out->labels, &labels_cap, rows + 1, sizeof(float)))
                return fail(out, FFM_TEXT_NO_MEMORY, line, NULL, NULL, NULL);
        }
        out->labels[rows] = label;
        out->indptr[++rows] = nnz;
        p = next;
    }
    out->n_rows = rows;
    out->nnz = nnz;
    out->max_field = max_field;
    out->max_feature = max_feature;
    return FFM_TEXT_OK;
}

int ffm_text_parse_file(const char *path, int skip_empty, ffm_text *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        out->error_errno = errno;
        return out->error = FFM_TEXT_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        out->error_errno = errno;
        close(fd);
        return out->error = FFM_TEXT_IO;
    }
    if (st.st_size == 0) {
        close(fd);
        return ffm_text_parse("", 0, skip_empty, out);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        out->error_errno = errno;
        close(fd);
        return out->error = FFM_TEXT_IO;
    }
    posix_madvise(map, (size_t)st.st_size, POSIX_MADV_SEQUENTIAL);
    int rc = ffm_text_parse((const char *)map, (int64_t)st.st_size, skip_empty, out);
    munmap(map, (size_t)st.st_size);
    close(fd);
    return rc;
}

void ffm_text_free(ffm_text *out) {
    free(out->indptr);
    free(out->fields);
    free(out->features);
    free(out->values);
    free(out->labels);
    out->indptr = NULL;
    out->fields = out->features = NULL;
    out->values = out->labels = NULL;
}
