"""Segmentation: descriptor tables, segment-register loads and their checks.

A segment register's hidden part (base, limit, attributes) is loaded from the
GDT or LDT when its selector is loaded, after the checks of SDM Vol. 3 §5 —
this is where #GP/#NP/#SS/#TS with a selector error code come from.
"""

from __future__ import annotations

from . import realmode
from .faults import GP, NP, SS, TS, CpuFault
from .state import (ATTR_DB, ATTR_DPL_SHIFT, ATTR_P, ATTR_S, ATTR_UNUSABLE, CS, DS, ES, FS, GS, SS as SREG_SS,
                    Segment)

# system descriptor types
TSS16_AVAIL, LDT, TSS16_BUSY, CALL_GATE16, TASK_GATE = 1, 2, 3, 4, 5
INT_GATE16, TRAP_GATE16, TSS32_AVAIL, TSS32_BUSY = 6, 7, 9, 0xB
CALL_GATE32, INT_GATE32, TRAP_GATE32 = 0xC, 0xE, 0xF


def _decode(raw: int) -> tuple:
    """The fields of ``Descriptor.__slots__`` after ``raw``, from a descriptor's eight bytes."""
    lim = (raw & 0xFFFF) | (((raw >> 48) & 0xF) << 16)
    if raw >> 55 & 1:    # G: 4 KiB granularity
        lim = (lim << 12) | 0xFFF
    typ, s = (raw >> 40) & 0xF, bool(raw >> 44 & 1)
    is_code = s and bool(typ & 8)
    return (((raw >> 40) & 0xFF) | (((raw >> 52) & 0xF) << 12),
            ((raw >> 16) & 0xFFFFFF) | (((raw >> 56) & 0xFF) << 24),
            lim, typ, s, (raw >> 45) & 3, bool(raw >> 47 & 1),
            is_code, s and not typ & 8, is_code and bool(typ & 4))


# Decoded descriptors, keyed by their eight bytes: the table is read on every load,
# so a change to a GDT or LDT entry is seen at once; only the decoding is cached.
_DECODED: dict[int, tuple] = {}


class Descriptor:
    """A segment or gate descriptor: its eight bytes and where they were read from."""

    __slots__ = ("_raw", "addr", "attr", "base", "limit", "type", "s", "dpl", "present",
                 "is_code", "is_data", "conforming")

    def __init__(self, raw: int, addr: int) -> None:
        self.addr = addr           # linear address of the descriptor (for the accessed/busy bits)
        self.raw = raw

    @property
    def raw(self) -> int:
        """The 8 bytes as a little-endian integer."""
        return self._raw

    @raw.setter
    def raw(self, raw: int) -> None:
        self._raw = raw
        f = _DECODED.get(raw)
        if f is None:
            if len(_DECODED) > 4096:      # a guest writing random tables cannot grow it
                _DECODED.clear()
            f = _DECODED[raw] = _decode(raw)
        (self.attr, self.base, self.limit, self.type, self.s, self.dpl, self.present,
         self.is_code, self.is_data, self.conforming) = f

    def __repr__(self) -> str:
        return f"Descriptor({self._raw:#018x}, {self.addr:#x})"

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


# the attribute bits the CPU mode depends on (is_flat, and the stack's B bit)
MODE_ATTRS = ATTR_UNUSABLE | ATTR_P | ATTR_S | 0xE | ATTR_DB


def null_segment(selector: int = 0) -> Segment:
    return Segment(selector, 0, 0, ATTR_UNUSABLE)


