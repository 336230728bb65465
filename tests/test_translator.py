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
from cpuharness import DATA, STACK_TOP, Case, check


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
