"""Shared-memory rings: xenstore's wire protocol and the console ring.

Both are a page shared between a domain and a service in Domain 0, with one
event channel to say "look at the ring".  Producer and consumer indexes only
grow (free-running 32-bit counters); a slot is ``index % size``
(``MASK_XENSTORE_IDX``, ``MASK_XENCONS_IDX``).  A writer fills the bytes, then
publishes the new producer index (a write barrier between), then notifies.

xenstore (``xen/include/public/io/xs_wire.h``): each message is a
``xsd_sockmsg`` header (type, req_id, tx_id, len) and ``len`` payload bytes,
strings NUL-separated; requests travel in ``req``, replies and watch events in
``rsp``.  An error reply is ``XS_ERROR`` with the errno's name ("EACCES").

console (``io/console.h``): ``out`` carries what the guest prints, ``in``
what is typed at it.
"""

from __future__ import annotations

from enum import IntEnum

from .cstruct import CHAR, U32, Field, Struct

XENSTORE_RING_SIZE = 1024
XENSTORE_PAYLOAD_MAX = 4096
XENSTORE_ABS_PATH_MAX = 3072
XENSTORE_REL_PATH_MAX = 2048
XENCONS_IN_SIZE = 1024
XENCONS_OUT_SIZE = 2048


def ring_read(read, base: int, size: int, index: int, n: int) -> bytes:
    """``n`` bytes from the byte ring of ``size`` bytes at ``base``, from free-running
    index ``index`` on (wrapping at the end: two reads at most); ``read(addr, n)``."""
    out = b""
    while n > 0:
        off = index % size
        chunk = min(n, size - off)
        out += read(base + off, chunk)
        index, n = index + chunk, n - chunk
    return out


def ring_write(write, base: int, size: int, index: int, data: bytes) -> None:
    """``data`` into the byte ring of ``size`` bytes at ``base``, from free-running index
    ``index`` on (the caller has checked the room, and publishes the producer index);
    ``write(addr, data)``."""
    data = bytes(data)
    while data:
        off = index % size
        chunk = min(len(data), size - off)
        write(base + off, data[:chunk])
        index, data = index + chunk, data[chunk:]


class XsType(IntEnum):
    """``enum xsd_sockmsg_type``."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


class XsWatchField(IntEnum):
    """``XS_WATCH_PATH``/``XS_WATCH_TOKEN``: the strings of a watch event."""

    PATH = 0
    TOKEN = 1


class XenbusState(IntEnum):
    """``enum xenbus_state`` (io/xenbus.h): the front/back-end handshake."""

    Unknown = 0
    Initialising = 1
    InitWait = 2
    Initialised = 3
    Connected = 4
    Closing = 5
    Closed = 6
    Reconfiguring = 7
    Reconfigured = 8


# xs_wire.h's xsd_errors, in its order: the names an XS_ERROR reply carries
XSD_ERRORS = ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
              "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG")

XSD_SOCKMSG = Struct("xsd_sockmsg", [
    Field("type", U32, comment="XS_*"), Field("req_id", U32, comment="echoed in the reply"),
    Field("tx_id", U32, comment="transaction, 0 for none"), Field("len", U32, comment="payload bytes")])

XENSTORE_DOMAIN_INTERFACE = Struct("xenstore_domain_interface", [
    Field("req", CHAR, XENSTORE_RING_SIZE, comment="requests to xenstored"),
    Field("rsp", CHAR, XENSTORE_RING_SIZE, comment="replies and watch events"),
    Field("req_cons", U32), Field("req_prod", U32),
    Field("rsp_cons", U32), Field("rsp_prod", U32),
    Field("server_features", U32), Field("connection", U32), Field("error", U32),
], comment="the xenstore ring page")

XENCONS_INTERFACE = Struct("xencons_interface", [
    Field("in", CHAR, XENCONS_IN_SIZE, comment="typed at the guest"),
    Field("out", CHAR, XENCONS_OUT_SIZE, comment="printed by the guest"),
    Field("in_cons", U32), Field("in_prod", U32),
    Field("out_cons", U32), Field("out_prod", U32),
], comment="the console ring page")

STRUCTS: tuple[Struct, ...] = (XSD_SOCKMSG, XENSTORE_DOMAIN_INTERFACE, XENCONS_INTERFACE)

CONSTANT_GROUPS = (
    (XsType, "XS_", "xenstore message types (io/xs_wire.h)"),
    (XenbusState, "XenbusState", "xenbus states (io/xenbus.h)"),
)

SINGLE_CONSTANTS = (
    ("XENSTORE_RING_SIZE", XENSTORE_RING_SIZE),
    ("XENSTORE_PAYLOAD_MAX", XENSTORE_PAYLOAD_MAX),
    ("XENCONS_IN_SIZE", XENCONS_IN_SIZE),
    ("XENCONS_OUT_SIZE", XENCONS_OUT_SIZE),
)
