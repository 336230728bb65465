"""Grant tables (v1) and the memory operations: sharing and ballooning.

A domain shares one of its frames with another by writing a *grant entry* in
its grant table: the peer's domid, the frame (a GPFN here: ringvisor's guests
are auto-translated), and ``GTF_permit_access`` (with ``GTF_readonly`` for
read only).  The peer then maps the frame with ``GNTTABOP_map_grant_ref`` or
copies through it with ``GNTTABOP_copy``; the hypervisor checks the entry at
every use and sets ``GTF_reading``/``GTF_writing`` while a mapping exists, so
the granter knows when it may take the frame back (Xen's
``xen/include/public/grant_table.h``).

``memory_op`` (``memory.h``) moves frames between a domain and the
hypervisor's pool: ``decrease_reservation`` gives frames back (a balloon
driver inflating), ``increase_reservation``/``populate_physmap`` take them up
to the domain's ``maxmem``; ``add_to_physmap`` places a grant-table frame or,
for a privileged domain, a foreign domain's frame in the caller's physmap
(how the domain builder loads a kernel into a new domain).
"""

from __future__ import annotations

from enum import IntEnum

from .cstruct import (DOMID, GHANDLE, GREF, I16, PTR, U16, U32, U64, UINT, XEN_PFN,
                      XEN_ULONG, Field, Struct)


class GnttabOp(IntEnum):
    """``GNTTABOP_*``."""

    map_grant_ref = 0
    unmap_grant_ref = 1
    setup_table = 2
    dump_table = 3
    transfer = 4
    copy = 5
    query_size = 6
    unmap_and_replace = 7
    set_version = 8
    get_status_frames = 9
    get_version = 10
    swap_grant_ref = 11
    cache_flush = 12


class Gtf(IntEnum):
    """``GTF_*``: grant_entry_v1.flags."""

    invalid = 0
    permit_access = 1
    accept_transfer = 2
    type_mask = 3
    readonly = 1 << 2
    reading = 1 << 3
    writing = 1 << 4
    PWT = 1 << 5
    PCD = 1 << 6
    PAT = 1 << 7
    sub_page = 1 << 8


class Gntmap(IntEnum):
    """``GNTMAP_*``: map_grant_ref.flags."""

    device_map = 1 << 0
    host_map = 1 << 1
    readonly = 1 << 2
    application_map = 1 << 3
    contains_pte = 1 << 4


class Gntcopy(IntEnum):
    """``GNTCOPY_*``: gnttab_copy.flags."""

    source_gref = 1 << 0
    dest_gref = 1 << 1


class Gntst(IntEnum):
    """``GNTST_*``: the per-operation status (negative)."""

    okay = 0
    general_error = -1
    bad_domain = -2
    bad_gntref = -3
    bad_handle = -4
    bad_virt_addr = -5
    bad_dev_addr = -6
    no_device_space = -7
    permission_denied = -8
    bad_page = -9
    bad_copy_arg = -10
    address_too_big = -11
    eagain = -12
    no_space = -13


class GnttabReserved(IntEnum):
    """``GNTTAB_RESERVED_*``: entries the domain builder fills for the toolstack."""

    CONSOLE = 0
    XENSTORE = 1


class MemOp(IntEnum):
    """``XENMEM_*`` (memory.h)."""

    increase_reservation = 0
    decrease_reservation = 1
    maximum_ram_page = 2
    current_reservation = 3
    maximum_reservation = 4
    machphys_mfn_list = 5
    populate_physmap = 6
    add_to_physmap = 7
    memory_map = 9
    machine_memory_map = 10
    exchange = 11
    set_memory_map = 13
    maximum_gpfn = 14
    remove_from_physmap = 15
    add_to_physmap_batched = 23


class MapSpace(IntEnum):
    """``XENMAPSPACE_*``: what add_to_physmap places."""

    shared_info = 0
    grant_table = 1
    gmfn = 2
    gmfn_range = 3
    gmfn_foreign = 4
    dev_mmio = 5


class XenFeat(IntEnum):
    """``XENFEAT_*`` bit numbers (features.h): what ``XENVER_get_features`` reports."""

    writable_page_tables = 0
    writable_descriptor_tables = 1
    auto_translated_physmap = 2
    supervisor_mode_kernel = 3
    pae_pgdir_above_4gb = 4
    mmu_pt_update_preserve_ad = 5
    highmem_assist = 6
    gnttab_map_avail_bits = 7
    hvm_callback_vector = 8
    hvm_safe_pvclock = 9
    hvm_pirqs = 10
    dom0 = 11


