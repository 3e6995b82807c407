"""Memory for the compiled backend's arrays: kept by the C allocator between training steps, not handed back.

A training step allocates and frees the same tens of megabytes of numpy arrays every time. By default glibc's
malloc serves each block above 128 KiB-32 MiB (its adaptive mmap threshold) with a fresh mapping, and gives free
memory at the top of its heaps back to the system, so every step faults all those pages in again: about 4 ms of a
23 ms step at the benchmark's N=50 (docs/benchmarks.md). :func:`keep_freed_memory` raises glibc's mmap threshold to
32 MiB and its trim threshold to 128 MiB, so freed blocks are reused by the next step instead.

It changes the allocator of the whole process, so :class:`captionkit.CaptioningRNN` calls it only when it runs on
the compiled backend, and it does nothing when ``CAPTIONKIT_KEEP_FREED_MEMORY=0``, when the user tunes malloc
through its own environment variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``),
or where the C library is not glibc. The process's peak memory is unchanged; what it holds between steps is that
peak rather than less.
"""
import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 128 << 20
_GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_done = None


def keep_freed_memory():
    """Ask glibc's malloc to keep freed blocks for reuse (once per process); True when the setting is in force."""
    global _done
    if _done is None:
        _done = _apply()
    return _done


def _apply():
    if os.environ.get("CAPTIONKIT_KEEP_FREED_MEMORY", "1") == "0" or any(v in os.environ for v in _GLIBC_VARIABLES):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):  # not glibc (musl has mallopt)
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
