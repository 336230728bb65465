"""Segmentation: descriptor tables, segment-register loads and their checks.

A segment register's hidden part (base, limit, attributes) is loaded from the
GDT or LDT when its selector is loaded, after the checks of SDM Vol. 3 §5 —
this is where #GP/#NP/#SS/#TS with a selector error code come from.
"""

from __future__ import annotations

from dataclasses import dataclass

from .faults import GP, NP, SS, TS, CpuFault
from .state import (ATTR_DB, ATTR_P, ATTR_S, ATTR_UNUSABLE, CS, DS, ES, FS, GS, SS as SREG_SS,
                    Segment)

# system descriptor types
TSS16_AVAIL, LDT, TSS16_BUSY, CALL_GATE16, TASK_GATE = 1, 2, 3, 4, 5
INT_GATE16, TRAP_GATE16, TSS32_AVAIL, TSS32_BUSY = 6, 7, 9, 0xB
CALL_GATE32, INT_GATE32, TRAP_GATE32 = 0xC, 0xE, 0xF


@dataclass
class Descriptor:
    raw: int           # the 8 bytes as a little-endian integer
    addr: int          # linear address of the descriptor (for the accessed/busy bits)

    @property
    def attr(self) -> int:
        r = self.raw
        return ((r >> 40) & 0xFF) | (((r >> 52) & 0xF) << 12)

    @property
    def base(self) -> int:
        r = self.raw
        return ((r >> 16) & 0xFFFFFF) | (((r >> 56) & 0xFF) << 24)

    @property
    def limit(self) -> int:
        r = self.raw
        lim = (r & 0xFFFF) | (((r >> 48) & 0xF) << 16)
        if r >> 55 & 1:    # G: 4 KiB granularity
            lim = (lim << 12) | 0xFFF
        return lim

    @property
    def type(self) -> int:
        return (self.raw >> 40) & 0xF

    @property
    def s(self) -> bool:
        return bool(self.raw >> 44 & 1)

    @property
    def dpl(self) -> int:
        return (self.raw >> 45) & 3

    @property
    def present(self) -> bool:
        return bool(self.raw >> 47 & 1)

    @property
    def is_code(self) -> bool:
        return self.s and bool(self.type & 8)

    @property
    def is_data(self) -> bool:
        return self.s and not self.type & 8

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & 4)

    @property
    def readable(self) -> bool:   # code: R bit; data: always
        return self.is_data or bool(self.type & 2)

    @property
    def writable(self) -> bool:
        return self.is_data and bool(self.type & 2)

    # gates
    @property
    def gate_selector(self) -> int:
        return (self.raw >> 16) & 0xFFFF

    @property
    def gate_offset(self) -> int:
        r = self.raw
        return (r & 0xFFFF) | (((r >> 48) & 0xFFFF) << 16)

    @property
    def gate_params(self) -> int:
        return (self.raw >> 32) & 0x1F

    def segment(self, selector: int) -> Segment:
        return Segment(selector, self.base, self.limit, self.attr)


def null_segment(selector: int = 0) -> Segment:
    return Segment(selector, 0, 0, ATTR_UNUSABLE)


