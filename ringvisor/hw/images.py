"""Reading the images a user names -- a kernel, a module, a ROM -- into bytes: bounded by
what they may be (the guest's memory, a ROM's largest size), so that a device that never
ends (``/dev/zero``) or a pipe is refused in one line instead of read until the host's
memory runs out."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ringvisor.errors import ImageError


def read_image(path: str | os.PathLike, what: str = "kernel", max_bytes: int | None = None,
               limit: str = "of guest memory") -> bytes:
    """The bytes of an image file; more than ``max_bytes`` (``limit`` says what bounds it)
    is refused before reading it all (a device such as /dev/zero never ends)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode):
                size = st.st_size
                data = b"" if max_bytes is not None and size > max_bytes else f.read()
            else:
                data = _read_bounded(f, max_bytes)
                size = len(data)
        if max_bytes is not None and size > max_bytes:
            amount = f"{size} bytes" if stat.S_ISREG(st.st_mode) else "endless or too long"
            raise ImageError(f"{p}: {what} image is {amount}, more than the "
                             f"{max_bytes >> 20} MiB {limit}")
        return data
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory, not a {what} image") from None
    except FileNotFoundError:
        raise ImageError(f"{p}: no such {what} image") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read: {e.strerror}") from None


def _read_bounded(f, max_bytes: int | None) -> bytes:
    """At most ``max_bytes`` + 1 bytes of a stream that does not say its size (without a
    bound: the most a 32-bit guest could hold)."""
    bound = (max_bytes if max_bytes is not None else 1 << 32) + 1
    out = bytearray()
    while len(out) < bound:
        chunk = f.read(min(1 << 20, bound - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_module(spec: str, max_bytes: int | None = None) -> tuple[str, bytes, str]:
    """A module given as ``"FILE ARGS"`` (QEMU's -initrd syntax): the file is read,
    and the module's string is the whole ``spec``, file name and arguments."""
    path, _, args = spec.strip().partition(" ")
    return path, read_image(path, "module", max_bytes), args.strip()
