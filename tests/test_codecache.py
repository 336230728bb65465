"""The translator's block formation, checked on guest-visible results."""

from __future__ import annotations

import struct

from ringvisor.hw.machine import Machine
from ringvisor.hw.state import ATTR_DB, ATTR_DPL_SHIFT, ATTR_G, ATTR_P, ATTR_S, CR0_PE, CR0_PG, CR4_PSE, Segment


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


def _idt_machine(engine: str, data_limit: int) -> Machine:
    """Flat code; data segments of base 0 and ``data_limit``; #GP/#SS handlers that halt."""
    m = flat_machine(engine)
    st = m.cpu.state
    g = data_limit >> 12
    data = Segment(0x10, 0, data_limit, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0x3)
    assert g  # page-granular limit
    for i in (0, 2, 3, 4, 5):
        st.segs[i] = data.copy()
    for vec in (12, 13):
        handler = 0x4000 + vec * 0x10
        m.mem.write(0x3000 + vec * 8, struct.pack("<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E, handler >> 16))
        m.mem.write(handler, b"\xF4")                        # hlt
    st.idtr.base, st.idtr.limit = 0x3000, 256 * 8 - 1
    m.mem.write(0x2000, struct.pack("<3Q", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))   # null, code, data
    st.gdtr.base, st.gdtr.limit = 0x2000, 3 * 8 - 1
    m.cpu.mode_changed()
    return m


def test_base_zero_segment_cut_below_4g_still_checks_its_limit():
    """A monitor's ring compression leaves base-0 segments whose limit stops short of
    4 GiB; the fast path for them must still fault past the limit (both engines)."""
    limit = 0xFFBFFFFF
    for engine in ("jit", "interp"):
        for ebx, size_code, ok in ((0xFFBFFFFC, b"\x8B\x03", True),      # mov eax,[ebx]
                                   (0xFFBFFFFD, b"\x8B\x03", False),
                                   (0xFFBFFFFF, b"\x8A\x03", True),      # mov al,[ebx]
                                   (0xFFC00000, b"\x89\x03", False),     # mov [ebx],eax
                                   (0x00001000, b"\x89\x03", True)):
            m = _idt_machine(engine, limit)
            st = m.cpu.state
            m.mem.write(0x1000, b"\x90" * 4 + size_code + b"\xF4")
            st.eip, st.regs[3] = 0x1000, ebx
            m.cpu.run(50)
            if ok:
                assert st.eip == 0x1000 + 4 + len(size_code) + 1, (engine, hex(ebx))
            else:
                assert st.eip == 0x4000 + 13 * 0x10 + 1, (engine, hex(ebx))     # in the #GP handler
                assert m.mem.read32(st.regs[4] + 4) == 0x1004                    # faulting EIP


def test_data_written_beside_code_keeps_the_code_translated():
    """Storing into a code page outside any block leaves the blocks alone; storing
    into a block's bytes replaces it (the new code runs)."""
    m = flat_machine("jit")
    st = m.cpu.state
    # 0x1000: mov [0x1800], eax ; inc eax ; hlt
    m.mem.write(0x1000, bytes([0xA3, 0x00, 0x18, 0, 0, 0x40, 0xF4]))
    st.eip, st.regs[0] = 0x1000, 5
    m.cpu.run(10)
    cache = m.cpu.cache
    before = cache.invalidations
    st.eip, st.halted = 0x1000, False
    m.cpu.run(10)
    assert st.regs[0] == 7 and cache.invalidations == before
    m.mem.write32(0x1800, 0)
    # now overwrite "inc eax" with "dec eax" from guest code and run it again
    m.mem.write(0x1100, bytes([0xC6, 0x05, 0x05, 0x10, 0, 0, 0x48, 0xF4]))   # mov byte [0x1005], 0x48 ; hlt
    st.eip, st.halted = 0x1100, False
    m.cpu.run(10)
    st.eip, st.halted = 0x1000, False
    m.cpu.run(10)
    assert st.regs[0] == 6 and cache.invalidations > before


def _user_cut_machine(engine: str) -> Machine:
    """Ring 3 under paging (4 MiB pages, all user, writable), DS/ES/SS of base 0 cut at
    0xFFBFFFFF as a monitor cuts them, FS flat to 4 GiB; the last 4 MiB are mapped (a
    user page past the limit); #GP/#SS handlers at ring 0 that halt."""
    m = Machine(16, engine)
    st = m.cpu.state
    m.mem.write(0x2000, struct.pack("<3Q", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))
    st.gdtr.base, st.gdtr.limit = 0x2000, 3 * 8 - 1
    st.idtr.base, st.idtr.limit = 0x3000, 256 * 8 - 1
    for vec in (12, 13):
        handler = 0x4000 + vec * 0x10
        m.mem.write(0x3000 + vec * 8, struct.pack("<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E, handler >> 16))
        m.mem.write(handler, b"\xF4")                        # hlt
    m.mem.write(0x6000, struct.pack("<IIII", 0, 0x9000, 0x10, 0))    # TSS: ESP0, SS0
    st.tr = Segment(0x18, 0x6000, 0x67, ATTR_P | 0xB)
    for i in range(4):                                       # 0-16 MiB, identity
        m.mem.write32(0x5000 + 4 * i, i << 22 | 0x87)
    m.mem.write32(0x5000 + 4 * 1022, 2 << 22 | 0x87)          # 0xFF800000 -> 8 MiB
    m.mem.write32(0x5000 + 4 * 1023, 1 << 22 | 0x87)          # 0xFFC00000 -> 4 MiB
    m.mem.write32(0xBFFFFC, 0x55667788)                       # at 0xFFBFFFFC
    m.mem.write32(0x400000, 0x11223344)
    st.cr3, st.cr4 = 0x5000, st.cr4 | CR4_PSE
    st.cr0 |= CR0_PE | CR0_PG
    dpl3 = 3 << ATTR_DPL_SHIFT
    cut = Segment(0x23, 0, 0xFFBFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | dpl3 | 0x3)
    full = Segment(0x23, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | dpl3 | 0x3)
    code = Segment(0x1B, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | dpl3 | 0xB)
    st.segs = [cut.copy(), code, cut.copy(), cut.copy(), full, cut.copy()]
    st.regs[4] = 0x8000
    m.cpu.mode_changed()
    return m


def test_user_code_under_a_cut_segment_faults_past_the_limit_after_the_page_was_reached():
    """User code under a monitor's cut checks the limit only when the user TLB misses:
    the TLB keeps no user page reaching past the limit, so a load through FS (4 GiB)
    of a user page past it, in the same block, cannot let the next access through DS
    (#GP(0)) or SS (#SS(0)) hit; an access within the limit runs (both engines)."""
    at = 0x1003                                       # the access, after the FS load
    for engine in ("jit", "interp"):
        for code, fault in ((b"\x8B\x03", 13),              # mov eax,[ebx]
                            (b"\x89\x03", 13),              # mov [ebx],eax
                            (b"\x01\x03", 13),              # add [ebx],eax
                            (b"\x8B\x45\x00", 12),          # mov eax,[ebp]
                            (b"\x8B\x43\xFC", None)):       # mov eax,[ebx-4]
            m = _user_cut_machine(engine)
            st = m.cpu.state
            m.mem.write(0x1000, b"\x64\x8B\x0B" + code + b"\xF4")   # mov ecx,fs:[ebx]; ...; hlt
            st.eip, st.regs[3], st.regs[5] = 0x1000, 0xFFC00000, 0xFFC00000
            m.cpu.run(50)
            assert st.regs[1] == 0x11223344, engine
            if fault is None:               # the access ran; HLT at ring 3 is #GP(0)
                assert st.regs[0] == 0x55667788, engine
                fault, at_ = 13, at + len(code)
            else:
                at_ = at
            assert st.eip == 0x4000 + fault * 0x10 + 1, (engine, code, hex(st.eip))
            frame = [m.mem.read32(0x9000 - 24 + 4 * i) for i in range(6)]
            assert frame == [0, at_, 0x1B, 2, 0x8000, 0x23], (engine, code, frame)   # error code, EIP ...
