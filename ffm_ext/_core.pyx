# Cython bindings over the C kernels (ffm_kernels.c, libffm_text.c). Memory the C side allocates
# is owned by small Python objects that NumPy arrays keep as their base, so arrays view it
# without a copy and it is freed when the last view goes.
from libc.stdint cimport int16_t, int32_t, int64_t, uint64_t
from libc.math cimport exp
from libc.stdlib cimport free, realloc

cimport numpy as cnp
import os

import numpy as np

from ffm_ext._errors import FFMFormatError

cnp.import_array()


cdef extern from "ffm_kernels.h" nogil:
    ctypedef struct ffm_model:
        int64_t n
        int64_t m
        int64_t k
        int64_t kp
        int64_t js
        float *w
        float *g
        const int16_t *hot_slot
        float *hot_w
        void *hot_set

    ctypedef struct ffm_rows:
        const int64_t *indptr
        const int32_t *fields
        const int32_t *features
        const float *values
        const float *labels
        int64_t n_rows

    int FFM_LANES
    float *ffm_alloc(int64_t count, int zero)
    void ffm_free(float *p)
    ctypedef struct ffm_prefault:
        pass
    ffm_prefault *ffm_prefault_start(float *p, int64_t count)
    void ffm_prefault_finish(ffm_prefault *job)
    void ffm_init(ffm_model *model, uint64_t seed)
    void ffm_fill(float *p, int64_t count, float value)
    void ffm_pack(float *state, const float *weights, int64_t features, int64_t block)
    void ffm_unpack(float *weights, const float *state, int64_t features, int64_t block,
                    int n_threads)
    void ffm_compact_in_place(float *state, int64_t features, int64_t block)
    void ffm_copy(float *dst, const float *src, int64_t count)
    void ffm_permutation(int64_t *order, int64_t count, uint64_t seed)
    void ffm_permute_rows(const ffm_rows *src, const int64_t *order, int64_t *indptr,
                          int32_t *fields, int32_t *features, float *values, float *labels,
                          int n_threads)
    double ffm_train_epoch(ffm_model *model, const ffm_rows *rows, const int64_t *order,
                           float eta, float lam, int normalize, int n_threads)
    void ffm_forget_hot(ffm_model *model)
    int ffm_margins(const ffm_model *model, const ffm_rows *rows, int normalize, int n_threads,
                    float *out)
    double ffm_logloss_from_margins(const float *margins, const float *labels, int64_t count)
    void ffm_sigmoid_inplace(float *values, int64_t count)
    float ffm_margin_one(const ffm_model *model, const int32_t *fields, const int32_t *features,
                         const float *values, int64_t length, int normalize)
    int ffm_all_finite(const float *p, int64_t count)
    ctypedef struct ffm_token_scan:
        int32_t field_min, field_max, feature_min, feature_max
        int nonfinite
    void ffm_scan_tokens(const int32_t *fields, const int32_t *features, const float *values,
                         int64_t count, int n_threads, ffm_token_scan *out)
    int ffm_max_threads()
    const char *ffm_isa()
    void ffm_eta_rsqrt(const float *x, float *out, int64_t n, float eta)


cdef extern from "libffm_text.h" nogil:
    ctypedef struct ffm_text:
        int64_t *indptr
        int32_t *fields
        int32_t *features
        float *values
        float *labels
        int64_t n_rows
        int64_t nnz
        int64_t max_field
        int64_t max_feature
        int error
        int64_t error_line
        int64_t error_column
        int error_errno
        char error_token[97]
        int64_t error_token_length

    int FFM_TEXT_OK
    int FFM_TEXT_IO
    int ffm_text_parse_file(const char *path, int skip_empty, ffm_text *out)
    void ffm_text_free(ffm_text *out)
    const char *ffm_text_message(int error)


cdef class _AlignedFloats:
    """Owner of one aligned float buffer allocated by the C side."""
    cdef float *ptr
    cdef readonly int64_t size
    cdef ffm_prefault *prefault  # pages being touched in the background, or NULL

    cdef void settle(self) noexcept nogil:
        """Wait for the background touching of the pages, if any (before any use)."""
        if self.prefault != NULL:
            ffm_prefault_finish(self.prefault)
            self.prefault = NULL

    def __dealloc__(self):
        self.settle()
        ffm_free(self.ptr)


