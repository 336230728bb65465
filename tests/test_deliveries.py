"""Interrupt delivery through an IDT gate, with the outcome of its checks cached by
the gate's and the code segment's bytes (``hw.transfers._DELIVERIES``) and the TSS
stack segment's checks cached as a ring-0 SS load's (``Segmentation.check_new_ss``):
what a delivery does is what the checks on the tables give, every time.

A gate or descriptor changed between two deliveries through the same vector is
checked again, with the SDM's error code (Vol. 3 §6.12.1.1 and Vol. 2 INT n: the
gate's DPL for INT n, #GP(vector * 8 + 2); a gate not present, #NP(vector * 8 + 2);
a handler's code segment not present, #NP(selector); the TSS's SS of the wrong DPL,
#TS(selector); not present, #SS(selector)), and a fault commits nothing.
"""

from __future__ import annotations

import struct

import pytest

from ringvisor.hw import transfers
from ringvisor.hw.bus import IoBus
from ringvisor.hw.cpu import Cpu
from ringvisor.hw.faults import GP, NP, SS, TS, CpuFault
from ringvisor.hw.memory import PhysicalMemory
from ringvisor.hw.state import CR0_PE, Segment

GDT, IDT, TSS, STACK0, STACK3 = 0x1000, 0x2000, 0x3000, 0x8000, 0x7000
VEC = 0x80


def _descriptor(access: int) -> int:
    # base 0, limit 0xFFFFF pages (4 GiB), 32-bit (G, D/B)
    return 0xFFFF | 0xF << 48 | 0xC << 52 | access << 40


def _gate(access: int, sel: int = 0x08, offset: int = 0x123456) -> int:
    return (offset & 0xFFFF) | sel << 16 | access << 40 | (offset >> 16) << 48


def _cpu() -> Cpu:
    mem = PhysicalMemory(1 << 20)
    cpu = Cpu(mem, IoBus())
    gdt = [0, _descriptor(0x9B), _descriptor(0x93), _descriptor(0xFB), _descriptor(0xF3),
           0x67 | TSS << 16 | 0x89 << 40, _descriptor(0xB3)]      # 0x28: TSS; 0x30: DPL 1
    mem.write(GDT, struct.pack(f"<{len(gdt)}Q", *gdt))
    mem.write(IDT + VEC * 8, struct.pack("<Q", _gate(0xEE)))      # 32-bit interrupt gate, DPL 3
    mem.write(TSS + 4, struct.pack("<II", STACK0, 0x10))          # ESP0, SS0
    st = cpu.state
    st.cr0 |= CR0_PE
    st.gdtr.base, st.gdtr.limit = GDT, len(gdt) * 8 - 1
    st.idtr.base, st.idtr.limit = IDT, 256 * 8 - 1
    st.tr = Segment(0x28, TSS, 0x67, 0x8B)
    _to_user(cpu)
    return cpu


def _to_user(cpu) -> None:
    st = cpu.state
    st.segs[1] = Segment(0x1B, 0, 0xFFFFFFFF, 0xC0FB)
    st.segs[2] = Segment(0x23, 0, 0xFFFFFFFF, 0xC0F3)
    st.regs[4] = STACK3
    st.eip = 0x4000
    st.eflags = 0x202
    cpu.mode_changed()


def _int(cpu) -> None:
    transfers.deliver(cpu, VEC, None, True, 0x4002)


def test_delivery_from_the_cache_is_the_delivery():
    cpu = _cpu()
    st = cpu.state
    for _ in range(3):                # the first checks and fills the cache, then hits
        _int(cpu)
        assert (cpu.cpl, st.eip, st.regs[4], st.eflags & 0x200) == (0, 0x123456, STACK0 - 20, 0)
        assert (st.segs[1].selector, st.segs[2].selector) == (0x08, 0x10)
        frame = struct.unpack("<5I", cpu.mem.read(STACK0 - 20, 20))
        assert frame == (0x4002, 0x1B, 0x202, STACK3, 0x23)
        cpu.iret()
        assert (cpu.cpl, st.eip, st.regs[4]) == (3, 0x4002, STACK3)
    # and the same gate at CPL 0: no stack switch, a three-value frame
    for _ in range(2):
        st.segs[1] = Segment(0x08, 0, 0xFFFFFFFF, 0xC09B)
        st.segs[2] = Segment(0x10, 0, 0xFFFFFFFF, 0xC093)
        st.regs[4], st.eflags = 0x6000, 0x202
        cpu.mode_changed()
        _int(cpu)
        assert (cpu.cpl, st.regs[4]) == (0, 0x6000 - 12)
        assert struct.unpack("<3I", cpu.mem.read(0x6000 - 12, 12)) == (0x4002, 0x08, 0x202)


@pytest.mark.parametrize("where, value, fault", [
    (IDT + VEC * 8, _gate(0xCE), (GP, VEC * 8 + 2)),         # gate DPL 0 < CPL 3
    (IDT + VEC * 8, _gate(0x6E), (NP, VEC * 8 + 2)),         # gate not present
    (IDT + VEC * 8, _gate(0xEE, sel=0x10), (GP, 0x10)),      # to a data segment
    (GDT + 8, _descriptor(0x1B), (NP, 0x08)),                # handler's CS not present
    (GDT + 8, _descriptor(0xBB), (TS, 0)),                   # CS DPL 1: the TSS's SS1 is null
])
def test_a_changed_table_is_checked_again(where, value, fault):
    cpu = _cpu()
    _int(cpu)
    cpu.iret()
    cpu.mem.write(where, struct.pack("<Q", value))
    _to_user(cpu)
    with pytest.raises(CpuFault) as e:
        _int(cpu)
    assert (e.value.vector, e.value.error_code) == fault
    st = cpu.state
    assert (cpu.cpl, st.regs[4], st.eip, st.segs[1].selector) == (3, STACK3, 0x4000, 0x1B)


@pytest.mark.parametrize("ss0, ss_access, fault", [
    (0x30, 0xB3, (TS, 0x30)),          # the TSS's SS0 is a DPL-1 segment
    (0x10, 0x13, (SS, 0x10)),          # SS0 not present
    (0x13, 0x93, (TS, 0x10)),          # RPL 3 for ring 0
])
def test_a_changed_tss_stack_is_checked_again(ss0, ss_access, fault):
    cpu = _cpu()
    _int(cpu)
    cpu.iret()
    cpu.mem.write(TSS + 8, struct.pack("<I", ss0))
    cpu.mem.write(GDT + 2 * 8, struct.pack("<Q", _descriptor(ss_access)))
    _to_user(cpu)
    with pytest.raises(CpuFault) as e:
        _int(cpu)
    assert (e.value.vector, e.value.error_code) == fault
    assert (cpu.cpl, cpu.state.regs[4]) == (3, STACK3)
