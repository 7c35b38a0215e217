# The two per-value loops of serving a batch, in C: a dict lookup per categorical value, and plain
# JSON numbers to doubles. Both only read Python objects; every decision about a value that is
# not plain (a string, a bool, a list...) stays in Python (_encoder), so the semantics live there.
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsDouble, PyLong_AsLongLong
from cpython.object cimport PyObject
from libc.math cimport NAN


def memo_ids(list values, dict memo, long long[::1] out):
    """out[i] = memo[values[i]] where the memo has the value, else -1 (unhashable values too).
    Returns how many were not found."""
    cdef Py_ssize_t i, n = len(values), missing = 0
    cdef PyObject *found
    for i in range(n):
        found = PyDict_GetItem(memo, values[i])  # NULL when absent; errors are cleared
        if found is NULL:
            out[i] = -1
            missing += 1
        else:
            out[i] = PyLong_AsLongLong(<object>found)
    return missing


def plain_floats(list values, double[::1] out):
    """out[i] = the value as a double for float, int (not bool) and None (NaN). Returns the index
    of the first value of another type or an int beyond a double's range, else -1."""
    cdef Py_ssize_t i, n = len(values)
    cdef double number
    for i in range(n):
        value = values[i]
        if type(value) is float:
            out[i] = PyFloat_AS_DOUBLE(value)
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