cdef _AlignedFloats _aligned_floats(int64_t count, bint zero=True):
    cdef _AlignedFloats buf = _AlignedFloats.__new__(_AlignedFloats)
    buf.ptr = ffm_alloc(count, zero)
    if buf.ptr == NULL:
        raise MemoryError(f"cannot allocate {count * 4 / 2**20:.1f} MiB for FFM weights")
    buf.size = count
    return buf


cdef class _Malloced:
    """Owner of one malloc'd buffer handed over by the text parser."""
    cdef void *ptr

    def __dealloc__(self):
        free(self.ptr)


cdef object _owned_array(void *ptr, int64_t count, int typenum, int itemsize):
    """A 1-D array over malloc'd memory that it frees when the last view goes (count may be 0)."""
    cdef _Malloced owner = _Malloced.__new__(_Malloced)
    cdef void *shrunk = realloc(ptr, <size_t>(count if count > 0 else 1) * itemsize)
    owner.ptr = shrunk if shrunk != NULL else ptr
    cdef cnp.npy_intp dims[1]
    dims[0] = count
    arr = cnp.PyArray_SimpleNewFromData(1, dims, typenum, owner.ptr)
    cnp.set_array_base(arr, owner)
    return arr


def isa() -> str:
    """Which hot-loop build this CPU runs: "avx2" or "generic"."""
    return ffm_isa().decode()


def eta_rsqrt(const float[::1] x, float eta):
    """eta / sqrt(x) as this CPU's training steps compute it (float32; the reference tests)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    cdef float[::1] result = out
    if x.shape[0] > 0:
        ffm_eta_rsqrt(&x[0], &result[0], x.shape[0], eta)
    return out


def scan_tokens(const int32_t[::1] fields, const int32_t[::1] features, const float[::1] values,
                int n_threads=1):
    """(field min, field max, feature min, feature max, any value non-finite) in one pass, on
    up to n_threads threads (a share of at least 1M tokens each); the arrays have one equal,
    non-zero length."""
    cdef int64_t count = fields.shape[0]
    if count == 0 or features.shape[0] != count or values.shape[0] != count:
        raise ValueError("scan_tokens needs three arrays of one non-zero length")
    cdef ffm_token_scan scan
    with nogil:
        ffm_scan_tokens(&fields[0], &features[0], &values[0], count, n_threads, &scan)
    return (scan.field_min, scan.field_max, scan.feature_min, scan.feature_max,
            bool(scan.nonfinite))


def max_threads() -> int:
    """OpenMP's thread count (1 when built without OpenMP)."""
    return ffm_max_threads()


def permutation(int64_t count, uint64_t seed):
    """A seeded uniform permutation of range(count) (int64)."""
    order = np.empty(count, dtype=np.int64)
    cdef int64_t[::1] view = order
    if count > 0:
        with nogil:
            ffm_permutation(&view[0], count, seed)
    return order


def permute_rows(const int64_t[::1] indptr, const int32_t[::1] fields,
                 const int32_t[::1] features, const float[::1] values, const float[::1] labels,
                 const int64_t[::1] order, int64_t[::1] out_indptr, int32_t[::1] out_fields,
                 int32_t[::1] out_features, float[::1] out_values, float[::1] out_labels,
                 int n_threads):
    """Copy the rows in `order` contiguously into the out_* arrays (same sizes as the input)."""
    cdef int64_t n_rows = indptr.shape[0] - 1
    cdef int64_t nnz = fields.shape[0]
    if (order.shape[0] != n_rows or labels.shape[0] != n_rows or out_indptr.shape[0] != n_rows + 1
            or out_labels.shape[0] != n_rows or out_fields.shape[0] != nnz
            or out_features.shape[0] != nnz or out_values.shape[0] != nnz
            or features.shape[0] != nnz or values.shape[0] != nnz):
        raise ValueError("permute_rows: array sizes do not match")
    if n_rows == 0:
        return
    cdef int64_t i
    for i in range(n_rows):  # a bad order would read out of bounds below
        if order[i] < 0 or order[i] >= n_rows:
            raise ValueError(f"order[{i}] = {order[i]} is not a row index")
    cdef ffm_rows src
    _fill_rows(&src, indptr, fields, features, values, &labels[0])
    cdef int32_t *f_out = &out_fields[0] if nnz else NULL
    cdef int32_t *j_out = &out_features[0] if nnz else NULL
    cdef float *v_out = &out_values[0] if nnz else NULL
    with nogil:
        ffm_permute_rows(&src, &order[0], &out_indptr[0], f_out, j_out, v_out, &out_labels[0],
                         n_threads)


