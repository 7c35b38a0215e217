# The per-value loops of serving a batch, in C: categorical texts and numbers to feature ids, and
# plain JSON numbers to doubles. They only read Python objects; every decision about a value that
# is not plain (an int category, a number as text, a bool, a list...) stays in Python (_encoder),
# so the rules live there.
#
# CategoryTable gives a text the id training gave it without a Python object or dict probe per
# value: it hashes the text's UTF-8 bytes with the training hash (SipHash-2-4 keyed by the spec's
# seed, then the splitmix64 finalizer: `_hashing.hash_strings`, pinned by a pure-Python reference
# in the tests) and probes an open-addressing table of each field's vocabulary hashes, built once
# at load. NumericTable bins numbers by the training rules and probes the bin keys. `fill` of the
# categories keeps the GIL (it reads the str objects as it goes, one visit each, which measured
# faster than collecting them first and hashing without the GIL); the numeric fill and `lookup`
# release it.
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsDouble
from cpython.object cimport PyObject
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport NAN, floor, isinf
from libc.stdint cimport int64_t, uint8_t, uint64_t

import numpy as np

cdef extern from "Python.h":
    # Declared without `except`: a failure (a lone surrogate) is cleared and left to Python.
    const char *PyUnicode_AsUTF8AndSize(PyObject *text, Py_ssize_t *size)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject *text)
    PyObject *PyList_GET_ITEM(PyObject *items, Py_ssize_t i)
    void PyErr_Clear()
    bint PyUnicode_CheckExact(PyObject *value)
    PyObject *Py_None

cdef extern from *:
    void __builtin_prefetch(const void *address)  # GCC and Clang

cdef enum:
    PREFETCH = 16  # values ahead

from ctrflow.components.data._binning import NEGATIVE_BASE, POSITIVE_BASE, SMALL
from ctrflow.components.data._fitted import FIRST_VALUE, MISSING, RARE

# Field-local feature indices (_fitted): MISSING, RARE, then FIRST_VALUE + rank.
cdef int64_t _MISSING = MISSING, _RARE = RARE, _FIRST_VALUE = FIRST_VALUE
# The log-square rule's constants (_binning).
cdef double _SMALL = SMALL
cdef int64_t _POSITIVE_BASE = POSITIVE_BASE, _NEGATIVE_BASE = NEGATIVE_BASE
cdef enum:
    EMPTY = -1  # a table slot holding no vocabulary entry; a text that is not UTF-8
    NOT_PLAIN_VALUE = -2  # a value left to Python: not a str, not None, or not UTF-8

NOT_PLAIN = NOT_PLAIN_VALUE

ctypedef struct Slot:
    int64_t key  # a vocabulary key: a text's hash, a number's bin key
    int64_t id  # its global feature id, or EMPTY

