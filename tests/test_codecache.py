"""The translator's block formation, checked on guest-visible results."""

from __future__ import annotations

from ringvisor.hw.machine import Machine
from ringvisor.hw.state import ATTR_DB, ATTR_G, ATTR_P, ATTR_S, CR0_PE, Segment


def flat_machine(engine: str) -> Machine:
    m = Machine(1, engine)
    st = m.cpu.state
    code = Segment(0x08, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0xB)
    data = Segment(0x10, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0x3)
    st.segs = [data.copy(), code, data.copy(), data.copy(), data.copy(), data.copy()]
    st.cr0 |= CR0_PE
    st.regs[4] = 0x8000
    m.cpu.mode_changed()
    return m


def test_jump_to_an_instruction_that_straddles_the_page_end():
    """A block that follows a JMP to a target whose instruction crosses into the next
    page must still leave *to the target* (it once left to the JMP's fall-through)."""
    for engine in ("jit", "interp"):
        m = flat_machine(engine)
        m.mem.write(0x1FF0, bytes([0x31, 0xC0, 0xEB, 0x08]))            # xor eax,eax; jmp 0x1FFC
        m.mem.write(0x1FF4, bytes([0xB8, 0x11, 0, 0, 0, 0xF4]))          # mov eax,0x11; hlt (skipped)
        m.mem.write(0x1FFC, bytes([0xB8, 0x78, 0x56, 0x34, 0x12, 0xF4]))  # mov eax,imm32 (straddles); hlt
        m.cpu.state.eip = 0x1FF0
        m.cpu.run(100)
        assert m.cpu.state.regs[0] == 0x12345678, engine
        assert m.cpu.state.eip == 0x2002 and m.cpu.state.halted, engine
