"""What the translator's optimizations could break, checked against unicorn (QEMU).

Each case runs on unicorn, on the interpreter and on the translating engine
(tests/cpuharness.py); the registers, memory and EFLAGS — at the end, or in the
exception frame when an instruction faults — must agree.  The cases are built
so that the optimization under test is on the path: registers renamed on every
write, flags computed only when read (IMUL's CF/OF), a fused loop that does not
carry its flag record between iterations, a side exit taken in a later
iteration of a fused loop, and a store into the loop that is running.
"""

from __future__ import annotations

import pytest

import cpuharness as H
from cpuharness import DATA, LOW, STACK_TOP, Case, check


def _r(eax=0, ecx=0, edx=0, ebx=0, esp=STACK_TOP, ebp=0, esi=0, edi=0):
    return [eax, ecx, edx, ebx, esp, ebp, esi, edi]


DIV_ESI = b"\xF7\x36"              # div dword [esi]
LEA_ESI_4 = b"\x8D\x76\x04"        # lea esi, [esi+4] (no flags)
CMP_ESI_EDI = b"\x39\xFE"          # cmp esi, edi
DIVISORS = H.s32(7) + H.s32(9) + H.s32(0)   # the third iteration divides by zero
# the faulting iteration starts at ESI = 0x...10, the one before at 0x...0C: bit 4 flips,
# so a flag record made from the wrong iteration's ESI shows a different AF


def _loop(*body: bytes, back=b"\x75") -> list:
    return [("label", "top"), *body, ("rel8", back, "top")]


