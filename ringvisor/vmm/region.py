"""The hypervisor region's contents in machine memory: its page table, the real IDT
(every vector to a native entry point), the TSS and the monitor's descriptors in the
real GDT (``build_region``), and para-virtualization's variant (``pv_region``).

``layout.py`` says where each thing is; this module writes them.  Apart from the
monitors because the region is one per machine: a hypervisor running many guests
(``ringvisor.hypervisor``) builds it once, and every monitor of the machine
(trapemu, bt, paravirt, hvm's shadow mode) shares it.
"""

from __future__ import annotations

import struct

from ringvisor.abi import HYPERCALL_VECTOR

from . import descriptors as D
from . import layout as L


def build_region(mem, base: int) -> None:
    """Lay out the hypervisor region at machine address ``base``: its page table, the
    real IDT (every vector to a native entry point), TSS and the monitor's descriptors in
    the real GDT.  One per machine: a hypervisor running many guests builds it once."""
    b = base
    mem.write(b, bytes(L.MAPPED))
    # the region's page table: MLIN + off -> base + off, supervisor
    pt = b"".join(struct.pack("<I", (b + off) | 0x63) for off in range(0, L.MAPPED, 0x1000))
    mem.write(b + L.MONITOR_PT, pt)
    mem.write(b + L.VOID, b"\xFF" * 0x1000)
    # IDT: interrupt gates to the native entry points; only the callout vectors
    # can be raised by software (from ring 1, i.e. translated code)
    idt = bytearray()
    for v in range(256):
        off = L.MLIN + L.ENTRY + 8 * v
        dpl = 1 if v in (L.CALLOUT, L.CHAIN) else 0
        access = 0x8E | dpl << 5
        idt += struct.pack("<HHBBH", off & 0xFFFF, L.SEL_MCODE, 0, access, off >> 16)
    mem.write(b + L.IDT, bytes(idt))
    # TSS: ring-0 stack = the monitor's; no I/O bitmap (all port I/O traps)
    tss = bytearray(104)
    struct.pack_into("<II", tss, 4, L.MLIN + L.STACK_TOP, L.SEL_MDATA)
    struct.pack_into("<H", tss, 102, 104)
    mem.write(b + L.TSS, bytes(tss))
    for sel, raw in D.monitor_descriptors().items():
        mem.write(b + L.GDT + sel, struct.pack("<Q", raw))
    mem.write(b + L.GDT + L.SEL_MTSS, struct.pack("<Q", D.tss_descriptor(L.MLIN + L.TSS, 103)))


def pv_region(mem, base: int) -> None:
    """The region as para-virtualization wants it: hypercalls come from ring 1 (the
    ``int $0x82`` gate is DPL 1); no translated code here, so no ring-1 code segment
    over the whole address space either."""
    off = L.MLIN + L.ENTRY + 8 * HYPERCALL_VECTOR
    mem.write(base + L.IDT + 8 * HYPERCALL_VECTOR,
              struct.pack("<HHBBH", off & 0xFFFF, L.SEL_MCODE, 0, 0x8E | 1 << 5, off >> 16))
    mem.write(base + L.GDT + (L.SEL_TCODE & ~7), bytes(8))