class Segmentation:
    """Descriptor-table access and segment loads for one CPU."""

    def __init__(self, cpu) -> None:
        self.cpu = cpu

    # -- descriptor tables ------------------------------------------------------
    def read_descriptor(self, selector: int, err_vector: int = GP, ext: int = 0) -> Descriptor:
        """Fetch the descriptor for ``selector``; #GP(selector) if outside its table."""
        st = self.cpu.state
        index = selector & 0xFFF8
        if selector & 4:
            table = st.ldtr
            if table.attr & ATTR_UNUSABLE:
                raise CpuFault(err_vector, (selector & 0xFFFC) | ext)
            base, limit = table.base, table.limit
        else:
            base, limit = st.gdtr.base, st.gdtr.limit
        if index + 7 > limit:
            raise CpuFault(err_vector, (selector & 0xFFFC) | ext)
        addr = (base + index) & 0xFFFFFFFF
        return Descriptor(self.cpu.mmu.read(addr, 4, False) | self.cpu.mmu.read(addr + 4, 4, False) << 32,
                          addr)

    def set_accessed(self, d: Descriptor) -> None:
        if not d.raw >> 40 & 1:
            d.raw |= 1 << 40
            b = self.cpu.mmu.read(d.addr + 5, 1, False)
            self.cpu.mmu.write(d.addr + 5, 1, b | 1, False)

    # -- loads -------------------------------------------------------------------
    def load(self, sreg: int, selector: int) -> None:
        """MOV/POP/LxS into a data or stack segment register (protected mode)."""
        cpu = self.cpu
        st = cpu.state
        cpl = cpu.cpl
        selector &= 0xFFFF
        rpl = selector & 3
        if sreg == CS:
            raise CpuFault(6)
        if (selector & 0xFFFC) == 0:
            if sreg == SREG_SS:
                raise CpuFault(GP, 0)
            st.segs[sreg] = null_segment(selector)
            cpu.mode_changed()
            return
        d = self.read_descriptor(selector)
        err = selector & 0xFFFC
        if sreg == SREG_SS:
            if rpl != cpl or not d.writable or d.dpl != cpl:
                raise CpuFault(GP, err)
            if not d.present:
                raise CpuFault(SS, err)
        else:
            if not (d.is_data or (d.is_code and d.readable)):
                raise CpuFault(GP, err)
            if d.is_data or not d.conforming:
                if rpl > d.dpl or cpl > d.dpl:
                    raise CpuFault(GP, err)
            if not d.present:
                raise CpuFault(NP, err)
        self.set_accessed(d)
        st.segs[sreg] = d.segment(selector)
        cpu.mode_changed()

    def load_tss_stack(self, dpl: int, ext: int) -> tuple[int, int]:
        """SS:ESP for privilege level ``dpl`` from the current TSS (#TS on a bad TSS)."""
        st = self.cpu.state
        tr = st.tr
        if tr.type & 8:   # 32-bit TSS
            off = 4 + dpl * 8
            if off + 5 > tr.limit:
                raise CpuFault(TS, (tr.selector & 0xFFFC) | ext)
            esp = self.cpu.mmu.read(tr.base + off, 4, False)
            ss = self.cpu.mmu.read(tr.base + off + 4, 2, False)
        else:
            off = 2 + dpl * 4
            if off + 3 > tr.limit:
                raise CpuFault(TS, (tr.selector & 0xFFFC) | ext)
            esp = self.cpu.mmu.read(tr.base + off, 2, False)
            ss = self.cpu.mmu.read(tr.base + off + 2, 2, False)
        return ss, esp

    def check_new_ss(self, selector: int, dpl: int, ext: int) -> Segment:
        """Validate a stack segment taken from the TSS for a privilege change (#TS/#SS)."""
        err = (selector & 0xFFFC) | ext
        if (selector & 0xFFFC) == 0:
            raise CpuFault(TS, ext)
        try:
            d = self.read_descriptor(selector, TS, ext)
        except CpuFault:
            raise
        if selector & 3 != dpl or d.dpl != dpl or not d.writable:
            raise CpuFault(TS, err)
        if not d.present:
            raise CpuFault(SS, err)
        self.set_accessed(d)
        return d.segment(selector)

    def check_code_target(self, selector: int, ext: int = 0) -> Descriptor:
        if (selector & 0xFFFC) == 0:
            raise CpuFault(GP, ext)
        d = self.read_descriptor(selector, GP, ext)
        if not d.is_code:
            raise CpuFault(GP, (selector & 0xFFFC) | ext)
        return d

    def null_outer_data_segments(self, new_cpl: int) -> None:
        """On a return to an outer ring, data segments the new CPL may not use become null."""
        st = self.cpu.state
        for s in (ES, DS, FS, GS):
            seg = st.segs[s]
            if seg.attr & ATTR_UNUSABLE:
                continue
            conforming_code = (seg.attr & ATTR_S) and (seg.attr & 0xC) == 0xC
            if seg.dpl < new_cpl and not conforming_code:
                st.segs[s] = null_segment(0)

    # -- access checks for non-flat segments ------------------------------------------
    def linear(self, sreg: int, off: int, size: int, write: bool) -> int:
        """Check ``off`` against segment register ``sreg``; return the linear address."""
        return check_access(self.cpu.state.segs[sreg], off, size, write,
                            SS if sreg == SREG_SS else GP)


def check_access(seg: Segment, off: int, size: int, write: bool, vec: int = GP) -> int:
    """Type and limit checks of an access through ``seg`` (#GP, or #SS for the stack)."""
    attr = seg.attr
    if attr & ATTR_UNUSABLE:
        raise CpuFault(GP, 0)
    if write:
        if attr & 8 or not attr & 2:   # code, or read-only data
            raise CpuFault(vec, 0)
    elif attr & 8 and not attr & 2:    # execute-only code
        raise CpuFault(GP, 0)
    last = off + size - 1
    if not attr & 8 and attr & 4:      # expand-down data: valid offsets are (limit, top]
        top = 0xFFFFFFFF if attr & ATTR_DB else 0xFFFF
        if off <= seg.limit or last > top:
            raise CpuFault(vec, 0)
    elif last > seg.limit:
        raise CpuFault(vec, 0)
    return (seg.base + off) & 0xFFFFFFFF


def is_flat(seg: Segment, any_limit: bool = False) -> bool:
    """Base 0, limit 4 GiB (or any, with ``any_limit``), expand-up writable data: no type checks needed."""
    return (seg.base == 0 and (any_limit or seg.limit == 0xFFFFFFFF) and
            (seg.attr & (ATTR_UNUSABLE | ATTR_P | ATTR_S | 0xE)) == (ATTR_P | ATTR_S | 0x2))
