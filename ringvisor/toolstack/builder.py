"""The domain builder (libxc's ``xc_dom_*``): a kernel image into a new domain.

Run by the toolstack in Domain 0, with hypercalls only:

1. ``createdomain`` (paused, empty), ``max_vcpus``, ``max_mem``;
2. memory: ``populate_physmap`` for the RAM the kernel is told of, plus two
   special frames just above it for the console and xenstore rings;
3. the kernel: Domain 0 maps the new domain's frames into its own address
   space (``XENMAPSPACE_gmfn_foreign``) and writes the image there as a
   Multiboot loader would (the loader of ``ringvisor.hw.boot``, over those
   mappings);
4. the rings: an unbound event channel in the new domain for each, for
   Domain 0 to bind; grant entries ``GNTTAB_RESERVED_CONSOLE`` and
   ``GNTTAB_RESERVED_XENSTORE`` so the back-ends can map them (written
   through a grant-table frame placed in the domain's physmap for the
   moment, as ``xc_dom_gnttab_seed`` does); their frames and ports as
   ``HVM_PARAM_*``;
5. the vCPU's start state (``setvcpucontext``): ringvisor's PV entry
   convention (``pv_boot_context``); for a ``bt`` domain (created with
   ``XEN_DOMCTL_CDF_hvm_guest``: an unmodified kernel under binary
   translation) the registers the Multiboot loader leaves (``bt_boot_context``),
   and the hypervisor's UART writes to the console ring in the guest's stead.

The domain stays paused; the caller unpauses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringvisor.abi import (GNTTAB_SETUP_TABLE, GRANT_ENTRY_V1, HYPERCALL_VECTOR, XEN_HVM_PARAM,
                           CreateFlag, GnttabOp, GnttabReserved, Gtf, Hypercall, HvmOp, HvmParam,
                           MapSpace, pv_boot_context)
from ringvisor.hw.boot.multiboot import load_multiboot

from .xc import Xc, XcError

PAGE = 0x1000
MAP_CHUNK = 256                 # frames mapped at once while loading
EXTRA_PAGES = 2                 # beyond its memory: the console and xenstore rings' pages


@dataclass
class Built:
    domid: int
    console_gpfn: int
    console_port: int
    store_gpfn: int
    store_port: int


class ForeignMemory:
    """The new domain's pseudo-physical memory, as the Multiboot loader writes it."""

    def __init__(self, xc: Xc, domid: int, size: int) -> None:
        self.xc, self.domid, self.size = xc, domid, size

    def write(self, addr: int, data: bytes) -> None:
        off = 0
        while off < len(data):
            first = (addr + off) >> 12
            last = min((addr + len(data) - 1) >> 12, first + MAP_CHUNK - 1)
            va = self.xc.map_foreign(self.domid, list(range(first, last + 1)))
            try:
                n = min(len(data) - off, ((last + 1) << 12) - (addr + off))
                self.xc.iface.write(va + ((addr + off) & 0xFFF), data[off:off + n])
            finally:
                self.xc.unmap([va + i * PAGE for i in range(last - first + 1)])
            off += n


def set_param(xc: Xc, domid: int, index: HvmParam, value: int) -> None:
    xc._struct_call(Hypercall.hvm_op, XEN_HVM_PARAM, {"domid": domid, "index": index,
                                                     "value": value},
                    f"hvm set_param {index.name}", pre=(HvmOp.set_param,))


def is_paravirtual(image: bytes) -> bool:
    """Is ``image`` a para-virtual kernel: does its code make Xen's x86_32 hypercalls
    (``int 0x82``)?  (Xen's libxc reads the image's Xen ELF notes instead; ringvisor's PV
    images carry none, and every one of them traps to the hypervisor this way, which an
    unmodified kernel never does.)  The executable segments of an ELF image, or the whole
    of another, decoded in order."""
    import io

    import iced_x86 as ix
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        elf = ELFFile(io.BytesIO(image))
        code = [(seg.data(), seg["p_vaddr"]) for seg in elf.iter_segments()
                if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 1]
    except ELFError:
        code = [(image, 0)]
    return any(ins.mnemonic == ix.Mnemonic.INT and ins.immediate8 == HYPERCALL_VECTOR
               for data, ip in code for ins in ix.Decoder(32, data, ip=ip))