class Segmentation:
    """Descriptor-table access and segment loads for one CPU."""

    def __init__(self, cpu) -> None:
        self.cpu = cpu
        # (stack?, CPL, selector, descriptor bytes) -> the segment of a load that passed
        self._loads: dict[tuple, Segment] = {}
        self._descs: dict[tuple[int, int], Descriptor] = {}     # see read_at
        self.real = False          # real mode (set with the CPU's mode): realmode.py's rules

    # -- descriptor tables ------------------------------------------------------
    def read_descriptor(self, selector: int, err_vector: int = GP, ext: int = 0) -> Descriptor:
        """Fetch the descriptor for ``selector``; #GP(selector) if outside its table."""
        return self.read_at(self.table_address(selector, err_vector, ext))

    def table_address(self, selector: int, err_vector: int = GP, ext: int = 0) -> int:
        """The linear address of ``selector``'s descriptor; #GP(selector) if outside its table."""
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
        return (base + index) & 0xFFFFFFFF

    def entry(self, selector: int, err_vector: int = GP, ext: int = 0) -> tuple[int, int]:
        """(linear address, eight bytes) of ``selector``'s descriptor: ``table_address``
        and ``raw_at`` in one call, for the loads and transfers that read one at every
        use (a kernel reloads four data segments on every entry and exit)."""
        cpu = self.cpu
        table = cpu.state.ldtr if selector & 4 else cpu.state.gdtr
        index = selector & 0xFFF8
        # (an unusable LDTR and an index beyond the limit give the same #GP(selector))
        if index + 7 > table.limit or selector & 4 and table.attr & ATTR_UNUSABLE:
            raise CpuFault(err_vector, (selector & 0xFFFC) | ext)
        addr = (table.base + index) & 0xFFFFFFFF
        if (addr & 0xFFF) <= 0xFF8:
            mmu = cpu.mmu
            d = mmu.tr_s.get(addr & 0xFFFFF000)
            if d is not None and not mmu.watch:
                a = addr + d
                return addr, int.from_bytes(cpu.mem.ram[a:a + 8], "little")
        return addr, self.raw_at(addr)

    def gdt_raw(self, selector: int) -> int | None:
        """The eight bytes of GDT ``selector``'s descriptor where reading them is simple
        (inside the limit, in a page the TLB holds, no data breakpoint armed); None
        otherwise, where ``entry`` reads them or raises the fault."""
        if selector & 4:
            return None
        cpu = self.cpu
        gdtr = cpu.state.gdtr
        index = selector & 0xFFF8
        addr = (gdtr.base + index) & 0xFFFFFFFF
        if index + 7 > gdtr.limit or (addr & 0xFFF) > 0xFF8:
            return None
        mmu = cpu.mmu
        d = mmu.tr_s.get(addr & 0xFFFFF000)
        if d is None or mmu.watch:
            return None
        a = addr + d
        return int.from_bytes(cpu.mem.ram[a:a + 8], "little")

    def read_at(self, addr: int) -> Descriptor:
        """The descriptor at linear ``addr``.

        Descriptors whose accessed bit is set (so that using them changes nothing, and
        nobody modifies the object) are shared, keyed by their address and bytes: the
        bytes are read every time, so a change to the table is seen at once."""
        raw = self.raw_at(addr)
        d = self._descs.get((addr, raw))
        if d is None:
            d = Descriptor(raw, addr)
            if raw >> 40 & 1 or not raw >> 44 & 1:     # accessed, or a system descriptor
                if len(self._descs) > 1024:
                    self._descs.clear()
                self._descs[(addr, raw)] = d
        return d

    def raw_at(self, addr: int) -> int:
        """The eight bytes at linear ``addr`` (a supervisor access, as the CPU's own reads
        of its tables are)."""
        mmu = self.cpu.mmu
        if (addr & 0xFFF) <= 0xFF8:      # one access within the page
            d = mmu.tr_s.get(addr & 0xFFFFF000)
            if d is not None and not mmu.watch:    # a TLB hit: RAM, readable, accessed bit set
                a = addr + d
                return int.from_bytes(self.cpu.mem.ram[a:a + 8], "little")
            return mmu.read(addr, 8, False)
        return mmu.read(addr, 4, False) | mmu.read((addr + 4) & 0xFFFFFFFF, 4, False) << 32

    def set_accessed(self, d: Descriptor) -> None:
        # (only a descriptor read with the bit clear changes here: those are never shared)
        if not d.raw >> 40 & 1:
            d.raw = d.raw | 1 << 40
            b = self.cpu.mmu.read(d.addr + 5, 1, False)
            self.cpu.mmu.write(d.addr + 5, 1, b | 1, False)

    # -- loads -------------------------------------------------------------------
    def load(self, sreg: int, selector: int) -> bool:
        """MOV/POP/LxS into a data or stack segment register (protected mode).

        Returns whether the CPU mode changed (``Cpu.mode_changed``): a segment of the
        same shape — base, limit and the attributes the translator depends on — as the
        one it replaces (a kernel reloading its data segments on every system call)
        leaves the mode, and the translated code, as they are."""
        selector &= 0xFFFF
        if selector & 0xFFFC and sreg != CS and not self.real:
            # the common case in one step: a GDT selector (not null) whose descriptor
            # ``gdt_raw`` reads, with bytes that passed this load's checks before at this
            # CPL (the key holds everything their outcome depends on, and the bytes are
            # read now, so a changed descriptor is never taken from the cache); anything
            # else, and every fault, takes ``_load``
            raw = self.gdt_raw(selector)
            if raw is not None:
                cpu = self.cpu
                new = self._loads.get((sreg == SREG_SS, cpu.cpl, selector, raw))
                if new is not None:
                    segs = cpu.state.segs
                    old = segs[sreg]
                    segs[sreg] = new
                    if old is new or (old.base == new.base and old.limit == new.limit and
                                      not (old.attr ^ new.attr) & MODE_ATTRS):
                        return False
                    cpu.mode_changed()
                    return True
        return self._load(sreg, selector)

    def load_again(self, sreg: int, selector: int, prev: int, walks: int | None = None) -> bool:
        """``load`` of a data segment register right after the instruction before loaded
        data segment register ``prev`` (the translator's promise: nothing between them
        wrote memory, and ``walks``, if given, is the MMU's walk count taken after that
        load): with the same selector, that load's segment is what this one would read
        and check, so it is copied.  Otherwise, ``load``."""
        segs = self.cpu.state.segs
        new = segs[prev]
        if new.selector != selector & 0xFFFF or self.real or (
                walks is not None and (walks != self.cpu.mmu.stats_walks or self.cpu.mmu.ept is not None)):
            return self.load(sreg, selector)
        old = segs[sreg]
        segs[sreg] = new
        if old is new or (old.base == new.base and old.limit == new.limit and
                          not (old.attr ^ new.attr) & MODE_ATTRS):
            return False
        self.cpu.mode_changed()
        return True

    def _load(self, sreg: int, selector: int) -> bool:
        """``load``, the whole way: every check, in the SDM's order."""
        cpu = self.cpu
        cpl = cpu.cpl
        if sreg == CS:
            raise CpuFault(6)
        if self.real:
            return self._set(sreg, realmode.load_segment(cpu, sreg, selector))
        if (selector & 0xFFFC) == 0:
            if sreg == SREG_SS:
                raise CpuFault(GP, 0)
            return self._set(sreg, null_segment(selector))
        addr, raw = self.entry(selector)
        key = (sreg == SREG_SS, cpl, selector, raw)
        hit = self._loads.get(key)
        if hit is not None:        # (an LDT selector, or a page the TLB does not hold)
            return self._set(sreg, hit)
        d = Descriptor(raw, addr)
        check_segment_load(d, selector, sreg == SREG_SS, cpl)
        if d.raw >> 40 & 1:      # accessed already: loading it again writes nothing
            new = d.segment(selector)
            self._keep(key, new)
            return self._set(sreg, new)
        self.set_accessed(d)
        return self._set(sreg, d.segment(selector))

    def _keep(self, key: tuple, new: Segment) -> None:
        # the Segment itself is kept and shared by every register it is loaded into
        # (nothing changes a Segment in place: a load replaces the register's object)
        if len(self._loads) > 1024:       # a guest writing random tables cannot grow it
            self._loads.clear()
        self._loads[key] = new

    def _set(self, sreg: int, new: Segment) -> bool:
        segs = self.cpu.state.segs
        old = segs[sreg]
        segs[sreg] = new
        if (old.base == new.base and old.limit == new.limit and
                not (old.attr ^ new.attr) & MODE_ATTRS):
            return False
        self.cpu.mode_changed()
        return True

    def load_tss_stack(self, dpl: int, ext: int) -> tuple[int, int]:
        """SS:ESP for privilege level ``dpl`` from the current TSS (#TS on a bad TSS)."""
        cpu = self.cpu
        tr = cpu.state.tr
        mmu = cpu.mmu
        if tr.type & 8:   # 32-bit TSS
            off = 4 + dpl * 8
            if off + 5 > tr.limit:
                raise CpuFault(TS, (tr.selector & 0xFFFC) | ext)
            addr = (tr.base + off) & 0xFFFFFFFF
            if (addr & 0xFFF) <= 0xFF8 and not mmu.watch:
                # ESP and SS in one read of the page, if the TLB holds it
                d = mmu.tr_s.get(addr & 0xFFFFF000)
                if d is not None:
                    a = addr + d
                    v = int.from_bytes(cpu.mem.ram[a:a + 6], "little")
                    return v >> 32, v & 0xFFFFFFFF
            esp = mmu.read(addr, 4, False)
            ss = mmu.read(tr.base + off + 4, 2, False)
        else:
            off = 2 + dpl * 4
            if off + 3 > tr.limit:
                raise CpuFault(TS, (tr.selector & 0xFFFC) | ext)
            esp = mmu.read(tr.base + off, 2, False)
            ss = mmu.read(tr.base + off + 2, 2, False)
        return ss, esp

    def check_new_ss(self, selector: int, dpl: int, ext: int) -> Segment:
        """Validate a stack segment taken from the TSS for a privilege change (#TS/#SS)."""
        if (selector & 0xFFFC) == 0:
            raise CpuFault(TS, ext)
        raw = self.gdt_raw(selector)
        if raw is None:
            raw = self.entry(selector, TS, ext)[1]
        # the rules passed are those of MOV SS at CPL ``dpl`` (RPL = DPL = CPL, writable
        # data, present: SDM Vol. 3 §6.12.1, Vol. 2 MOV), so that load's cache serves
        key = (True, dpl, selector, raw)
        hit = self._loads.get(key)
        if hit is not None:
            return hit
        d = Descriptor(raw, self.table_address(selector, TS, ext))
        check_tss_stack(d, selector, dpl, ext)
        if raw >> 40 & 1:
            new = d.segment(selector)
            self._keep(key, new)
            return new
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
        segs = self.cpu.state.segs
        # (unrolled: a kernel's return to user mode passes here with four usable ones)
        if (segs[ES].attr >> ATTR_DPL_SHIFT & 3 < new_cpl or segs[DS].attr >> ATTR_DPL_SHIFT & 3 < new_cpl
                or segs[FS].attr >> ATTR_DPL_SHIFT & 3 < new_cpl
                or segs[GS].attr >> ATTR_DPL_SHIFT & 3 < new_cpl):
            for s in (ES, DS, FS, GS):
                attr = segs[s].attr
                if attr & ATTR_UNUSABLE or (attr >> ATTR_DPL_SHIFT) & 3 >= new_cpl:
                    continue
                if not (attr & ATTR_S and attr & 0xC == 0xC):      # (conforming code stays)
                    segs[s] = null_segment(0)

    # -- access checks for non-flat segments ------------------------------------------
    def linear(self, sreg: int, off: int, size: int, write: bool) -> int:
        """Check ``off`` against segment register ``sreg``; return the linear address."""
        if self.real:
            return realmode.check_limit(self.cpu.state.segs[sreg], off, size,
                                        SS if sreg == SREG_SS else GP)
        return check_access(self.cpu.state.segs[sreg], off, size, write,
                            SS if sreg == SREG_SS else GP)


