"""Linux's userfaultfd: memory whose missing pages another process supplies.

Post-copy migration (``postcopy.py``) resumes a VM before its memory has
arrived.  Every path that touches guest memory -- the CPU's fast paths through
the typed views, the page walker, devices, the monitors -- indexes one buffer,
so the only place a first touch can be caught whatever path made it is the
host's MMU.  A region registered with a userfaultfd in MISSING mode makes the
host kernel stop the thread touching a page that was never populated and queue
a message on the descriptor; whoever holds the descriptor resolves it with
``UFFDIO_COPY`` (the page's bytes) or ``UFFDIO_ZEROPAGE``, and the thread goes
on as if the page had always been there.  QEMU's post-copy works this way
(``migration/postcopy-ram.c``), and so does CRIU's lazy-pages daemon, which
holds the descriptor in another process, as here: the faulting thread holds
Python's interpreter lock while it is stopped, so the pages must come from a
process with an interpreter of its own.

The structures and request numbers are ``include/uapi/linux/userfaultfd.h``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import struct

from ringvisor.errors import RingvisorError

PAGE = 4096
SYSCALL = {"x86_64": 323, "aarch64": 282, "i686": 374, "i386": 374}.get(platform.machine())
UFFD_API = 0xAA
USER_MODE_ONLY = 1                      # UFFD_USER_MODE_ONLY: for a process without privilege
MODE_MISSING = 1                        # UFFDIO_REGISTER_MODE_MISSING
EVENT_PAGEFAULT = 0x12                  # UFFD_EVENT_PAGEFAULT
MSG = struct.Struct("<BBHI QQ Q")       # struct uffd_msg: event, ..., pagefault.flags, .address


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (UFFD_API << 8) | nr


UFFDIO_API = _iowr(0x3F, 24)            # struct uffdio_api {api, features, ioctls}
UFFDIO_REGISTER = _iowr(0x00, 32)       # struct uffdio_register {start, len, mode, ioctls}
UFFDIO_COPY = _iowr(0x03, 40)           # struct uffdio_copy {dst, src, len, mode, copy}
UFFDIO_ZEROPAGE = _iowr(0x04, 32)       # struct uffdio_zeropage {start, len, mode, zeropage}


class Unavailable(RingvisorError):
    """This host cannot hand out missing pages (no userfaultfd, or not allowed)."""


def _create() -> int:
    if SYSCALL is None:
        raise Unavailable(f"no userfaultfd on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = -1
    for flags in (0, USER_MODE_ONLY):   # kernel-mode faults too, where we may
        fd = libc.syscall(SYSCALL, os.O_CLOEXEC | os.O_NONBLOCK | flags)
        if fd >= 0:
            break
    if fd < 0:
        raise Unavailable(f"userfaultfd: {os.strerror(ctypes.get_errno())} (see "
                          f"/proc/sys/vm/unprivileged_userfaultfd)")
    try:
        fcntl.ioctl(fd, UFFDIO_API, bytearray(struct.pack("<QQQ", UFFD_API, 0, 0)))
    except OSError as e:
        os.close(fd)
        raise Unavailable(f"userfaultfd: {e.strerror}") from None
    return fd


def check() -> None:
    """Raise :class:`Unavailable` unless this process could register memory."""
    os.close(_create())


def anonymous(size: int) -> mmap.mmap:
    """``size`` bytes of private anonymous memory, no page of it populated yet."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE)


def address(buf) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def register(buf: mmap.mmap) -> int:
    """A userfaultfd (non-blocking) on which every first touch of ``buf`` is reported."""
    fd = _create()
    try:
        fcntl.ioctl(fd, UFFDIO_REGISTER,
                    bytearray(struct.pack("<QQQQ", address(buf), len(buf), MODE_MISSING, 0)))
    except OSError as e:
        os.close(fd)
        raise Unavailable(f"userfaultfd: cannot register the VM's memory ({e.strerror})") from None
    return fd


class Filler:
    """The other end: the registered region's faults, and the pages that resolve them."""

    def __init__(self, fd: int, base: int, npages: int) -> None:
        self.fd, self.base, self.npages = fd, base, npages

    def faults(self) -> list[int]:
        """The page numbers touched while missing, as reported since the last call."""
        out = []
        while True:
            try:
                data = os.read(self.fd, MSG.size * 64)
            except BlockingIOError:
                return out
            for k in range(0, len(data) - MSG.size + 1, MSG.size):
                event, _, _, _, _, addr, _ = MSG.unpack_from(data, k)
                if event == EVENT_PAGEFAULT:
                    page = (addr - self.base) // PAGE
                    if 0 <= page < self.npages:
                        out.append(page)

    def _ioctl(self, request: int, fmt: str, *fields) -> None:
        while True:
            try:
                fcntl.ioctl(self.fd, request, bytearray(struct.pack(fmt, *fields)))
                return
            except OSError as e:
                if e.errno == errno.EAGAIN:     # the region changed under us: try again
                    continue
                if e.errno == errno.EEXIST:     # populated already (not by us: harmless)
                    return
                raise

    def copy(self, first: int, data: bytes) -> None:
        """Populate pages ``first``.. with ``data`` (whole pages), waking their waiters."""
        src = ctypes.create_string_buffer(data, len(data))
        self._ioctl(UFFDIO_COPY, "<QQQQq", self.base + first * PAGE, ctypes.addressof(src),
                    len(data), 0, 0)

    def zero(self, first: int, count: int) -> None:
        """Populate ``count`` pages from ``first`` with zeros."""
        self._ioctl(UFFDIO_ZEROPAGE, "<QQQq", self.base + first * PAGE, count * PAGE, 0, 0)