ctypedef struct Table:
    Slot *slots
    int64_t *starts  # per field: its block's first slot, size - 1, and first global id
    int64_t *masks
    int64_t *offsets


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _le64(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """The first n (<= 8) bytes at p as a little-endian integer."""
    cdef uint64_t word = 0
    cdef Py_ssize_t i
    for i in range(n):
        word |= (<uint64_t>p[i]) << (8 * i)
    return word


cdef inline uint64_t training_hash(
    uint64_t k0, uint64_t k1, const uint8_t *msg, Py_ssize_t n
) noexcept nogil:
    """SipHash-2-4 of msg[:n] under key (k0, k1), then splitmix64: `_hashing.hash_strings`."""
    cdef uint64_t v0 = k0 ^ 0x736F6D6570736575ULL
    cdef uint64_t v1 = k1 ^ 0x646F72616E646F6DULL
    cdef uint64_t v2 = k0 ^ 0x6C7967656E657261ULL
    cdef uint64_t v3 = k1 ^ 0x7465646279746573ULL
    cdef uint64_t word
    cdef Py_ssize_t at = 0, full = n - n % 8
    cdef int r
    while True:  # the full 8-byte words, then the tail with the length in its top byte
        if at < full:
            word = _le64(msg + at, 8)
        else:
            word = ((<uint64_t>n & 0xFF) << 56) | _le64(msg + at, n - at)
        v3 ^= word
        for r in range(2):
            v0 += v1; v1 = _rotl(v1, 13) ^ v0; v0 = _rotl(v0, 32)
            v2 += v3; v3 = _rotl(v3, 16) ^ v2
            v0 += v3; v3 = _rotl(v3, 21) ^ v0
            v2 += v1; v1 = _rotl(v1, 17) ^ v2; v2 = _rotl(v2, 32)
        v0 ^= word
        if at >= full:
            break
        at += 8
    v2 ^= 0xFF
    for r in range(4):
        v0 += v1; v1 = _rotl(v1, 13) ^ v0; v0 = _rotl(v0, 32)
        v2 += v3; v3 = _rotl(v3, 16) ^ v2
        v0 += v3; v3 = _rotl(v3, 21) ^ v0
        v2 += v1; v1 = _rotl(v1, 17) ^ v2; v2 = _rotl(v2, 32)
    cdef uint64_t x = v0 ^ v1 ^ v2 ^ v3
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= 0x94D049BB133111EBULL
    return x ^ (x >> 31)


def hash_texts(list texts, bytes key):
    """`_hashing.hash_strings(texts, seed)` for key = hash_key(seed).encode() (tests compare)."""
    cdef uint64_t k0 = _le64(key, 8), k1 = _le64(<const uint8_t *>key + 8, 8)
    out = np.empty(len(texts), dtype=np.int64)
    cdef int64_t[::1] view = out
    cdef Py_ssize_t i, size
    cdef bytes data
    for i in range(len(texts)):
        data = (<str>texts[i]).encode("utf-8")
        size = len(data)
        view[i] = <int64_t>training_hash(k0, k1, <const uint8_t *><char *>data, size)
    return out


cdef inline Py_ssize_t _find(const Table *table, Py_ssize_t field, int64_t key) noexcept nogil:
    """The slot holding key in field's block, or the empty slot where it would go."""
    cdef int64_t start = table.starts[field]
    cdef uint64_t mask = <uint64_t>table.masks[field]
    cdef uint64_t at = <uint64_t>key * 0x9E3779B97F4A7C15ULL  # spreads small bin keys
    at = (at ^ (at >> 32)) & mask
    while table.slots[start + at].id != EMPTY and table.slots[start + at].key != key:
        at = (at + 1) & mask
    return start + at


cdef inline int64_t _id(const Table *table, Py_ssize_t field, int64_t key) noexcept nogil:
    """The global id of key in field's vocabulary, or the field's rare id."""
    cdef Py_ssize_t at = _find(table, field, key)
    return table.slots[at].id if table.slots[at].id != EMPTY else table.offsets[field] + _RARE


cdef class KeyTable:
    """Each field's vocabulary (sorted int64 keys; rank r is feature FIRST_VALUE + r of the field)
    -> global feature ids, in one open-addressing table: linear probing in a power-of-two block
    per field that is at most half full. Built once, then only read."""

    cdef Table table
    cdef object _arrays  # the numpy arrays behind the table's per-field pointers
    cdef readonly Py_ssize_t n_fields

    def __cinit__(self, *args) -> None:
        self.table.slots = NULL

    def __init__(self, list vocabularies, list offsets) -> None:
        """vocabularies[f]: field f's sorted keys; offsets[f]: its first global id."""
        if len(vocabularies) != len(offsets):
            raise ValueError("one offset per vocabulary is needed")
        self.n_fields = len(vocabularies)
        starts = np.zeros(self.n_fields + 1, dtype=np.int64)
        masks = np.zeros(self.n_fields + 1, dtype=np.int64)
        for f, vocabulary in enumerate(vocabularies):
            size = 2
            while size < 2 * len(vocabulary):
                size *= 2
            masks[f], starts[f + 1] = size - 1, starts[f] + size
        first_ids = np.zeros(self.n_fields + 1, dtype=np.int64)
        first_ids[: self.n_fields] = offsets
        self._arrays = (starts, masks, first_ids)
        cdef int64_t[::1] view
        view = starts
        self.table.starts = &view[0]
        view = masks
        self.table.masks = &view[0]
        view = first_ids
        self.table.offsets = &view[0]
        cdef Py_ssize_t total = starts[self.n_fields], i
        self.table.slots = <Slot *>PyMem_Malloc(max(total, 1) * sizeof(Slot))
        if self.table.slots is NULL:
            raise MemoryError
        for i in range(total):
            self.table.slots[i].id = EMPTY
        cdef int64_t[::1] keys
        cdef Py_ssize_t rank, at
        for f, vocabulary in enumerate(vocabularies):
            keys = np.ascontiguousarray(vocabulary, dtype=np.int64)
            for rank in range(keys.shape[0]):
                at = _find(&self.table, f, keys[rank])
                self.table.slots[at].key = keys[rank]
                self.table.slots[at].id = self.table.offsets[f] + _FIRST_VALUE + rank

    def __dealloc__(self) -> None:
        PyMem_Free(self.table.slots)

    def lookup(self, Py_ssize_t field, const int64_t[::1] keys):
        """Global ids of keys of field `field` (its rare id where not in its vocabulary)."""
        if not 0 <= field < self.n_fields:
            raise IndexError(f"field {field} of {self.n_fields}")
        out = np.empty(keys.shape[0], dtype=np.int64)
        cdef int64_t[::1] view = out
        cdef Py_ssize_t i
        with nogil:
            for i in range(keys.shape[0]):
                view[i] = _id(&self.table, field, keys[i])
        return out


cdef class CategoryTable(KeyTable):
    """A KeyTable of the categorical fields' vocabularies (text hashes) that hashes texts."""

    cdef uint64_t k0, k1

    def __init__(self, list vocabularies, list offsets, bytes key) -> None:
        """key: the 16-byte SipHash key of the spec's hash seed (`_hashing.hash_key`)."""
        if len(key) != 16:
            raise ValueError("a 16-byte key is needed")
        self.k0, self.k1 = _le64(key, 8), _le64(<const uint8_t *>key + 8, 8)
        super().__init__(vocabularies, offsets)

    def text_ids(self, list texts, const int64_t[::1] fields):
        """Global ids of texts[i] (non-empty str) of field fields[i]; -1 for a text that has no
        UTF-8 form (a lone surrogate)."""
        cdef Py_ssize_t i, n = len(texts), size
        cdef const char *text
        if fields.shape[0] != n:
            raise ValueError(f"{n} texts and {fields.shape[0]} fields")
        out = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] view = out
        cdef str item
        for i in range(n):
            if not 0 <= fields[i] < self.n_fields:
                raise IndexError(f"field {fields[i]} of {self.n_fields}")
            item = texts[i]
            text = PyUnicode_AsUTF8AndSize(<PyObject *>item, &size)
            if text is NULL:
                PyErr_Clear()
                view[i] = EMPTY
            else:
                view[i] = _id(&self.table, fields[i], <int64_t>training_hash(
                    self.k0, self.k1, <const uint8_t *>text, size))
        return out

    def fill(self, list columns, int64_t[:, ::1] out):
        """out[f, i] = the global id of columns[f][i] for str values ("" missing) and None
        (missing); -2 for any other value, which the caller resolves. Returns how many -2."""
        cdef Py_ssize_t n_fields = len(columns), n_rows = out.shape[1], f, i, k, size
        if n_fields != self.n_fields or out.shape[0] != n_fields:
            raise ValueError(f"{n_fields} columns and {out.shape[0]} out rows for "
                             f"{self.n_fields} fields")
        for f in range(n_fields):
            if len(<list?>columns[f]) != n_rows:
                raise ValueError(f"column {f} has {len(columns[f])} values for {n_rows} rows")
        cdef Py_ssize_t n = n_fields * n_rows, left = 0
        if n == 0:
            return 0
        # One pass, value by value: the values are scattered heap objects, so the time goes in
        # fetching them from memory; a prefetch a few values ahead overlaps those fetches.
        cdef PyObject *column
        cdef PyObject *value
        cdef const char *text
        cdef int64_t missing
        for f in range(n_fields):
            column = <PyObject *>columns[f]
            missing = self.table.offsets[f] + _MISSING
            for i in range(n_rows):
                if i + PREFETCH < n_rows:
                    __builtin_prefetch(PyList_GET_ITEM(column, i + PREFETCH))
                value = PyList_GET_ITEM(column, i)
                if value == Py_None:
                    out[f, i] = missing
                elif PyUnicode_CheckExact(value):
                    text = PyUnicode_AsUTF8AndSize(value, &size)
                    if text is NULL:  # a lone surrogate: Python reports it
                        PyErr_Clear()
                        out[f, i] = NOT_PLAIN_VALUE
                        left += 1
                    elif size == 0:
                        out[f, i] = missing
                    else:
                        out[f, i] = _id(&self.table, f, <int64_t>training_hash(
                            self.k0, self.k1, <const uint8_t *>text, size))
                else:
                    out[f, i] = NOT_PLAIN_VALUE
                    left += 1
        return left