# -- the checks of a segment load, on a descriptor already read (the monitors apply the
# same rules to their guests' descriptors) ----------------------------------------------
def check_segment_load(d: Descriptor, selector: int, stack: bool, cpl: int) -> None:
    """MOV/POP/LxS of a non-null selector into SS (``stack``) or DS/ES/FS/GS (SDM Vol. 2
    MOV: #GP(selector) for the type and privilege rules, then #SS/#NP(selector))."""
    err = selector & 0xFFFC
    rpl = selector & 3
    if stack:
        if rpl != cpl or not d.writable or d.dpl != cpl:
            raise CpuFault(GP, err)
        if not d.present:
            raise CpuFault(SS, err)
        return
    if not (d.is_data or (d.is_code and d.readable)):
        raise CpuFault(GP, err)
    if d.is_data or not d.conforming:
        if rpl > d.dpl or cpl > d.dpl:
            raise CpuFault(GP, err)
    if not d.present:
        raise CpuFault(NP, err)


def check_tss_stack(d: Descriptor, selector: int, dpl: int, ext: int) -> None:
    """The stack segment a privilege change takes from the TSS (SDM Vol. 3 §6.12.1:
    #TS(selector), #SS(selector) if not present)."""
    err = (selector & 0xFFFC) | ext
    if selector & 3 != dpl or d.dpl != dpl or not d.writable:
        raise CpuFault(TS, err)
    if not d.present:
        raise CpuFault(SS, err)


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
