# cython: language_level=3
"""A model file's bytes as a read-only buffer that keeps the file's contents as loaded, whatever
happens to the file afterwards (csrc/mapped_file.c: a leased shared mapping, copied over the same
addresses when someone opens the file to write it; a private copy where no lease can be had)."""
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_FillInfo
from libc.stdint cimport int64_t

import numpy as np

from rt.errors import ModelFileError

cdef extern from "mapped_file.h" nogil:
    ctypedef struct rt_mapped:
        pass
    enum:
        RT_MAPPED_LEASED
        RT_MAPPED_PRIVATE
        RT_MAPPED_DETACHED
        RT_MAPPED_INHERITED
    rt_mapped *rt_mapped_open(int fd, int64_t size, char *msg, size_t msglen)
    const char *rt_mapped_data(const rt_mapped *m)
    int rt_mapped_state(rt_mapped *m)
    int rt_mapped_keep(rt_mapped *m, const int64_t *ranges, int64_t nranges)
    void rt_mapped_drop(rt_mapped *m, int64_t start, int64_t length)
    void rt_mapped_close(rt_mapped *m)

STATES = {RT_MAPPED_LEASED: "leased", RT_MAPPED_PRIVATE: "private", RT_MAPPED_DETACHED: "detached",
          RT_MAPPED_INHERITED: "inherited"}


cdef class MappedFile:
    """`size` bytes of the open file `fd`, as a read-only buffer (np.frombuffer reads it in place).
    state: "leased" (the file's pages, loaded lazily), "private" (all copied: no lease could be taken)
    or "detached" (someone opened the file to write it: the kept ranges were copied first); in a forked
    child, "inherited" (the parent's leased pages, which the child's lease does not cover)."""
    cdef rt_mapped *m
    cdef readonly int64_t size

    def __cinit__(self, int fd, int64_t size):
        cdef char msg[256]
        self.m = rt_mapped_open(fd, size, msg, sizeof(msg))
        if self.m == NULL:
            raise OSError(msg.decode())
        self.size = size

    def __dealloc__(self):
        if self.m != NULL:
            rt_mapped_close(self.m)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a model file's mapping is read-only")
        PyBuffer_FillInfo(view, self, <void *>rt_mapped_data(self.m), self.size, 1, flags)

    @property
    def address(self):
        return <size_t>rt_mapped_data(self.m)

    @property
    def state(self):
        return STATES[rt_mapped_state(self.m)]

    def keep(self, ranges):
        """Copy only these (start, length) byte ranges if the file is opened for writing (None: all).
        False when the bytes asked for are already gone (the mapping detached with fewer kept)."""
        if ranges is None:
            return rt_mapped_keep(self.m, NULL, 0) == 0
        cdef int64_t[:, ::1] r = np.ascontiguousarray(np.array(ranges, dtype=np.int64).reshape(-1, 2))
        cdef int64_t none = 0
        cdef int64_t n = r.shape[0]
        return rt_mapped_keep(self.m, &r[0, 0] if n else &none, n) == 0     # (not NULL: keep nothing)

    def drop(self, int64_t start, int64_t length):
        """Give back the pages inside [start, start + length) while they are the file's."""
        rt_mapped_drop(self.m, start, length)