CASES = {
    # #DE at the first instruction of a fused loop, third iteration: the flags in the
    # frame are the previous iteration's CMP, which the loop no longer carries from one
    # iteration to the next (the unwind path rebuilds them from that iteration's locals)
    "fault_at_loop_start_record_not_carried": Case(
        _loop(DIV_ESI, LEA_ESI_4, CMP_ESI_EDI),
        _r(eax=1000, esi=DATA + 8, edi=DATA + 0x40), patches=[(DATA + 8, DIVISORS)]),
    # the same, but the CMP reads ESI before the loop renames it: the record names the
    # iteration's entry ESI, so the loop must carry it (and the frame shows it)
    "fault_at_loop_start_record_carried": Case(
        _loop(DIV_ESI, CMP_ESI_EDI, LEA_ESI_4),
        _r(eax=1000, esi=DATA + 8, edi=DATA + 0x40), patches=[(DATA + 8, DIVISORS)]),
    # INC keeps CF: the carried record takes CF from the iteration before
    "fault_at_loop_start_inc_keeps_cf": Case(
        _loop(DIV_ESI, LEA_ESI_4, b"\x47", CMP_ESI_EDI),          # inc edi
        _r(eax=1000, esi=DATA + 8, edi=DATA + 0x40), patches=[(DATA + 8, DIVISORS)]),
    # the record names a load of this iteration (mov ecx,[esi] ... cmp ecx,edi), which
    # the faulting iteration has already reassigned when its DIV faults: the loop
    # keeps a copy of the load from the iteration before for the unwinding
    "fault_in_loop_record_from_a_reloaded_register": Case(
        _loop(b"\x8B\x0E", b"\xBA\x00\x00\x00\x00", DIV_ESI, LEA_ESI_4, b"\x39\xF9"),
        _r(eax=1000, esi=DATA + 8, edi=5), patches=[(DATA + 8, DIVISORS)]),
    # IMUL's CF/OF are computed only when read: here by the #UD frame's EFLAGS ...
    "imul_overflow_then_fault": Case([b"\x0F\xAF\xC3", b"\x0F\x0B"],      # imul eax,ebx; ud2
                                     _r(eax=0x10000, ebx=0x10000)),
    "imul_fits_then_fault": Case([b"\x0F\xAF\xC3", b"\x0F\x0B"], _r(eax=0x1234, ebx=0x10),
                                 eflags=0x8C3),
    # ... and across the block's exit, by the followers (setcc, pushfd, jcc)
    "imul_imm_overflow_flags": Case([b"\x69\xC3\x00\x00\x01\x00"],        # imul eax,ebx,0x10000
                                    _r(ebx=0x12345)),
    # a register renamed to another's entry value, both carried into the next
    # iteration (the back edge assigns them in parallel): xchg eax, ecx in a loop
    "rename_swap_in_loop": Case(_loop(b"\x91", b"\x01\xC3", b"\x4A"),    # xchg; add ebx,eax; dec edx
                                _r(eax=3, ecx=5, edx=5)),
    # a side exit of a fused loop taken in a later iteration: the flags of the ADD
    # and every register the body changed leave through it
    "side_exit_in_later_iteration": Case(
        [("label", "top"), b"\x01\xC8", ("rel8", b"\x72", "out"), b"\x46", b"\x4A",
         ("rel8", b"\x75", "top"), ("label", "out")],              # add eax,ecx; jc; inc esi; dec edx
        _r(eax=0xFFFFFF00, ecx=0x40, edx=100)),
    # CMP's result is computed only where its flags are read: by the #DE frame two
    # instructions on (the fault is found by the line it comes from, not a counter) ...
    "cmp_flags_at_a_later_fault": Case(
        [b"\x39\xD1", LEA_ESI_4, DIV_ESI],                   # cmp ecx,edx; lea; div [esi]
        _r(eax=5, ecx=0x80000000, edx=1, esi=DATA + 4), patches=[(DATA + 8, H.s32(0))]),
    # ... by the followers after the block's end, JE comparing the operands themselves,
    # and TEST of a register with itself
    "cmp_je_equal_operands": Case(
        [b"\x39\xD8", ("rel8", b"\x74", "eq"), b"\x41", ("label", "eq")],   # cmp eax,ebx; je; inc ecx
        _r(eax=0xFFFFFFF0, ebx=0xFFFFFFF0)),
    "cmp_byte_then_flags_read": Case([b"\x38\xE0"], _r(eax=0x7F80)),   # cmp al, ah
    "test_reg_itself": Case([b"\x85\xDB", b"\x0F\x0B"], _r(ebx=0x80000000)),   # test ebx,ebx; ud2
    # IMUL's low half from the plain product, negative operands
    "imul_negative_then_fault": Case([b"\x0F\xAF\xC3", b"\x0F\x0B"],     # imul eax,ebx; ud2
                                     _r(eax=0xFFFFFFFD, ebx=0x7FFFFFFF)),
    # one-operand MUL and IMUL inline: EDX:EAX, and the flags (SF/ZF/PF of the low
    # half, AF clear, CF = OF = the high half is needed) read by the #UD frame
    "mul32_high_half_then_fault": Case([b"\xF7\xE3", b"\x0F\x0B"],      # mul ebx; ud2
                                       _r(eax=0xCCCCCCCD, ebx=0x1234567), eflags=0x8D7),
    "mul32_fits_then_fault": Case([b"\xF7\xE3", b"\x0F\x0B"], _r(eax=7, ebx=9, edx=5)),
    "imul32_negative_then_fault": Case([b"\xF7\xEB", b"\x0F\x0B"],     # imul ebx; ud2
                                       _r(eax=0xFFFFFFFD, ebx=7)),
    "imul32_overflow_then_fault": Case([b"\xF7\xEB", b"\x0F\x0B"],
                                       _r(eax=0x80000000, ebx=0xFFFFFFFF)),
    "mul8_then_flags_read": Case([b"\xF6\xE3"], _r(eax=0xFFFF12F0, ebx=0x11)),   # mul bl
    "imul16_then_flags_read": Case([b"\x66\xF7\xEB"], _r(eax=0x1234FFF0, ebx=0x7FFF, edx=0xAAAA5555)),
    # TEST of a register with itself read twice on the straight path (JE and the
    # block's end): its result is computed once
    "test_itself_je_then_end": Case(
        [b"\x85\xC0", ("rel8", b"\x74", "z"), b"\x41", ("label", "z")], _r(eax=0x100)),
    # an address on a register just moved by a constant starts from its old value:
    # add eax,0x40; mov edx,[eax-0x40]; push ebx; mov ecx,[esp+4]; sub esi,8; mov edi,[esi+12]
    "address_on_a_moved_register": Case(
        [b"\x83\xC0\x40", b"\x8B\x50\xC0", b"\x53", b"\x8B\x4C\x24\x04",
         b"\x83\xEE\x08", b"\x8B\x7E\x0C"],
        _r(eax=DATA + 0x10, ebx=0x1234, esi=DATA + 0x20)),
    # ... and wraps as the address does: sub eax,0x40 takes EAX below zero (to
    # 0xFFFFFFD0), [eax+0x40] is back at 0x10
    "address_on_a_moved_register_wraps": Case(
        [b"\x83\xE8\x40", b"\x8B\x50\x40"], _r(eax=LOW + 0x10)),
    # a register loaded by a byte (word) access needs no mask to be read as CL (DX) and
    # keeps no upper bits when CL is written; a word's upper byte stays when DL is:
    # movzx ecx,byte [esi]; mov cl,[esi+1]; add al,cl; movzx edx,word [esi]; mov dl,ah;
    # mov bh,[esi]; add dx,cx
    "byte_and_word_loads_then_partial_registers": Case(
        [b"\x0F\xB6\x0E", b"\x8A\x4E\x01", b"\x00\xC8", b"\x0F\xB7\x16", b"\x88\xE2",
         b"\x8A\x3E", b"\x66\x01\xCA"],
        _r(eax=0x12345678, ebx=0xAABBCCDD, ecx=0xFFFFFFFF, edx=0xFFFFFFFF, esi=DATA),
        patches=[(DATA, b"\x81\xF2")]),
    # with paging off a read indexes RAM by its address unmasked: one that wraps past
    # 4 GiB (here to DATA + 0x10) must still read there, through the slow path:
    # mov edx,[ebx+0x7ffffff0]; movzx eax,byte [ebx+0x7ffffff1]; mov ecx,[ebx+esi+0x7ffffff4]
    "read_wrapping_past_4g_with_paging_off": Case(
        [b"\x8B\x93\xF0\xFF\xFF\x7F", b"\x0F\xB6\x83\xF1\xFF\xFF\x7F",
         b"\x8B\x8C\x33\xF4\xFF\xFF\x7F"],
        _r(ebx=(DATA + 0x10 - 0x7FFFFFF0) & 0xFFFFFFFF, esi=4),
        patches=[(DATA + 0x10, bytes(range(0x41, 0x51)))]),
    # ... and a store, by its address unmasked and the write TLB's (zero) delta:
    # mov [ebx+0x7ffffff0],ecx; mov [ebx+0x7ffffff5],al; mov edx,[ebx+0x7ffffff0]
    "store_wrapping_past_4g_with_paging_off": Case(
        [b"\x89\x8B\xF0\xFF\xFF\x7F", b"\x88\x83\xF5\xFF\xFF\x7F",
         b"\x8B\x93\xF0\xFF\xFF\x7F"],
        _r(eax=0x5A, ebx=(DATA + 0x20 - 0x7FFFFFF0) & 0xFFFFFFFF, ecx=0x11223344)),
    # registers written in place in a fused loop (CodeCache._coalesce): ESI's new value
    # is what the #DE of the third iteration's DIV shows, its frame rebuilt from the
    # register the back edge no longer copies into (lea esi,[esi+4]; mov ecx,[esi];
    # xor edx,edx; mov eax,1000; div ecx; cmp esi,edi; jne)
    "coalesced_register_at_a_later_fault": Case(
        _loop(LEA_ESI_4, b"\x8B\x0E", b"\x31\xD2", b"\xB8\xE8\x03\x00\x00", b"\xF7\xF1",
              CMP_ESI_EDI),
        _r(esi=DATA + 4, edi=DATA + 0x40), patches=[(DATA + 8, DIVISORS)]),
    # ... but not where a fault after the new value is made needs the old one: ADD's
    # flag record names EDI's entry value, read by the DIV's frame (AF: 0x0F + 1 in
    # the faulting iteration; taken from the new EDI it would be clear)
    "not_coalesced_where_a_fault_reads_the_entry_value": Case(
        _loop(b"\x01\xCF", DIV_ESI, LEA_ESI_4, b"\x39\xDE"),     # add edi,ecx; div; lea; cmp esi,ebx
        _r(eax=1000, ecx=1, esi=DATA + 8, edi=0x0D, ebx=DATA + 0x40),
        patches=[(DATA + 8, DIVISORS)]),
    # ... nor where another register is carried from the entry value (mov ebx,eax;
    # lea eax,[eax-4]; dec edx; jne: EBX takes EAX's entry value, EAX its new one)
    "not_coalesced_where_another_register_takes_the_entry_value": Case(
        _loop(b"\x89\xC3", b"\x8D\x40\xFC", b"\x4A"), _r(eax=0x1000, edx=5)),
    # a flat address reused by a later access to the same expression, and not across a
    # change of its register: mov [esi+8],eax; mov ebx,[esi+8]; add esi,4;
    # mov [esi+8],ecx; mov edi,[esi+8]; add eax,ebx; dec edx; jnz
    "address_reused_only_while_its_registers_hold": Case(
        _loop(b"\x89\x46\x08", b"\x8B\x5E\x08", b"\x83\xC6\x04", b"\x89\x4E\x08",
              b"\x8B\x7E\x08", b"\x01\xD8", b"\x4A"),
        _r(eax=3, ecx=0x55, edx=4, esi=DATA)),
    # a load of the address the store before it wrote takes the stored value (the RAM
    # fast path), in a loop (mov [esi+8],eax; lea ecx,[eax+esi]; mov ebx,[esi+8];
    # add eax,ebx; dec edx; jnz) ...
    "load_after_a_store_to_its_address": Case(
        _loop(b"\x89\x46\x08", b"\x8D\x0C\x30", b"\x8B\x5E\x08", b"\x01\xD8", b"\x4A"),
        _r(eax=3, edx=4, esi=DATA)),
    # ... but not across another write, which may change the same bytes (EDI = ESI + 8):
    # mov [esi+8],eax; add [edi],ecx; mov ebx,[esi+8]; inc eax; dec edx; jnz
    "load_after_a_store_and_another_write": Case(
        _loop(b"\x89\x46\x08", b"\x01\x0F", b"\x8B\x5E\x08", b"\x40", b"\x4A"),
        _r(eax=3, ecx=0x77, edx=2, esi=DATA, edi=DATA + 8)),
    # ... nor of another size: mov [esi+8],eax; movzx ebx,byte [esi+8]; inc eax; dec edx; jnz
    "load_of_another_size_after_a_store": Case(
        _loop(b"\x89\x46\x08", b"\x0F\xB6\x5E\x08", b"\x40", b"\x4A"),
        _r(eax=0x11223344, edx=2, esi=DATA)),
    # a REP string instruction inside a block whose registers are renamed around it
    "rep_stos_between_renames": Case(
        [b"\x8D\x7B\x10", b"\xB9\x03\x00\x00\x00", b"\xF3\xAB", b"\x01\xF9"],
        _r(eax=0xAABBCCDD, ebx=DATA)),            # lea edi,[ebx+16]; mov ecx,3; rep stosd; add ecx,edi
    "rep_stos_zero_count": Case(
        [b"\x31\xC9", b"\xF3\xAB", b"\x89\xF8"], _r(eax=1, edi=DATA)),   # xor ecx,ecx; rep stosd; mov eax,edi
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_translator_case(name):
    check(CASES[name])


def test_store_into_the_running_fused_loop():
    """A loop that patches the immediate of one of its own instructions: each
    iteration must add the value the previous one stored (SDM Vol. 3 §11.6)."""
    _, labels = H.assemble(_smc_body(0), H.CODE)
    check(Case(_smc_body(labels["imm"] + 2), _r(eax=0, ebx=0)))


def _smc_body(imm_addr: int) -> list:
    return [("label", "top"),
            b"\xA3" + H.s32(imm_addr),              # mov [imm], eax
            ("label", "imm"), b"\x81\xC3" + H.s32(0),   # add ebx, imm32 (patched)
            b"\x40",                                 # inc eax
            b"\x83\xF8\x05",                         # cmp eax, 5
            ("rel8", b"\x75", "top")]


# --- segment loads inside translated blocks, and the descriptor cache ----------------------
GDT_FLAT_DATA = 0x00CF92000000FFFF     # base 0, 4 GiB, read/write, not yet accessed
GDT_BASED_DATA = 0x00CF92001000FFFF    # the same with base 0x1000


def _gdt_machine(engine: str):
    """Flat code and data; a GDT at 0x2000 (null, code 0x08, data 0x10, based data 0x18)
    and an IDT at 0x3000 whose #GP (13) and #NP (11) handlers are a HLT each."""
    import struct
    from test_codecache import flat_machine
    m = flat_machine(engine)
    st = m.cpu.state
    m.mem.write(0x2000, struct.pack("<4Q", 0, 0x00CF9A000000FFFF, GDT_FLAT_DATA, GDT_BASED_DATA))
    st.gdtr.base, st.gdtr.limit = 0x2000, 4 * 8 - 1
    for vec in (11, 13):
        handler = 0x4000 + vec * 0x10
        m.mem.write(0x3000 + vec * 8, struct.pack("<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E, handler >> 16))
        m.mem.write(handler, b"\xF4")
    st.idtr.base, st.idtr.limit = 0x3000, 256 * 8 - 1
    m.cpu.mode_changed()
    return m


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_a_descriptor_changed_in_the_gdt_is_seen_by_the_next_load(engine):
    """SDM Vol. 3 §5.5/§6.3.1: MOV DS reads the descriptor from the table; one whose P bit
    was cleared since the last load of the same selector raises #NP(selector)."""
    m = _gdt_machine(engine)
    st = m.cpu.state
    code = (b"\x66\xB8\x10\x00"            # mov ax, 0x10
            b"\x8E\xD8" b"\x8E\xD8"         # mov ds, ax (twice: the second finds it accessed)
            b"\xC6\x05\x15\x20\x00\x00\x13"  # mov byte [0x2015], 0x13: P clear
            b"\x8E\xD8"                     # mov ds, ax: #NP(0x10)
            b"\xF4")
    m.mem.write(0x1000, code)
    st.eip = 0x1000
    m.cpu.run(100)
    assert st.eip == 0x4000 + 11 * 0x10 + 1, hex(st.eip)            # in the #NP handler
    esp = st.regs[4]
    assert m.mem.read32(esp) == 0x10                                  # error code: the selector
    assert m.mem.read32(esp + 4) == 0x1000 + 4 + 2 + 2 + 7            # the faulting MOV


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_a_segment_load_that_changes_the_mode_is_seen_by_the_rest_of_the_block(engine):
    """A MOV DS to a segment with another base mid-block: the loads after it add the new
    base (SDM Vol. 3 §3.4.3), though the block was translated for a flat DS."""
    m = _gdt_machine(engine)
    st = m.cpu.state
    m.mem.write32(0x100, 0x11111111)
    m.mem.write32(0x1100, 0x22222222)
    code = (b"\x8B\x05\x00\x01\x00\x00"    # mov eax, [0x100]
            b"\x66\xBB\x18\x00"             # mov bx, 0x18
            b"\x8E\xDB"                     # mov ds, bx (base 0x1000)
            b"\x8B\x0D\x00\x01\x00\x00"     # mov ecx, [0x100]
            b"\x66\xBB\x10\x00\x8E\xDB"     # mov bx, 0x10; mov ds, bx (flat again)
            b"\x8B\x15\x00\x01\x00\x00"     # mov edx, [0x100]
            b"\xF4")
    m.mem.write(0x1000, code)
    st.eip = 0x1000
    m.cpu.run(100)
    assert st.halted and (st.regs[0], st.regs[1], st.regs[2]) == (0x11111111, 0x22222222, 0x11111111)


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_pop_ds_that_faults_leaves_esp_alone(engine):
    """POP DS of a selector beyond the GDT's limit: #GP(selector), and the instruction has
    no effect — ESP as before it (SDM Vol. 2, POP: the load is checked before ESP moves)."""
    m = _gdt_machine(engine)
    st = m.cpu.state
    code = (b"\x6A\x28"                     # push 0x28 (beyond the limit)
            b"\x40"                          # inc eax
            b"\x1F"                          # pop ds
            b"\xF4")
    m.mem.write(0x1000, code)
    st.eip = 0x1000
    m.cpu.run(100)
    assert st.eip == 0x4000 + 13 * 0x10 + 1, hex(st.eip)
    esp = st.regs[4]
    assert m.mem.read32(esp) == 0x28 and m.mem.read32(esp + 4) == 0x1003    # error code, EIP
    assert esp + 16 == 0x8000 - 4                     # error code, EIP, CS, EFLAGS above the pushed 0x28
    assert st.regs[0] == 1


def _closed_by_a_side_exit(test: bytes, body: list, regs: list, **kw) -> Case:
    """A loop whose block starts at S and follows the JMP back to L, where a forward
    branch to S (a side exit to the block's own start) begins the next iteration; the
    way out is a JMP EBP, so the block ends without a helper and runs as a fused loop."""
    def items():
        return [("label", "L"), test, ("rel8", b"\x72", "S"), b"\xFF\xE5",    # jb S; jmp ebp
                ("label", "S"), *body, ("jmp", "L"), ("label", "end")]
    _, labels = H.assemble(items(), H.CODE)
    regs[5] = labels["end"]
    return Case(items(), regs, **kw)


def test_side_exit_back_to_the_block_start():
    check(_closed_by_a_side_exit(b"\x39\xC8", [b"\x40", b"\x01\xC3"],     # cmp eax,ecx / inc eax; add ebx,eax
                                 _r(eax=1, ecx=9)))


def test_fault_in_a_loop_closed_by_a_side_exit():
    """#DE at the third divisor: EIP, registers and the CMP's flags of the iteration before
    (ESI - EDI = -0x38 there, PF clear; -0x40 at the first CMP, PF set)."""
    check(_closed_by_a_side_exit(CMP_ESI_EDI, [DIV_ESI, LEA_ESI_4],
                                 _r(eax=1000, esi=DATA + 8, edi=DATA + 0x48),
                                 patches=[(DATA + 8, DIVISORS)]))


def test_fault_in_the_first_iteration_of_a_loop_that_sets_its_record_first():
    """#DE at the first divisor, the block's first instruction in its first iteration:
    every way into the next iteration sets the flag record, so the loop does not load
    the record it was entered with, and the frame's EFLAGS (the CMP before the loop,
    ESI - EDI = -0x40: PF, SF, CF set) come from the CPU's state, not the loop's locals."""
    check(_closed_by_a_side_exit(CMP_ESI_EDI, [DIV_ESI, LEA_ESI_4],
                                 _r(eax=1000, esi=DATA + 8, edi=DATA + 0x48),
                                 patches=[(DATA + 8, H.s32(0))]))


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_rep_stos_that_faults_midway_keeps_its_progress(engine):
    """REP STOSD whose fifth store crosses ES's limit: #GP(0) with ECX and EDI holding the
    four iterations done (SDM Vol. 2B, REP: a repeated string instruction interrupted by
    an exception leaves the registers at its progress, and resumes from there), and the
    four iterations counted -- where the CPU was stopped before never changes it."""
    import struct
    m = _gdt_machine(engine)
    st = m.cpu.state
    # 0x20: data, base 0x10000, byte-granular limit 0x1FFF
    m.mem.write(0x2000 + 0x20, struct.pack("<Q", 0x0040920100001FFF))
    st.gdtr.limit = 5 * 8 - 1
    code = (b"\x66\xB8\x20\x00" b"\x8E\xC0"   # mov ax, 0x20; mov es, ax
            b"\xBF\xF0\x1F\x00\x00"            # mov edi, 0x1ff0
            b"\xB9\x08\x00\x00\x00"            # mov ecx, 8
            b"\xB8\x11\x22\x33\x44"            # mov eax, 0x44332211
            b"\xF3\xAB" b"\xF4")               # rep stosd; hlt
    m.mem.write(0x1000, code)
    st.eip = 0x1000
    m.cpu.run(100)
    assert st.eip == 0x4000 + 13 * 0x10 + 1, hex(st.eip)              # in the #GP handler
    assert (st.regs[1], st.regs[7]) == (4, 0x2000)
    assert m.mem.read32(st.regs[4] + 4) == 0x1000 + 4 + 2 + 5 + 5 + 5   # EIP: the REP STOSD
    assert m.mem.read(0x11FF0, 16) == bytes.fromhex("11223344") * 4
    # mov, mov, mov, mov, mov, four iterations, the hlt in the handler
    assert st.icount == 5 + 4 + 1, st.icount


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_a_load_after_a_store_to_a_device_reads_the_device(engine):
    """The stored value stands for a load of the same address only where the store
    wrote RAM: the I/O APIC's version register (selected through IOREGSEL, then written
    through IOWIN, which it ignores: read-only) reads back its version, 0x00170020 as
    on QEMU (hw/devices/ioapic.py), not what was written."""
    from test_codecache import flat_machine
    m = flat_machine(engine)
    st = m.cpu.state
    code = (b"\xC7\x03\x01\x00\x00\x00"   # mov dword [ebx], 1 (IOREGSEL: the version)
            b"\x89\x4B\x10"                  # mov [ebx+0x10], ecx (IOWIN: ignored)
            b"\x8B\x43\x10"                  # mov eax, [ebx+0x10]
            b"\xF4")
    m.mem.write(0x1000, code)
    st.eip = 0x1000
    st.regs[3], st.regs[1] = 0xFEC00000, 0x12345678
    m.cpu.run(100)
    assert st.halted
    assert st.regs[0] == 0x00170020, hex(st.regs[0])
