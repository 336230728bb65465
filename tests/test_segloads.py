"""Data segment loads inside a translated block, the second of two in a row copied
from the first (``Segmentation.load_again``) when the selector is the same.

What a load does is what the processor's own read and checks of the descriptor give
(SDM Vol. 2 MOV, POP: #NP(selector) for a data segment not present; Vol. 3 §3.4.5.1:
the accessed bit is set when the selector is loaded), so the copy must be what a
second read would give: the first load's segment with the bit it set, and, where the
instruction between the two read the stack through a page walk that set a page-table
entry's accessed bit, the bytes as they are after that write (the walk happens before
the second load reads the table, as on the processor).
"""

from __future__ import annotations

import struct

from ringvisor.hw.bus import IoBus
from ringvisor.hw.cpu import Cpu
from ringvisor.hw.memory import PhysicalMemory
from ringvisor.hw.state import CR0_PE, CR0_PG, Segment

FLAT = 0xFFFFFFFF


def _descriptor(access: int) -> int:
    # base 0, limit 0xFFFFF pages (4 GiB), 32-bit (G, D/B)
    return 0xFFFF | 0xF << 48 | 0xC << 52 | access << 40


def _machine(code: bytes, data: Segment, engine: str = "jit") -> Cpu:
    cpu = Cpu(PhysicalMemory(1 << 20), IoBus(), engine=engine)
    st = cpu.state
    st.cr0 |= CR0_PE
    st.segs[1] = Segment(0x08, 0, FLAT, 0xC09B)
    st.segs[2] = Segment(0x20, 0, FLAT, 0xC093)
    # the data segments of the shape the loads give, so that no load changes the CPU's
    # mode and ends the block: the loads run one after the other inside it
    for sreg in (0, 3, 4, 5):
        st.segs[sreg] = data
    cpu.mem.write(0x4000, code)
    st.eip = 0x4000
    return cpu


def test_a_fault_in_the_second_of_two_loads_comes_from_that_instruction():
    code = bytes.fromhex("66b81000" "66bb1800"      # mov ax, 0x10; mov bx, 0x18
                         "8ed8" "8ec0" "8ee0"       # mov ds, ax; mov es, ax; mov fs, ax
                         "8eeb" "f4")               # mov gs, bx (#NP); hlt
    cpu = _machine(code, Segment(0x20, 0, FLAT, 0xC093))
    gdt = [0, _descriptor(0x9B), _descriptor(0x92), _descriptor(0x12), _descriptor(0x93)]
    cpu.mem.write(0x1000, struct.pack("<5Q", *gdt))     # 0x10: accessed clear; 0x18: not present
    cpu.mem.write(0x2000 + 11 * 8, struct.pack("<Q", 0x5000 | 0x08 << 16 | 0x8E << 40))
    cpu.mem.write(0x5000, b"\xf4")                      # the #NP handler halts
    st = cpu.state
    st.gdtr.base, st.gdtr.limit = 0x1000, len(gdt) * 8 - 1
    st.idtr.base, st.idtr.limit = 0x2000, 0x7FF
    st.regs[4] = 0x8000
    old_gs = st.segs[5]
    cpu.mode_changed()
    cpu.run(1_000_000)
    assert st.halted and st.eip == 0x5001
    # the frame of #NP(0x18): error code, the EIP of mov gs, bx, CS, EFLAGS
    err, eip, cs = struct.unpack("<3I", cpu.mem.read(st.regs[4], 12))
    assert (err, eip, cs) == (0x18, 0x400E, 0x08)
    for sreg in (0, 3, 4):              # ES, DS, FS: loaded, with the accessed bit
        assert (st.segs[sreg].selector, st.segs[sreg].attr & 0xFF) == (0x10, 0x93)
    assert cpu.mem.read(0x1000 + 2 * 8 + 5, 1)[0] == 0x93
    assert st.segs[5] == old_gs


def test_a_page_walk_between_two_pops_is_seen_by_the_second_load():
    # The descriptor of selector 0x08 lies in the page table, over the entries of pages 9
    # and 10: the walk for the second POP's stack read (page 9) sets the accessed bit of
    # page 9's entry, which is bit 5 of the descriptor's limit.
    code = bytes.fromhex("0fa9" "0fa1" "f4")            # pop gs; pop fs; hlt
    cpu = _machine(code, Segment(0x20, 0, 0xF9003, 0x4093))
    pt = [k << 12 | 0x23 for k in range(256)]           # identity, present, writable, accessed
    pt[9] = 0x9003                                      # accessed clear: limit 15:0 = 0x9003
    pt[10] = 0x004F9200                                 # not present: P, DPL 0, data; D/B; limit 19:16 F
    cpu.mem.write(0x1000, struct.pack("<I", 0x2000 | 0x23))
    cpu.mem.write(0x2000, struct.pack("<256I", *pt))
    cpu.mem.write(0x8FFC, struct.pack("<II", 0x08, 0x08))
    st = cpu.state
    st.gdtr.base, st.gdtr.limit = 0x2000 + 9 * 4 - 8, 15
    st.cr3 = 0x1000
    st.cr0 |= CR0_PG
    st.regs[4] = 0x8FFC
    cpu.mode_changed()
    cpu.run(1_000_000)
    assert st.halted and st.regs[4] == 0x9004
    assert cpu.mem.read(0x2000 + 9 * 4, 4) == struct.pack("<I", 0x9023)
    assert (st.segs[5].selector, st.segs[5].limit) == (0x08, 0xF9003)
    assert (st.segs[4].selector, st.segs[4].limit) == (0x08, 0xF9023)
    assert st.segs[4].attr & 0xFF == st.segs[5].attr & 0xFF == 0x93


def test_a_copied_load_that_changes_the_segments_shape_changes_the_mode():
    """``mov ds, ax; mov es, ax`` with DS already of the selector's shape (based at
    0x3000) and ES flat: the first load leaves the mode as it is and the block goes
    on; the second, a copy of DS, changes it, so what follows must address ES:0 at
    0x3000 (SDM Vol. 3 §3.4.3: the base is the segment's)."""
    code = bytes.fromhex("66b81800" "8ed8" "8ec0"   # mov ax, 0x18; mov ds, ax; mov es, ax
                         "26a100000000" "f4")      # mov eax, es:[0]; hlt
    for engine in ("jit", "interp"):
        cpu = _machine(code, Segment(0x20, 0, FLAT, 0xC093), engine)
        based = 0xFFFF | 0x3000 << 16 | 0x93 << 40 | 0xF << 48 | 0xC << 52   # base 0x3000, accessed
        gdt = [0, _descriptor(0x9B), _descriptor(0x93), based, _descriptor(0x93)]
        cpu.mem.write(0x1000, struct.pack("<5Q", *gdt))
        cpu.mem.write(0x3000, struct.pack("<I", 0x12345678))
        cpu.mem.write(0x0000, struct.pack("<I", 0xDEADBEEF))
        st = cpu.state
        st.gdtr.base, st.gdtr.limit = 0x1000, len(gdt) * 8 - 1
        st.regs[4] = 0x8000
        # DS of the shape the load gives (its load leaves the mode as it is), ES flat
        st.segs[3] = Segment(0x18, 0x3000, FLAT, 0xC093)
        cpu.mode_changed()
        cpu.run(1_000)
        assert st.halted and st.regs[0] == 0x12345678, (engine, hex(st.regs[0]))
        assert st.segs[0].base == st.segs[3].base == 0x3000
