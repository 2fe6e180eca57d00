"""glibc's malloc, told to give big blocks back.

Each password hash or check (auth/passwords.py) takes a 19 MiB block for
Argon2, in a worker thread. By default glibc maps the first such block and,
when it is freed, raises its mmap threshold to that size: every later one
comes from the thread's own arena, which keeps it. Each thread that ever
checked a password then held 19 MiB for good (measured: +19 MB after the
first login; up to one block per thread of the default executor, which has
min(32, cores + 4)). A fixed threshold keeps every block of 1 MiB or more
mapped, and unmapped when freed: a check costs 10 ms more CPU in page
faults (22 -> 33 ms here), and keeps nothing.

(Fewer arenas, M_ARENA_MAX=2, held 0-1 MB less after 20,000 requests on
top of this: not set.) glibc only; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD = 1024 * 1024


def tune_malloc() -> None:
    """For this process, and any threads it starts."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (AttributeError, OSError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
