"""Linux specifics: openat2(2) with RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS.

A bind mount of a directory from the same filesystem has the same st_dev as its
surroundings, so comparing devices cannot see it. openat2 refuses to cross any mount
point (EXDEV) and any symlink (ELOOP) in the kernel, race-free. Python has no binding,
so it is called through libc's syscall(); where the kernel lacks it (before 5.6), the
callers fall back to device checks plus the mountinfo scan they always do first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_SYMLINKS = 0x04
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "armv7l": 437, "ppc64le": 437, "s390x": 437}


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_available: bool | None = None


def openat2_available() -> bool:
    global _available
    if _available is None:
        _available = platform.machine() in _SYS_OPENAT2
        if _available:
            try:
                os.close(open_beneath(os.open("/", os.O_RDONLY | os.O_DIRECTORY), ".", own=True))
            except OSError as exc:
                _available = exc.errno not in (errno.ENOSYS, errno.EPERM)
    return _available


def open_beneath(dirfd: int, name: str, own: bool = False) -> int:
    """Open directory ``name`` relative to ``dirfd`` without crossing a mount or a symlink."""
    how = _OpenHow(
        os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW,
        0,
        RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS,
    )
    try:
        fd = _libc.syscall(
            _SYS_OPENAT2.get(platform.machine(), 437),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(os.fsencode(name)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), name)
        return int(fd)
    finally:
        if own:
            os.close(dirfd)
