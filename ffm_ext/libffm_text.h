/* Strict parser for LIBFFM's text format: one row per line, `label field:feature:value ...`.
 *
 * Every token is validated as it is read. The first error stops the parse and is reported with
 * its 1-based line, 1-based column and the offending token, so the caller can name all three.
 * Accepted: labels 0/1 and -1/+1 (mapped to 0/1), spaces or tabs between tokens, CRLF line
 * endings, lines of any length, a last line without a newline. Rejected: a token without exactly
 * two colons, a field or feature that is not a non-negative 32-bit integer, a value that is not
 * a finite number, any other label, and an empty line (unless skip_empty is set).
 */
#ifndef LIBFFM_TEXT_H
#define LIBFFM_TEXT_H

#include <stdint.h>

enum {
    FFM_TEXT_OK = 0,
    FFM_TEXT_BAD_LABEL,
    FFM_TEXT_BAD_TOKEN,
    FFM_TEXT_BAD_FIELD,
    FFM_TEXT_NEGATIVE_FIELD,
    FFM_TEXT_BAD_FEATURE,
    FFM_TEXT_NEGATIVE_FEATURE,
    FFM_TEXT_BAD_VALUE,
    FFM_TEXT_NONFINITE_VALUE,
    FFM_TEXT_EMPTY_LINE,
    FFM_TEXT_TOO_LARGE,
    FFM_TEXT_NO_MEMORY,
    FFM_TEXT_IO,
};

#define FFM_TEXT_TOKEN_MAX 96

typedef struct {
    /* CSR output, malloc'd; ownership passes to the caller on success. */
    int64_t *indptr;
    int32_t *fields;
    int32_t *features;
    float *values;
    float *labels;
    int64_t n_rows;
    int64_t nnz;
    int64_t max_field;   /* -1 when there are no tokens */
    int64_t max_feature; /* -1 when there are no tokens */
    /* first error */
    int error;
    int64_t error_line;
    int64_t error_column;
    int error_errno;
    char error_token[FFM_TEXT_TOKEN_MAX + 1]; /* the token's first bytes */
    int64_t error_token_length;               /* its whole length in bytes */
    /* internal */
    int64_t rows_cap;
    int64_t nnz_cap;
} ffm_text;

/* Parse a file (memory-mapped). Returns the error code (also in out->error). */
int ffm_text_parse_file(const char *path, int skip_empty, ffm_text *out);

/* Parse a buffer. */
int ffm_text_parse(const char *data, int64_t size, int skip_empty, ffm_text *out);

/* Free whatever the result still owns. */
void ffm_text_free(ffm_text *out);

/* What an error code means, in words. */
const char *ffm_text_message(int error);

#endif
