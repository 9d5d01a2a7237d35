"""The page cache of a set of files: evict it without root, and measure how much of it is resident.

`posix_fadvise(POSIX_FADV_DONTNEED)` drops a file's clean cached pages for every process (it is advice about the
file, not about the caller), which is what a fresh node sees: weights on a disk nothing has read yet. Unlike
`echo 3 > /proc/sys/vm/drop_caches` it needs no root and touches only the files named. Pages still mapped by a
live process stay, so eviction happens between server runs, and `resident_fraction` checks that it worked.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from pathlib import Path

READ_CHUNK = 16 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
_MAP_FAILED = ctypes.c_void_p(-1).value


def files_under(directory: Path) -> list[Path]:
    """Every file the server loads from a model directory: weights, configs, tokenizer, scheduler."""
    return sorted(p for p in directory.rglob("*") if p.is_file())


def evict(files: list[Path]) -> None:
    """Drop the cached pages of ``files``; dirty pages are written back first, since DONTNEED skips them."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _resident_pages(path: Path) -> tuple[int, int]:
    size = path.stat().st_size
    if size == 0:
        return 0, 0
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            vec = ctypes.create_string_buffer(pages)
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return sum(byte & 1 for byte in vec.raw), pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def resident_fraction(files: list[Path]) -> float:
    """Share of the pages of ``files`` that sit in the page cache (mincore), 0.0 to 1.0."""
    resident = total = 0
    for path in files:
        r, t = _resident_pages(path)
        resident += r
        total += t
    return resident / total if total else 0.0


def raw_read_s(files: list[Path]) -> float:
    """Seconds to read ``files`` into one reused buffer: what the disk (cold) or page cache (warm) delivers."""
    import time

    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(view):
                pass
    return time.perf_counter() - start
