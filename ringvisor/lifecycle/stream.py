"""The image format: a versioned stream of checksummed sections.

Modelled on Xen's migration stream v2 (an image header, then typed records up
to an END record) and QEMU's savevm (one section per device, each with its own
version)::

    header   magic "RINGVSAV" (8) | format version u32 | flags u32 | crc32 u32
    section  kind u8 | name length u8 | name | section version u32 |
             payload length u64 | payload | crc32 u32 (of everything before it)
    ...
    END      kind 0xFF, name "", version 0, payload = u64 number of sections before it

All integers are little-endian.  Section kinds: ``STATE`` (a component's
state, canonical JSON: ``codec.py``), ``RAM`` (guest memory page by page:
``ram.py``), ``RAMREF`` (memory as page digests into a page store:
``store.py``), ``META`` (what the image is: mode, sizes, a description),
``PAGES`` (some pages by number: a round of a live migration, ``ram.py``),
``MAPPED`` (memory laid out page for page after the END record, to be mapped
rather than read: ``mapped.py``), ``IMAGE`` (a whole image inside another: a
recording's checkpoints) and ``EVENTS`` (a recording's host input: ``replay.py``).

Every way an image can be bad -- not an image, another program's file, a
newer format, a flipped bit, a cut-off end -- raises :class:`BadImage`, a
one-line error (exit status 2).  Files are written atomically (a temporary
file in the same directory, fsync, rename), so a crash never leaves half an
image under the name a user gave.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ringvisor.errors import ImageError

MAGIC = b"RINGVSAV"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sII")
SECTION_HEAD = struct.Struct("<BB")
SECTION_TAIL = struct.Struct("<IQ")
CRC = struct.Struct("<I")
STATE, RAM, RAMREF, META, PAGES, MAPPED, IMAGE, EVENTS, PAGEMAP, END = (1, 2, 3, 4, 5, 6, 7,
                                                                       8, 9, 0xFF)
KIND_NAMES = {STATE: "state", RAM: "ram", RAMREF: "ram-ref", META: "meta", PAGES: "pages",
              MAPPED: "mapped-ram", IMAGE: "image", EVENTS: "events", PAGEMAP: "page-map",
              END: "end"}
MIGRATION = 1                  # header flag: a live migration's stream (``migrate.py``)
POSTCOPY = 2                   # header flag: ... whose memory follows the VM (``postcopy.py``)
MAX_SECTION = 1 << 34          # 16 GiB: nothing in a VM of at most 3.5 GiB is bigger
READ_CHUNK = 1 << 20


class BadImage(ImageError):
    """An image that cannot be read (one line for the user, exit status 2)."""


@dataclass
class Section:
    kind: int
    name: str
    version: int
    payload: bytes


def pack_section(kind: int, name: str, version: int, payload: bytes) -> bytes:
    raw = name.encode()
    if len(raw) > 255:
        raise ValueError(f"section name too long: {name!r}")
    body = SECTION_HEAD.pack(kind, len(raw)) + raw + SECTION_TAIL.pack(version, len(payload)) + payload
    return body + CRC.pack(zlib.crc32(body))


def pack_header(flags: int = 0) -> bytes:
    head = HEADER.pack(MAGIC, FORMAT_VERSION, flags)
    return head + CRC.pack(zlib.crc32(head))


def pack_end(count: int) -> bytes:
    return pack_section(END, "", 0, struct.pack("<Q", count))


def pack_image(sections: list[Section]) -> bytes:
    parts = [pack_header()]
    parts += [pack_section(s.kind, s.name, s.version, s.payload) for s in sections]
    parts.append(pack_end(len(sections)))
    return b"".join(parts)


class SectionReader:
    """Reads sections from a binary stream (a file or a socket's ``makefile('rb')``)."""

    def __init__(self, stream, what: str = "image") -> None:
        self.stream = stream
        self.what = what
        self.count = 0
        self.done = False
        head = self._read(HEADER.size, "its header")
        if len(head) < 8 or head[:8] != MAGIC:
            raise BadImage(f"{what}: not a ringvisor image (no RINGVSAV magic at the start)")
        crc = self._read(4, "its header")
        if zlib.crc32(head) != CRC.unpack(crc)[0]:
            raise BadImage(f"{what}: corrupt image header (checksum mismatch)")
        _, version, self.flags = HEADER.unpack(head)
        if version > FORMAT_VERSION:
            raise BadImage(f"{what}: made by a newer ringvisor (image format {version}; "
                           f"this one reads format {FORMAT_VERSION} and older)")
        if version < 1:
            raise BadImage(f"{what}: unknown image format version {version}")
        self.version = version

    def _read(self, n: int, where: str) -> bytes:
        out = bytearray()
        while len(out) < n:
            # a megabyte at a time: a read allocates what it asks for, and a length a
            # forged header or a hostile peer claims (up to MAX_SECTION) is no promise
            chunk = self.stream.read(min(n - len(out), READ_CHUNK))
            if not chunk:
                raise BadImage(f"{self.what}: truncated (it ends inside {where})")
            out += chunk
        return bytes(out)

    def next(self) -> Section | None:
        """The next section, or None after END (which is checked)."""
        if self.done:
            return None
        label = f"section {self.count + 1}"
        head = self._read(SECTION_HEAD.size, label)
        kind, nlen = SECTION_HEAD.unpack(head)
        raw_name = self._read(nlen, label)
        try:
            name = raw_name.decode()
        except UnicodeDecodeError:
            raise BadImage(f"{self.what}: corrupt ({label} has an unreadable name)") from None
        label = f"section {name!r}" if name else label
        tail = self._read(SECTION_TAIL.size, label)
        version, length = SECTION_TAIL.unpack(tail)
        if kind not in KIND_NAMES:
            raise BadImage(f"{self.what}: corrupt or from a newer ringvisor ({label} has "
                           f"unknown kind {kind})")
        if length > MAX_SECTION:
            raise BadImage(f"{self.what}: corrupt ({label} claims {length} bytes)")
        payload = self._read(length, label)
        crc = CRC.unpack(self._read(CRC.size, label))[0]
        if zlib.crc32(head + raw_name + tail + payload) != crc:
            raise BadImage(f"{self.what}: corrupt ({label}: checksum mismatch)")
        if kind == END:
            if length != 8 or struct.unpack("<Q", payload)[0] != self.count:
                raise BadImage(f"{self.what}: corrupt (the end record does not match "
                               f"the {self.count} sections read)")
            self.done = True
            return None
        self.count += 1
        return Section(kind, name, version, payload)

    def __iter__(self):
        while (s := self.next()) is not None:
            yield s


def read_sections(data: bytes, what: str = "image") -> list[Section]:
    import io
    return list(SectionReader(io.BytesIO(data), what))


def read_file(path: str | os.PathLike) -> bytes:
    with open_file(path) as f:
        return f.read()


def open_file(path: str | os.PathLike):
    """``path`` opened for reading in binary, or a one-line BadImage."""
    p = Path(path)
    try:
        f = open(p, "rb")
        if not os.path.isfile(p):
            f.close()
            raise IsADirectoryError
        return f
    except FileNotFoundError:
        raise BadImage(f"{p}: no such image") from None
    except IsADirectoryError:
        raise BadImage(f"{p}: is a directory, not an image") from None
    except PermissionError:
        raise BadImage(f"{p}: permission denied") from None
    except OSError as e:
        raise BadImage(f"{p}: cannot read: {e.strerror}") from None


def check_target(path: str | os.PathLike, option: str) -> None:
    """Refuse, before a VM runs, a file name ``write_atomic`` could not write: one line
    then, rather than one after the run, following what the run printed."""
    p = Path(path)
    if not str(path):
        raise ImageError(f"{option}: an empty file name")
    directory = p.parent if str(p.parent) else Path(".")
    try:
        if os.path.isdir(p):
            raise ImageError(f"{option} {p}: is a directory")
        os.stat(p)
    except FileNotFoundError:
        pass
    except OSError as e:                  # a name too long, a file where a directory should be
        raise ImageError(f"{option} {p}: {e.strerror}") from None
    if not os.path.isdir(directory):
        raise ImageError(f"{option} {p}: no such directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ImageError(f"{option} {p}: permission denied")


def write_atomic(path: str | os.PathLike, data) -> None:
    """Write ``data`` to ``path`` so that the name holds either the old file or all of the new.

    ``data``: bytes, a list of bytes, or a function that writes to the open file
    (a sparse file: ``mapped.py``)."""
    p = Path(path)
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) or callable(data) else data
    directory = p.parent if str(p.parent) else Path(".")
    if p.exists() and not p.is_file() and not p.is_dir():
        # a device or a pipe (/dev/null, a FIFO a script reads): written in place --
        # renaming a file over it would replace the device node
        try:
            with open(p, "wb") as f:
                for part in parts:
                    part(f) if callable(part) else f.write(part)
        except OSError as e:
            raise ImageError(f"{p}: cannot write: {e.strerror}") from None
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise ImageError(f"{p}: no such directory") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot write: {e.strerror}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)        # as open() would have made it
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                part(f) if callable(part) else f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:        # (Ctrl-C, or a writer's own error: no .tmp left)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(e, OSError):
            raise
        raise ImageError(f"{p}: cannot write: {e.strerror}") from None
    try:       # the rename itself must reach the disk too
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