GRANT_ENTRY_V1 = Struct("grant_entry_v1", [
    Field("flags", U16, comment="GTF_*"), Field("domid", DOMID, comment="who may use it"),
    Field("frame", U32, comment="the granted frame (a GPFN)")])

GNTTAB_MAP_GRANT_REF = Struct("gnttab_map_grant_ref", [
    Field("host_addr", U64, comment="GNTMAP_host_map: where (a GPFN << 12 here)"),
    Field("flags", U32, comment="GNTMAP_*"), Field("ref", GREF), Field("dom", DOMID),
    Field("status", I16, comment="out: GNTST_*"), Field("handle", GHANDLE, comment="out"),
    Field("dev_bus_addr", U64, comment="out")])
GNTTAB_UNMAP_GRANT_REF = Struct("gnttab_unmap_grant_ref", [
    Field("host_addr", U64), Field("dev_bus_addr", U64), Field("handle", GHANDLE),
    Field("status", I16, comment="out")])
GNTTAB_SETUP_TABLE = Struct("gnttab_setup_table", [
    Field("dom", DOMID), Field("nr_frames", U32), Field("status", I16, comment="out"),
    Field("frame_list", PTR, comment="xen_pfn_t *, out")])
_GNTCOPY_U = Struct("", [Field("ref", GREF), Field("gmfn", XEN_PFN)], union=True, inline=True)
GNTTAB_COPY_PTR = Struct("gnttab_copy_ptr", [
    Field("u", _GNTCOPY_U), Field("domid", DOMID), Field("offset", U16)])
GNTTAB_COPY = Struct("gnttab_copy", [
    Field("source", GNTTAB_COPY_PTR), Field("dest", GNTTAB_COPY_PTR),
    Field("len", U16), Field("flags", U16, comment="GNTCOPY_*"),
    Field("status", I16, comment="out")])
GNTTAB_QUERY_SIZE = Struct("gnttab_query_size", [
    Field("dom", DOMID), Field("nr_frames", U32, comment="out"),
    Field("max_nr_frames", U32, comment="out"), Field("status", I16, comment="out")])

XEN_MEMORY_RESERVATION = Struct("xen_memory_reservation", [
    Field("extent_start", PTR, comment="xen_pfn_t *: GPFNs in/out"),
    Field("nr_extents", XEN_ULONG), Field("extent_order", UINT),
    Field("mem_flags", UINT), Field("domid", DOMID)])
XEN_ADD_TO_PHYSMAP = Struct("xen_add_to_physmap", [
    Field("domid", DOMID), Field("size", U16, comment="gmfn_range only"),
    Field("space", UINT, comment="XENMAPSPACE_*"), Field("idx", XEN_ULONG),
    Field("gpfn", XEN_PFN)])
XEN_ADD_TO_PHYSMAP_BATCHED = Struct("xen_add_to_physmap_batched", [
    Field("domid", DOMID), Field("space", U16), Field("size", U16),
    Field("foreign_domid", DOMID, comment="gmfn_foreign: whose frames"),
    Field("idxs", PTR, comment="xen_ulong_t *"), Field("gpfns", PTR, comment="xen_pfn_t *"),
    Field("errs", PTR, comment="int *, out")])
XEN_REMOVE_FROM_PHYSMAP = Struct("xen_remove_from_physmap", [
    Field("domid", DOMID), Field("gpfn", XEN_PFN)])

STRUCTS: tuple[Struct, ...] = (
    GRANT_ENTRY_V1, GNTTAB_MAP_GRANT_REF, GNTTAB_UNMAP_GRANT_REF, GNTTAB_SETUP_TABLE,
    GNTTAB_COPY_PTR, GNTTAB_COPY, GNTTAB_QUERY_SIZE, XEN_MEMORY_RESERVATION, XEN_ADD_TO_PHYSMAP,
    XEN_ADD_TO_PHYSMAP_BATCHED, XEN_REMOVE_FROM_PHYSMAP,
)

CONSTANT_GROUPS = (
    (GnttabOp, "GNTTABOP_", "grant_table_op commands (grant_table.h)"),
    (Gtf, "GTF_", "grant entry flags"),
    (Gntmap, "GNTMAP_", "map_grant_ref flags"),
    (Gntcopy, "GNTCOPY_", "gnttab_copy flags"),
    (Gntst, "GNTST_", "grant operation status"),
    (GnttabReserved, "GNTTAB_RESERVED_", "grant entries reserved for the toolstack"),
    (MemOp, "XENMEM_", "memory_op commands (memory.h)"),
    (MapSpace, "XENMAPSPACE_", "add_to_physmap spaces"),
    (XenFeat, "XENFEAT_", "feature bits (features.h)"),
)


