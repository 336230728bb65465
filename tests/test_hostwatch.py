"""The host debugger's watchpoints (hw/hostdebug.py, what gdb's ``watch``/``rwatch``/``awatch``
ask of the gdb stub) stop the CPU after an access that completed -- never for one the
processor did not make.

An x86 data breakpoint is a trap reported after the instruction that made the access (SDM
Vol. 3 §17.3.1.2, "the processor generates the exception after it executes the instruction
that made the access"): an instruction that faults does not complete, and its access is
made when the fault's handler has fixed what it needed and the instruction runs again.
The debugger's stop follows the same rule (QEMU's watchpoints too are checked once the
access's TLB entry exists, after the #PF a not-present page raises).  Before, the stop
came at the faulting attempt, the #PF already delivered: the debugger saw the handler's
first instruction and the value not yet written.
"""

from __future__ import annotations

import struct

import pytest

from ringvisor.hw.machine import Machine
from ringvisor.hw.state import Segment

CODE, PF_HANDLER, GP_HANDLER, IDT, GDT = 0x1000, 0x5000, 0x5100, 0x3000, 0x2000
PD, PT = 0x10000, 0x11000
TARGET = 0x80000                         # not present until the #PF handler maps it
COUNT = 0x9000                           # the #PF handler counts its runs here


def machine(engine: str, code: bytes) -> Machine:
    m = Machine(1, engine)
    st = m.cpu.state
    m.mem.write(GDT, struct.pack("<3Q", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))
    st.gdtr.base, st.gdtr.limit = GDT, 3 * 8 - 1
    for vec, handler in ((14, PF_HANDLER), (13, GP_HANDLER)):
        m.mem.write(IDT + vec * 8, struct.pack("<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E,
                                               handler >> 16))
    st.idtr.base, st.idtr.limit = IDT, 256 * 8 - 1
    # #PF: count, map the target page, drop the error code, return to retry
    m.mem.write(PF_HANDLER, bytes([0xFF, 0x05]) + struct.pack("<I", COUNT) +          # incl COUNT
                bytes([0xC7, 0x05]) + struct.pack("<II", PT + (TARGET >> 12) * 4, TARGET | 3) +
                bytes([0x0F, 0x01, 0x3D]) + struct.pack("<I", TARGET) +               # invlpg
                bytes([0x83, 0xC4, 0x04, 0xCF]))                                     # add esp,4; iret
    m.mem.write(GP_HANDLER, b"\xF4")                                                  # hlt
    # identity map of the first 1 MiB, the target page not present
    m.mem.write(PD, struct.pack("<I", PT | 3))
    m.mem.write(PT, b"".join(struct.pack("<I", (i << 12) | 3 if i != TARGET >> 12 else 0)
                             for i in range(256)))
    for i in range(6):
        st.segs[i] = Segment(0x08 if i == 1 else 0x10, 0, 0xFFFFFFFF, 0xC09B if i == 1 else 0xC093)
    st.cr3 = PD
    st.cr0 = 0x80000011
    st.regs[4] = 0x8000
    m.mem.write(CODE, code)
    st.eip = CODE
    m.cpu.mode_changed()
    m.cpu.tlb_flush()
    return m


STORE = bytes([0xB8, 0x78, 0x56, 0x34, 0x12,                 # mov eax, 0x12345678
               0xA3]) + struct.pack("<I", TARGET + 8) + b"\xF4"   # mov [TARGET+8], eax; hlt
LOAD = bytes([0x8B, 0x1D]) + struct.pack("<I", TARGET + 8) + b"\xF4"   # mov ebx, [TARGET+8]; hlt


@pytest.mark.parametrize("engine", ["jit", "interp"])
@pytest.mark.parametrize("kind,code,after", [("write", STORE, CODE + 10), ("read", LOAD, CODE + 6),
                                             ("access", STORE, CODE + 10)])
def test_watchpoint_stops_after_the_access_not_at_its_fault(engine, kind, code, after):
    m = machine(engine, code)
    m.cpu.host.set_watchpoints([(TARGET + 8, 4, kind)])
    m.cpu.host_debug_changed()
    m.cpu.run(1000)
    st = m.cpu.state
    ev = m.cpu.host.event
    assert ev is not None and (ev.kind, ev.address) == (kind, TARGET + 8)
    # the #PF was taken once and returned; the stop is right after the access, retried
    assert m.mem.read32(COUNT) == 1
    assert st.eip == after, hex(st.eip)
    if code is STORE:
        assert m.mem.read32(TARGET + 8) == 0x12345678


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_watchpoint_on_an_access_the_segment_refuses(engine):
    """A store through a read-only DS: #GP(0) before any access (SDM Vol. 3 §5.6), so the
    watchpoint never stops; the #GP handler's HLT ends the run."""
    m = machine(engine, STORE)
    st = m.cpu.state
    st.segs[3] = Segment(0x10, 0, 0xFFFFFFFF, 0xC091)        # read-only data
    m.cpu.mode_changed()
    m.cpu.host.set_watchpoints([(TARGET + 8, 4, "write")])
    m.cpu.host_debug_changed()
    m.cpu.run(1000)
    assert m.cpu.host.event is None and st.halted and st.eip == GP_HANDLER + 1