def bt_boot_context(info) -> dict:
    """The ``vcpu_guest_context`` of a bt domain: the Multiboot loader's entry state
    (``BootInfo.machine_state``: registers, selectors of its GDT, CR0)."""
    ms = info.machine_state()
    regs = {n: ms[n] for n in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip",
                               "eflags")}
    regs.update({n: ms[n]["selector"] for n in ("cs", "ss", "ds", "es", "fs", "gs")})
    return {"flags": 1 << 2 | 1 << 5, "user_regs": regs,          # VGCF_in_kernel | online
            "ctrlreg": [ms["cr0"], 0, 0, 0, 0, 0, 0, 0]}


def build(xc: Xc, image: bytes, *, name: str, cmdline: str, mem_mb: int, maxmem_mb: int,
          ssidref: int = 0, handle: bytes = bytes(16), kind: str = "pv", vcpus: int = 1) -> Built:
    domid = xc.create(ssidref, handle, CreateFlag.hvm_guest if kind == "bt" else 0)
    try:
        return _fill(xc, domid, image, name, cmdline, mem_mb, maxmem_mb, kind, vcpus)
    except BaseException:
        xc.destroy_quietly(domid)
        raise


def _fill(xc: Xc, domid: int, image: bytes, name: str, cmdline: str, mem_mb: int,
          maxmem_mb: int, kind: str, vcpus: int) -> Built:
    pages = mem_mb << 8
    cons_gpfn, store_gpfn, scratch = pages, pages + 1, pages + 2
    xc.max_vcpus(domid, vcpus)
    xc.max_mem(domid, (max(maxmem_mb, mem_mb) << 10) + EXTRA_PAGES * 4)
    gpfns = list(range(pages)) + [cons_gpfn, store_gpfn]
    if xc.populate_physmap(domid, gpfns) != len(gpfns):
        raise XcError(12, f"{name}: not enough free memory for {mem_mb} MiB")
    info = load_multiboot(ForeignMemory(xc, domid, pages << 12), image, cmdline, [], name)
    cons_port = xc.evtchn_alloc_unbound(domid, 0)
    store_port = xc.evtchn_alloc_unbound(domid, 0)
    # the grant entries for the back-ends, through the domain's grant-table frame 0
    out = xc._struct_call(Hypercall.grant_table_op, GNTTAB_SETUP_TABLE,
                          {"dom": domid, "nr_frames": 1, "frame_list": xc._scratch(4)},
                          "grant setup_table", pre=(GnttabOp.setup_table,), post=(1,))
    if out["status"] != 0:
        raise XcError(22, f"{name}: grant table setup refused")
    xc.add_to_physmap(domid, MapSpace.grant_table, 0, scratch)
    try:
        va = xc.map_foreign(domid, [scratch])
        entry = GRANT_ENTRY_V1.size
        for ref, gpfn in ((GnttabReserved.CONSOLE, cons_gpfn), (GnttabReserved.XENSTORE, store_gpfn)):
            xc.iface.write(va + ref * entry, GRANT_ENTRY_V1.pack(
                flags=Gtf.permit_access, domid=0, frame=gpfn))
        xc.unmap([va])
    finally:
        xc.remove_from_physmap(domid, scratch)
    for index, value in ((HvmParam.CONSOLE_PFN, cons_gpfn), (HvmParam.CONSOLE_EVTCHN, cons_port),
                         (HvmParam.STORE_PFN, store_gpfn), (HvmParam.STORE_EVTCHN, store_port)):
        set_param(xc, domid, index, value)
    xc.set_vcpu_context(domid, bt_boot_context(info) if kind == "bt" else
                        pv_boot_context(info.entry, info.eax, info.ebx))
    return Built(domid, cons_gpfn, cons_port, store_gpfn, store_port)