cdef class NumericTable(KeyTable):
    """A KeyTable of the numeric fields' bin keys that bins numbers as `_binning` does."""

    cdef list _edges

    def __init__(self, list vocabularies, list offsets, list edges) -> None:
        """edges[f]: field f's quantile edges, or None for the log-square rule."""
        if len(edges) != len(vocabularies):
            raise ValueError("one edges entry (or None) per vocabulary is needed")
        self._edges = [None if e is None else np.ascontiguousarray(e, dtype=np.float64)
                       for e in edges]
        super().__init__(vocabularies, offsets)

    def fill(self, const double[:, ::1] values, const double[:, ::1] logs, int64_t[:, ::1] out):
        """out[f, i] = the global id of number values[f, i] (NaN: missing), binned by field f's
        quantile edges (`quantile_bins`) or by the log-square rule (`log_square_bins`) with
        logs[f, i] = np.log(max(|v|, SMALL)): numpy's log, the one training takes, so that a
        value next to a bin boundary lands where training put it."""
        cdef Py_ssize_t n_fields = values.shape[0], n_rows = values.shape[1], f, i, lo, hi, mid
        if (n_fields != self.n_fields or out.shape[0] != n_fields or logs.shape[0] != n_fields
                or out.shape[1] != n_rows or logs.shape[1] != n_rows):
            raise ValueError(f"values, logs and out of shapes {values.shape[0]}x{n_rows}, "
                             f"{logs.shape[0]}x{logs.shape[1]} and {out.shape[0]}x"
                             f"{out.shape[1]} for {self.n_fields} fields")
        cdef const double[::1] edges
        cdef double v, m
        cdef int64_t key
        cdef bint quantile
        for f in range(n_fields):
            quantile = self._edges[f] is not None
            if quantile:
                edges = self._edges[f]
            with nogil:
                for i in range(n_rows):
                    v = values[f, i]
                    if v != v:  # NaN
                        out[f, i] = self.table.offsets[f] + _MISSING
                        continue
                    if quantile:  # the number of edges <= v
                        lo, hi = 0, edges.shape[0]
                        while lo < hi:
                            mid = (lo + hi) // 2
                            if edges[mid] <= v:
                                lo = mid + 1
                            else:
                                hi = mid
                        key = lo
                    elif v > _SMALL:
                        m = logs[f, i]
                        key = _POSITIVE_BASE + <int64_t>floor(m * m)
                    elif v < -_SMALL:
                        m = logs[f, i]
                        key = _NEGATIVE_BASE - <int64_t>floor(m * m)
                    else:
                        key = <int64_t>floor(v)
                    out[f, i] = _id(&self.table, f, key)


def plain_floats(list values, double[::1] out, Py_ssize_t start=0):
    """out[i] = the value as a double for a finite float, an int (not bool) and None (NaN), from
    i = start on. Returns the index of the first other value (another type, an infinity, an int
    beyond a double's range), where it stopped, else -1."""
    cdef Py_ssize_t i, n = len(values)
    cdef double number
    if out.shape[0] < n or start < 0:
        raise ValueError(f"{out.shape[0]} doubles for {n} values, from {start}")
    for i in range(start, n):
        if i + PREFETCH < n:  # scattered objects: fetch ahead, as CategoryTable.fill does
            __builtin_prefetch(PyList_GET_ITEM(<PyObject *>values, i + PREFETCH))
        value = values[i]
        if type(value) is float:
            number = PyFloat_AS_DOUBLE(value)
            if isinf(number):
                return i
            out[i] = number
        elif value is None:
            out[i] = NAN
        elif type(value) is int:
            try:
                number = PyLong_AsDouble(value)
            except OverflowError:
                return i
            out[i] = number
        else:
            return i
    return -1
