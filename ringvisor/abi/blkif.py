"""The block split driver's interface: Xen's ``io/blkif.h`` and ``io/ring.h``.

A front-end (blkfront, in the guest) and a back-end (blkback) share one page,
the *shared ring*: a header of free-running indexes (``req_prod``,
``req_event``, ``rsp_prod``, ``rsp_event``, then padding to 64 bytes) and
slots, each large enough for a request or a response (the union of the
two: ``__RING_SIZE`` is the number of such slots that fit in the page,
rounded down to a power of two -- 32 for blkif on x86_32).  A slot is
``index % RING_SIZE``.

A request names up to ``BLKIF_MAX_SEGMENTS_PER_REQUEST`` (11) segments, each
a grant reference to a page of the front-end and the 512-byte sectors of it
to transfer (``first_sect``..``last_sect``, 0..7); the sectors of the disk
are consecutive from ``sector_number`` across the segments.  The response
echoes ``id`` and ``operation`` with a status: ``BLKIF_RSP_OKAY``,
``BLKIF_RSP_ERROR``, ``BLKIF_RSP_EOPNOTSUPP``.

Notification follows ``RING_PUSH_*_AND_CHECK_NOTIFY``: a producer that moves
its index from ``old`` to ``new`` notifies the peer if the peer's event
index lies in ``(old, new]``; a consumer that ran dry sets its event index
to one past what it consumed and looks again (``RING_FINAL_CHECK_FOR_*``).

The xenbus handshake (``io/xenbus.h``'s states, in ``rings.XenbusState``)
runs over xenstore: ``device/vbd/DEV`` of the front-end's domain and
``backend/vbd/DOMID/DEV`` of the back-end's, ``DEV`` being the Linux device
number of the virtual disk (``xvda`` = 202 << 8 = 51712).
"""

from __future__ import annotations

from enum import IntEnum

from .cstruct import DOMID, GREF, I16, PORT, PTR, U8, U16, U32, U64, Field, Struct

BLKIF_MAX_SEGMENTS_PER_REQUEST = 11
SECTOR_SIZE = 512                       # blkif's sectors are 512 bytes, whatever the disk's
SECTORS_PER_PAGE = 4096 // SECTOR_SIZE
RING_HEADER = 64                        # req_prod, req_event, rsp_prod, rsp_event, pad
XVD_MAJOR = 202                         # Linux's major number of xvd* devices


class BlkifOp(IntEnum):
    """``BLKIF_OP_*``."""

    read = 0
    write = 1
    write_barrier = 2
    flush_diskcache = 3
    reserved_1 = 4
    discard = 5
    indirect = 6


class BlkifRsp(IntEnum):
    """``BLKIF_RSP_*``: a response's status."""

    EOPNOTSUPP = -2
    ERROR = -1
    OKAY = 0


BLKIF_REQUEST_SEGMENT = Struct("blkif_request_segment", [
    Field("gref", GREF, comment="a page of the front-end, granted to the back-end"),
    Field("first_sect", U8, comment="first 512-byte sector of the page to transfer"),
    Field("last_sect", U8, comment="last one (inclusive)"),
    Field("_pad", U16)])

BLKIF_REQUEST = Struct("blkif_request", [
    Field("operation", U8, comment="BLKIF_OP_*"),
    Field("nr_segments", U8, comment="1..11 for read/write"),
    Field("handle", U16, comment="the virtual device"),
    Field("id", U64, comment="echoed in the response"),
    Field("sector_number", U64, comment="start sector on the disk"),
    Field("seg", BLKIF_REQUEST_SEGMENT, BLKIF_MAX_SEGMENTS_PER_REQUEST)])

BLKIF_RESPONSE = Struct("blkif_response", [
    Field("id", U64, comment="the request's"),
    Field("operation", U8, comment="the request's"),
    Field("status", I16, comment="BLKIF_RSP_*")])

BLKIF_SRING_HEADER = Struct("blkif_sring_header", [
    Field("req_prod", U32), Field("req_event", U32),
    Field("rsp_prod", U32), Field("rsp_event", U32),
    Field("pad", U8, RING_HEADER - 16)], comment="the shared ring's indexes")

class RvBlkbackOp(IntEnum):
    """``rv_blkback_op`` commands (ringvisor's, at ``__HYPERVISOR_arch_1``): Domain 0's
    toolstack hands a negotiated ring to the block back-end inside the hypervisor (the
    monolithic structure, docs/xen.md), and takes it back; or gives a bt domain an ATA
    disk the hypervisor emulates (the hosted structure: ``domid``, ``readonly``,
    ``path``, ``path_len`` in, ``sectors`` out)."""

    attach = 0
    detach = 1
    attach_ata = 2


RV_BLKBACK_OP = Struct("rv_blkback_op", [
    Field("domid", DOMID, comment="the front-end's domain"),
    Field("readonly", U16),
    Field("ring_ref", GREF, comment="the front-end's grant of its ring page"),
    Field("port", PORT, comment="Domain 0's port bound to the front-end's channel"),
    Field("path", PTR, comment="char *: the image file on the host"),
    Field("path_len", U32),
    Field("sectors", U32, comment="out (attach): the image's size"),
    Field("handle", U32, comment="out (attach) / in (detach)")])

SLOT_SIZE = max(BLKIF_REQUEST.size, BLKIF_RESPONSE.size)


def ring_size(page: int = 4096) -> int:
    """``__RING_SIZE``: slots in a page, rounded down to a power of two."""
    n = (page - RING_HEADER) // SLOT_SIZE
    return 1 << (n.bit_length() - 1)


BLKIF_RING_SIZE = ring_size()


def slot_offset(index: int) -> int:
    """Where slot ``index`` (a free-running index) lies in the shared page."""
    return RING_HEADER + (index % BLKIF_RING_SIZE) * SLOT_SIZE


def needs_notify(old: int, new: int, event: int) -> bool:
    """``RING_PUSH_*_AND_CHECK_NOTIFY``: the peer asked to hear of index ``event``
    and it lies in ``(old, new]`` (free-running 32-bit arithmetic)."""
    return (new - event) & 0xFFFFFFFF < (new - old) & 0xFFFFFFFF


def vbd_device(name: str) -> int:
    """The device number of ``xvdX`` (Linux's ``202 << 8 | index * 16``)."""
    if len(name) != 4 or not name.startswith("xvd") or not "a" <= name[3] <= "p":
        raise ValueError(f"{name!r} is not a virtual disk name xvda..xvdp")
    return XVD_MAJOR << 8 | (ord(name[3]) - ord("a")) * 16


STRUCTS: tuple[Struct, ...] = (BLKIF_REQUEST_SEGMENT, BLKIF_REQUEST, BLKIF_RESPONSE,
                               BLKIF_SRING_HEADER, RV_BLKBACK_OP)

CONSTANT_GROUPS = (
    (BlkifOp, "BLKIF_OP_", "block requests (io/blkif.h)"),
    (BlkifRsp, "BLKIF_RSP_", "block response status (io/blkif.h)"),
    (RvBlkbackOp, "RV_BLKBACK_", "rv_blkback_op commands (ringvisor)"),
)

SINGLE_CONSTANTS = (
    ("BLKIF_MAX_SEGMENTS_PER_REQUEST", BLKIF_MAX_SEGMENTS_PER_REQUEST),
    ("BLKIF_RING_SIZE", BLKIF_RING_SIZE),
    ("BLKIF_SLOT_SIZE", SLOT_SIZE),
    ("BLKIF_RING_HEADER", RING_HEADER),
)
