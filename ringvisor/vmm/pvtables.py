"""The para-virtualized guest's descriptor tables, trap table and kernel stack
(mixed into ``ParaVirt``).

A PV kernel never loads a GDTR, an IDTR or a TSS: it hands its tables over by
hypercall, as Xen's x86_32 ABI has it -- ``set_gdt`` (whole frames, which then
are typed: no mapping may make them writable, ``gdttype``),
``update_descriptor`` (one entry, validated and compressed into the real GDT),
``set_trap_table`` (the handlers that stand for its IDT) and ``stack_switch``
(the ring-1 stack its traps switch to, its TSS's SS1:ESP1).  This module holds
those hypercalls and the monitor-core hooks (``Delivery``, ``GuestViewHooks``)
that read the tables back from where the hypercalls put them.

Apart from ``paravirt.py`` for the same reason Xen keeps
``pv/descriptor-tables.c`` and ``pv/traps.c`` apart from ``pv/hypercall.c``:
one concept, the guest's tables, and not the hypercall machinery.
"""

from __future__ import annotations

import struct

from ringvisor.abi import TRAP_INFO, Errno

from . import gdttype
from . import layout as L
from .descriptors import compress
from .frame import Frame
from .errors import GuestFault, MonitorStop, fail


class PvTables:
    """set_gdt, update_descriptor, set_trap_table, stack_switch, and the tables read back."""

    # -- the guest's tables, as the hypercalls gave them --------------------------------------
    def kernel_cs_view(self, f: Frame) -> int:
        """A para-virtualized kernel knows it runs at ring 1: its frames hold the real CS
        (Xen's FLAT_RING1_CS has RPL 1), and its IRET is a hypercall."""
        return f.cs

    def guest_gate(self, vector: int, soft: bool) -> tuple[int, int, bool, int]:
        v = self.vcpu
        if vector == 14:
            self.mem.write32(self.o_cr2, v.cr2)
        entry = self.trap_table.get(vector)
        ext = 0 if soft else 1
        if not self.trap_table:
            raise MonitorStop(f"paravirt: the guest took vector {vector:#x} at "
                              f"{self.frame.eip:#010x} before it registered a trap table "
                              "(is the kernel built para-virtualized, by ringvisor pvcc?)")
        if entry is None:
            raise GuestFault(13, vector * 8 + 2 + ext)
        flags, cs, eip = entry
        if soft and (flags & 3) < v.cpl:
            raise GuestFault(13, vector * 8 + 2)
        return cs, eip, bool(flags & 4), 4              # (Xen's trap table: 32-bit frames)

    # -- the GDT's frames are typed (gdttype) ---------------------------------------------
    def gdt_typed(self) -> set[int]:
        """The guest's frame numbers of its GDT (those no mapping may make writable)."""
        return set(self.gdt_frames)

    def address_spaces(self) -> list[int]:
        """The CR3 of every vCPU whose virtual paging is on."""
        return [self.vcpu.cr3] if self.vcpu.paging else []

    def guest_gdt_bytes(self, offset: int, n: int) -> bytes:
        frames = self.gdt_frames
        if not frames:
            return super().guest_gdt_bytes(offset, n)
        i, o = offset >> 12, offset & 0xFFF
        if o + n <= 0x1000 and i < len(frames):        # (a descriptor: within one frame)
            return self.mem.read((frames[i] << 12) + o, n)
        out = bytearray()
        while n:
            i, o = offset >> 12, offset & 0xFFF
            if i >= len(self.gdt_frames):
                raise GuestFault(13, 0)
            chunk = min(n, 0x1000 - o)
            out += self.mem.read((self.gdt_frames[i] << 12) + o, chunk)
            offset += chunk
            n -= chunk
        return bytes(out)

    def known_tables(self, vector: int) -> tuple | None:
        # the trap table's entry stands for the gate (``Delivery._deliver_known``); not for
        # #PF, whose gate also publishes CR2 (``guest_gate``)
        entry = self.trap_table.get(vector)
        if entry is None or vector == 14:
            return None
        entry = tuple(entry)            # (a restored state holds lists)
        if self.kstack is not None:
            return entry, entry[1], self.kstack[1], self.kstack[0]
        v = self.vcpu                   # (no stack_switch: the TSS's, as ``kernel_stack``)
        tss = (v.tr_base + 4) & 0xFFFFFFFF
        got = self._peek8(tss, tss) if v.tr_limit >= 9 else None
        if got is None:
            return None
        return entry, entry[1], got[0] & 0xFFFFFFFF, (got[0] >> 32) & 0xFFFF

    def known_descriptors(self, a: int, b: int) -> tuple[int, int] | None:
        frames, ram = self.gdt_frames, self.mem.ram
        if not frames:
            return super().known_descriptors(a, b)
        # (each selector's frame and offset; both inside the frames and RAM)
        ia, ib, n, top = a >> 12, b >> 12, len(frames), len(ram) - 0x1000
        if ia >= n or ib >= n or frames[ia] << 12 > top or frames[ib] << 12 > top:
            return None
        pa, pb = frames[ia] << 12 | a & 0xFF8, frames[ib] << 12 | b & 0xFF8
        return int.from_bytes(ram[pa:pa + 8], "little"), int.from_bytes(ram[pb:pb + 8], "little")

    def kernel_stack(self, ext: int) -> tuple[int, int]:
        if self.kstack is not None:
            return self.kstack
        return super().kernel_stack(ext)

    def hc_set_trap_table(self, f, ptr, *_):
        if ptr == 0:
            self.trap_table.clear()
            return 0
        for i in range(257):
            e = TRAP_INFO.unpack(self._read(ptr + i * TRAP_INFO.size, TRAP_INFO.size))
            if e["address"] == 0:
                return 0
            # the kernel's selectors have RPL 0; it runs at ring 1 (Xen fixes them the same way)
            self.trap_table[e["vector"]] = (e["flags"] & 7, self._kernel_code(e["cs"]), e["address"])
        fail(Errno.E2BIG)

    def hc_set_gdt(self, f, frames_ptr, entries, *_):
        if not 0 < entries <= L.FIRST_RESERVED:
            fail(Errno.EINVAL)
        n = (entries * 8 + 0xFFF) >> 12
        mfns = struct.unpack(f"<{n}I", self._read(frames_ptr, 4 * n))
        frames = [self._frame(m) >> 12 for m in mfns]
        if gdttype.mapped_writable(self, set(mfns)):
            fail(Errno.EINVAL)    # a frame mapped writable cannot become a GDT (Xen's set_gdt)
        self.gdt.hold()
        self.gdt_frames = frames
        self.load_gdt(0, entries * 8 - 1)
        return 0

    def hc_update_descriptor(self, f, ma_lo, ma_hi, d_lo, d_hi, *_):
        if ma_hi or ma_lo & 7:
            fail(Errno.EINVAL)
        ma_lo = self._guest_address(ma_lo)
        for i, fr in enumerate(self.gdt_frames):
            if fr << 12 <= ma_lo < (fr + 1) << 12:
                index = (i << 9) + ((ma_lo & 0xFFF) >> 3)
                if index * 8 + 7 > self.vcpu.gdt_limit:
                    fail(Errno.EINVAL)
                raw = d_lo | d_hi << 32
                self.mem.write(ma_lo, struct.pack("<Q", raw))
                self.mem.write(self.base + L.GDT + index * 8, struct.pack("<Q", compress(raw)))
                return 0
        fail(Errno.EINVAL)

    def hc_stack_switch(self, f, ss, esp, *_):
        raw = self.guest_descriptor(ss) if ss & ~3 else None
        if raw is None or (raw >> 43) & 1 or not (raw >> 41) & 1 or (raw >> 45) & 3 != 0:
            fail(Errno.EINVAL)      # a writable data segment of the guest kernel
        self.kstack = (ss & ~3, esp)
        return 0

    def _kernel_code(self, sel: int) -> int:
        """A code selector of the guest kernel's own (with RPL 1), or -EINVAL."""
        raw = self.guest_descriptor(sel & 0xFFFF) if sel & 0xFFFC else None
        if raw is None or not (raw >> 43) & 1 or not (raw >> 44) & 1 or (raw >> 45) & 3 != 0:
            fail(Errno.EINVAL)
        return (sel & 0xFFFC) | 1