cdef inline void _fill_rows(ffm_rows *rows, const int64_t[::1] indptr, const int32_t[::1] fields,
                            const int32_t[::1] features, const float[::1] values,
                            const float *labels) noexcept:
    rows.n_rows = indptr.shape[0] - 1
    rows.indptr = &indptr[0]
    rows.fields = &fields[0] if fields.shape[0] > 0 else NULL
    rows.features = &features[0] if features.shape[0] > 0 else NULL
    rows.values = &values[0] if values.shape[0] > 0 else NULL
    rows.labels = labels


cdef class Engine:
    """Weights of one FFM in C memory, and while training, its AdaGrad accumulators.

    Outside training the weights are one contiguous (n, m, kp) buffer. Training works on a
    second layout where each feature's m weight vectors are followed by their m accumulator
    vectors (an (n, 2, m, kp) buffer); stop_training() returns to the compact one.
    """
    cdef ffm_model model
    cdef _AlignedFloats _weights  # compact layout; None while training
    cdef _AlignedFloats _state  # training layout; None outside training
    cdef int64_t _vectors

    def __cinit__(self, int64_t n, int64_t m, int64_t k, bint training=False):
        """Zeroed compact weights; or, with training=True, an uninitialised training layout
        for initialize() to fill (a fresh fit skips the compact buffer and the repacking)."""
        if n < 1 or m < 1 or k < 1:
            raise ValueError(f"n, m and k must be >= 1, got n={n}, m={m}, k={k}")
        # Sizes in Python integers: n*m*k from a hostile meta.json must not wrap around int64.
        cdef object floats = (<object>n) * m * ((k + FFM_LANES - 1) // FFM_LANES * FFM_LANES) * 2
        if floats * 4 >= 2**62:
            raise MemoryError(
                f"cannot allocate {floats * 2 / 2**20:.1f} MiB for FFM weights "
                f"(n={n}, m={m}, k={k})")
        self.model.n = n
        self.model.m = m
        self.model.k = k
        self.model.kp = (k + FFM_LANES - 1) // FFM_LANES * FFM_LANES
        self.model.hot_slot = NULL
        self.model.hot_w = NULL
        self.model.hot_set = NULL
        self._vectors = n * m
        if training:
            self._state = _aligned_floats(2 * self._vectors * self.model.kp, zero=False)
            self._use_training()
        else:
            self._weights = _aligned_floats(self._vectors * self.model.kp)
            self._use_compact()

    def __dealloc__(self):
        ffm_forget_hot(&self.model)

    cdef void _use_compact(self):
        self.model.w = self._weights.ptr
        self.model.g = NULL
        self.model.js = self.model.m * self.model.kp

    @property
    def shape(self):
        return (self.model.n, self.model.m, self.model.k)

    @property
    def training(self) -> bool:
        return self._state is not None

    @property
    def weights(self):
        """(n, m, k) float32 view of the C weights: no copy, keeps the memory alive.

        Outside training it is C-contiguous when k is a multiple of 4; during training
        (e.g. in an epoch callback) it is a strided view of the training layout.
        """
        if self._state is not None:
            return self._view(self._state, 2)[:, 0]
        return self._view(self._weights, 1)[:, 0]

    cdef object _view(self, _AlignedFloats buf, int64_t halves):
        """(n, halves, m, k) view: halves = 2 in the training layout (weights, accumulators)."""
        cdef cnp.npy_intp dims[4]
        dims[0] = self.model.n
        dims[1] = halves
        dims[2] = self.model.m
        dims[3] = self.model.kp
        arr = cnp.PyArray_SimpleNewFromData(4, dims, cnp.NPY_FLOAT32, buf.ptr)
        cnp.set_array_base(arr, buf)
        return arr if self.model.kp == self.model.k else arr[:, :, :, :self.model.k]

    def initialize(self, uint64_t seed):
        """LIBFFM's random initialisation of the weights."""
        cdef _AlignedFloats buf = self._state if self._state is not None else self._weights
        # A fresh training layout: a background thread faults its pages in ahead of the
        # initialisation, which then mostly writes memory already there.
        if self._state is not None and buf.prefault == NULL:
            buf.prefault = ffm_prefault_start(buf.ptr, buf.size)
        with nogil:
            ffm_init(&self.model, seed)
            buf.settle()

    cdef void _use_training(self):
        self.model.w = self._state.ptr
        self.model.g = self._state.ptr + self.model.m * self.model.kp
        self.model.js = 2 * self.model.m * self.model.kp

    def start_training(self):
        """Switch to the training layout, accumulators all 1 (LIBFFM's start value)."""
        if self._state is not None:
            return
        self._state = _aligned_floats(2 * self._vectors * self.model.kp, zero=False)
        with nogil:
            ffm_pack(self._state.ptr, self._weights.ptr, self.model.n, self.model.m * self.model.kp)
        self._weights = None  # the training layout holds the weights now
        self._use_training()

    def stop_training(self, _AlignedFloats restore=None):
        """Back to the compact layout, with the current weights or a snapshot's."""
        if self._state is None:
            return
        ffm_forget_hot(&self.model)
        if restore is not None:
            if restore.size != self._vectors * self.model.kp:
                raise ValueError("stop_training: the buffer does not fit this model")
            restore.settle()
            self._weights = restore
        else:  # in place: a second buffer would cost memory and its first-touch page faults
            with nogil:
                ffm_compact_in_place(self._state.ptr, self.model.n, self.model.m * self.model.kp)
            self._state.size = self._vectors * self.model.kp
            self._weights = self._state
        self._state = None
        self._use_compact()

    def snapshot_buffer(self):
        """A buffer for snapshot(into=...), its fresh pages touched on a low-priority
        background thread meanwhile (the first snapshot of a fit then does not pay for them)."""
        cdef _AlignedFloats buf = _aligned_floats(self._vectors * self.model.kp, zero=False)
        buf.prefault = ffm_prefault_start(buf.ptr, buf.size)
        return buf

    def snapshot(self, _AlignedFloats into=None, int n_threads=1):
        """Copy of the current weights in the compact layout (reusing `into` when given),
        copied by n_threads threads while training."""
        if into is None:
            into = _aligned_floats(self._vectors * self.model.kp, zero=False)
        elif into.size != self._vectors * self.model.kp:
            raise ValueError("snapshot: the buffer does not fit this model")
        with nogil:
            into.settle()
        if self._state is not None:
            with nogil:
                ffm_unpack(into.ptr, self._state.ptr, self.model.n, self.model.m * self.model.kp,
                           n_threads)
        else:
            with nogil:
                ffm_copy(into.ptr, self._weights.ptr, self._vectors * self.model.kp)
        return into

    def weights_finite(self) -> bool:
        cdef _AlignedFloats buf = self._state if self._state is not None else self._weights
        cdef int ok
        with nogil:
            ok = ffm_all_finite(buf.ptr, buf.size)
        return ok == 1

    def train_epoch(self, const int64_t[::1] indptr, const int32_t[::1] fields,
                    const int32_t[::1] features, const float[::1] values,
                    const float[::1] labels, const int64_t[::1] order, float eta, float lam,
                    bint normalize, int n_threads) -> float:
        """One Hogwild SGD epoch in `order`; returns the mean pre-update training logloss."""
        if self._state is None:
            raise RuntimeError("start_training() first")
        cdef ffm_rows rows
        _fill_rows(&rows, indptr, fields, features, values, &labels[0] if labels.shape[0] else NULL)
        if order.shape[0] != rows.n_rows or labels.shape[0] != rows.n_rows:
            raise ValueError("order and labels must have one entry per row")
        cdef double loss = 0.0
        if rows.n_rows == 0:
            return 0.0
        with nogil:
            loss = ffm_train_epoch(&self.model, &rows, &order[0], eta, lam, normalize, n_threads)
        if loss < 0:
            raise MemoryError("cannot allocate per-thread scratch memory")
        return loss

    def margins(self, const int64_t[::1] indptr, const int32_t[::1] fields,
                const int32_t[::1] features, const float[::1] values, bint normalize,
                int n_threads):
        """phi(x) of every row, float32, computed with the GIL released."""
        cdef ffm_rows rows
        _fill_rows(&rows, indptr, fields, features, values, NULL)
        out = np.empty(rows.n_rows, dtype=np.float32)
        cdef float[::1] view = out
        cdef int rc = 0
        if rows.n_rows > 0:
            with nogil:
                rc = ffm_margins(&self.model, &rows, normalize, n_threads, &view[0])
        if rc != 0:
            raise MemoryError("cannot allocate per-thread scratch memory")
        return out

    def probability_one(self, object fields, object features, object values,
                        bint normalize) -> float:
        """P(click) of one row given as parallel 1-D arrays (the serving path). int32 / int32 /
        float32 C arrays in native byte order are read in place; anything else is converted
        first. One call, no memoryviews: at about 2 us a row their set-up was a third of it."""
        if not _native_vector(fields, cnp.NPY_INT32):
            fields = np.ascontiguousarray(fields, dtype=np.int32)
        if not _native_vector(features, cnp.NPY_INT32):
            features = np.ascontiguousarray(features, dtype=np.int32)
        if not _native_vector(values, cnp.NPY_FLOAT32):
            values = np.ascontiguousarray(values, dtype=np.float32)
        cdef cnp.ndarray f = fields, j = features, v = values
        if f.ndim != 1 or j.ndim != 1 or v.ndim != 1:
            raise ValueError(
                f"fields, features and values must be 1-D, got {f.ndim}-D, {j.ndim}-D, {v.ndim}-D")
        cdef int64_t length = cnp.PyArray_SIZE(f)
        if cnp.PyArray_SIZE(j) != length or cnp.PyArray_SIZE(v) != length:
            raise ValueError(
                f"fields, features and values must have the same length, got "
                f"{length}, {cnp.PyArray_SIZE(j)}, {cnp.PyArray_SIZE(v)}")
        if length == 0:
            return 0.5
        cdef const int32_t *field_ids = <const int32_t *>cnp.PyArray_DATA(f)
        cdef int64_t i
        for i in range(length):
            if field_ids[i] < 0 or field_ids[i] >= self.model.m:
                raise ValueError(
                    f"field {field_ids[i]} at position {i} is outside the model's fields "
                    f"0..{self.model.m - 1}")
        cdef double t = ffm_margin_one(&self.model, field_ids, <const int32_t *>cnp.PyArray_DATA(j),
                                       <const float *>cnp.PyArray_DATA(v), length, normalize)
        return 1.0 / (1.0 + exp(-t)) if t > -700.0 else 0.0


cdef inline bint _native_vector(object array, int typenum):
    """A C-contiguous, aligned array of `typenum` in native byte order."""
    if not cnp.PyArray_Check(array):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>array
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISBEHAVED_RO(a))


def logloss_from_margins(const float[::1] margins, const float[::1] labels) -> float:
    """Mean logistic loss of margins against 0/1 labels (stable for large margins)."""
    if margins.shape[0] != labels.shape[0]:
        raise ValueError("margins and labels differ in length")
    if margins.shape[0] == 0:
        return float("nan")
    cdef double loss
    with nogil:
        loss = ffm_logloss_from_margins(&margins[0], &labels[0], margins.shape[0])
    return loss


def sigmoid_inplace(float[::1] values):
    if values.shape[0]:
        with nogil:
            ffm_sigmoid_inplace(&values[0], values.shape[0])


def parse_libffm_file(path, bint skip_empty_lines):
    """Parse a LIBFFM text file in C without the GIL.

    Returns (indptr, fields, features, values, labels, max_field, max_feature); raises
    FFMFormatError naming the file, line, column and token of the first bad input.
    """
    cdef bytes encoded = os.fsencode(path)
    cdef const char *cpath = encoded
    cdef ffm_text res
    cdef int rc
    with nogil:
        rc = ffm_text_parse_file(cpath, skip_empty_lines, &res)
    if rc != FFM_TEXT_OK:
        token = bytes(res.error_token).decode("utf-8", "replace")
        ffm_text_free(&res)
        if rc == FFM_TEXT_IO:
            raise OSError(res.error_errno, os.strerror(res.error_errno), os.fspath(path))
        raise FFMFormatError(
            os.fspath(path), res.error_line, res.error_column, token,
            ffm_text_message(rc).decode(), token_length=res.error_token_length)
    indptr = _owned_array(res.indptr, res.n_rows + 1, cnp.NPY_INT64, 8)
    fields = _owned_array(res.fields, res.nnz, cnp.NPY_INT32, 4)
    features = _owned_array(res.features, res.nnz, cnp.NPY_INT32, 4)
    values = _owned_array(res.values, res.nnz, cnp.NPY_FLOAT32, 4)
    labels = _owned_array(res.labels, res.n_rows, cnp.NPY_FLOAT32, 4)
    return indptr, fields, features, values, labels, res.max_field, res.max_feature
