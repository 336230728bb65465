"""Indirect transfers predicted inside translated blocks (hw/speculate.py), checked
against unicorn: the guarded side exit when the prediction is wrong, a fault after a
predicted transfer, code rewritten at a predicted target, and a loop closed by a RET.

Each program loops 40 times, so that a site is learned (``LEARN_AFTER`` runs), its
block translated again with the prediction, and the prediction then both held and
(where the program changes the target) broken; the final state (registers, EFLAGS,
memory, or the fault and the state at it) must be unicorn's, and the interpreter's."""

from __future__ import annotations

import pytest

from cpuharness import CODE, DATA, Case, assemble, check, ringvisor, s32
from ringvisor.hw.speculate import LEARN_AFTER


def program(build) -> list:
    """``build(labels)`` -> assembler items; built twice so that absolute addresses of
    labels (``mov eax, f``) are known (every item has a fixed size)."""
    _, labels = assemble(build({}), CODE)
    return build(labels)


def at(labels: dict, name: str) -> bytes:
    return s32(labels.get(name, 0))


def direct_calls(L):
    # a direct call the block follows: the RET returns to it (predicted by the call)
    return [b"\xB9" + s32(40), b"\x31\xDB",                       # mov ecx, 40; xor ebx, ebx
            ("label", "top"), ("call", "f"), b"\x49", ("jcc", 5, "top"), ("jmp", "out"),
            ("label", "f"), b"\x01\xCB", b"\xC3",                  # add ebx, ecx; ret
            ("label", "out")]


def ret_elsewhere(L):
    # on odd ECX the callee returns one byte further: the prediction fails every other time
    return [b"\xB9" + s32(40), b"\x31\xDB",
            ("label", "top"), ("call", "f"), b"\x43", b"\x43",    # inc ebx; inc ebx
            b"\x49", ("jcc", 5, "top"), ("jmp", "out"),
            ("label", "f"), b"\xF6\xC1\x01", ("jcc", 4, "fr"),    # test cl, 1; jz fr
            b"\x83\x04\x24\x01",                                   # add dword [esp], 1
            ("label", "fr"), b"\xC3",
            ("label", "out")]


def pointer_calls(L):
    # call eax: f1 for 30 calls (learned, then predicted), f2 for the last 10
    return [b"\xB9" + s32(40), b"\x31\xDB",
            ("label", "top"), b"\xBA" + at(L, "f2"), b"\xB8" + at(L, "f1"),   # mov edx, f2; mov eax, f1
            b"\x83\xF9\x0A", b"\x0F\x42\xC2",                     # cmp ecx, 10; cmovb eax, edx
            b"\xFF\xD0", b"\x49", ("jcc", 5, "top"), ("jmp", "out"),          # call eax; dec ecx
            ("label", "f1"), b"\x01\xCB", b"\xC3",
            ("label", "f2"), b"\x29\xCB", b"\xC3",                # sub ebx, ecx; ret
            ("label", "out")]


def ret_loop(L):
    # push f; ret back to the block's own start: a loop closed by a RET
    return [b"\xB9" + s32(40), b"\x31\xDB",
            ("label", "f"), b"\x01\xCB", b"\x49", ("jcc", 4, "out"),
            b"\x68" + at(L, "f"), b"\xC3",                        # push f; ret
            ("label", "out")]


def jump_table(L):
    # jmp [DATA + eax*4]: the first entry while ECX >= 20, then the second
    return [b"\xB9" + s32(40), b"\x31\xDB",
            ("label", "top"), b"\x83\xF9\x14", b"\x19\xC0", b"\x83\xE0\x01",   # cmp ecx, 20; sbb eax, eax; and eax, 1
            b"\xFF\x24\x85" + s32(DATA),
            ("label", "a"), b"\x01\xCB", ("jmp", "next"),
            ("label", "b"), b"\x29\xCB",
            ("label", "next"), b"\x49", ("jcc", 5, "top")]


def fault_after_return(L):
    # a #DE after the predicted RET, in the 21st iteration (EDI reaches 0)
    return [b"\xB9" + s32(40), b"\x31\xDB", b"\xBF" + s32(20),
            ("label", "top"), ("call", "f"), b"\x31\xD2", b"\x89\xC8",   # xor edx, edx; mov eax, ecx
            b"\xF7\xF7", b"\x4F", b"\x49", ("jcc", 5, "top"),             # div edi; dec edi; dec ecx
            ("jmp", "out"),
            ("label", "f"), b"\x01\xCB", b"\xC3",
            ("label", "out")]


def fault_in_callee(L):
    # call eax (predicted after 16 calls) into a callee whose DIV faults in the 36th
    return [b"\xB9" + s32(40), b"\x31\xDB", b"\xB8" + at(L, "f"), b"\x89\xC6",   # mov esi, eax
            ("label", "top"), b"\xFF\xD6", b"\x49", ("jcc", 5, "top"), ("jmp", "out"),  # call esi
            ("label", "f"), b"\x8D\x79\xFB", b"\x31\xD2", b"\xB8\x64\x00\x00\x00",   # lea edi, [ecx-5]; xor edx, edx; mov eax, 100
            b"\xF7\xF7", b"\x01\xC3", b"\xC3",                    # div edi; add ebx, eax; ret
            ("label", "out")]


def rewritten_target(L):
    # at ECX = 20 the loop rewrites the callee (add ebx, ecx -> add ebx, edx): the
    # block that predicted the call's return and holds the callee is dropped
    return [b"\xB9" + s32(40), b"\x31\xDB", b"\xBA" + s32(1000),
            ("label", "top"), b"\x83\xF9\x14", ("jcc", 5, "go"),
            b"\xC6\x05" + s32(L.get("f", 0) + 1) + b"\xD3",        # mov byte [f+1], 0xD3
            ("label", "go"), b"\xBE" + at(L, "f"), b"\xFF\xD6",   # mov esi, f; call esi
            b"\x49", ("jcc", 5, "top"), ("jmp", "out"),
            ("label", "f"), b"\x01\xCB", b"\xC3",
            ("label", "out")]


def nested_loops(L):
    # the block after the inner loop goes on at the outer loop's head (a backward
    # branch followed, not taken a side exit); a #DE there in the last outer iteration
    return [b"\xB9" + s32(12), b"\x31\xDB", b"\xBF" + s32(11),
            ("label", "outer"), b"\xBA" + s32(5),                 # mov edx, 5
            ("label", "inner"), b"\x01\xD3", b"\x4A", ("jcc", 5, "inner"),   # add ebx, edx; dec edx
            b"\x8D\x04\x0B", b"\x31\xD2", b"\xF7\xF7", b"\x4F",       # lea eax, [ebx+ecx]; xor edx, edx; div edi; dec edi
            b"\x01\xC6", b"\x49", ("jcc", 5, "outer")]              # add esi, eax; dec ecx


def loop_exit_to_start(L):
    # a backward branch followed whose not-taken side exit leads to the block's start
    return [b"\xB9" + s32(30), b"\x31\xDB",
            ("label", "a"), b"\x49", ("jcc", 4, "out"), b"\xF6\xC1\x03", ("jcc", 4, "c"),
            ("label", "b"), b"\x01\xCB", ("jmp", "a"),
            ("label", "c"), b"\x29\xCB", b"\xF6\xC1\x04", ("jcc", 5, "b"), ("jmp", "a"),
            ("label", "out")]


PROGRAMS = [nested_loops, loop_exit_to_start, direct_calls, ret_elsewhere, pointer_calls, ret_loop, jump_table, fault_after_return,
            fault_in_callee, rewritten_target]


@pytest.mark.parametrize("build", PROGRAMS, ids=lambda b: b.__name__)
def test_against_unicorn(build):
    items = program(build)
    _, L = assemble(items, CODE)
    patches = []
    if build is jump_table:
        patches = [(DATA, s32(L["a"]) + s32(L["b"]))]
    if build is fault_after_return:
        # the exception frame ringvisor pushes covers the slot the CALL wrote (free
        # below ESP by then), and the harness puts the image back there: the image
        # holds what the CALL writes, as unicorn, which pushes no frame, leaves it
        patches = [(0x2F7FFC, s32(L["top"] + 5))]
    check(Case(items, [0, 0, 0, 0, 0x2F8000, 0, 0, 0], follow="none", patches=patches))


def test_predictions_are_used():
    """The programs above do run speculated code: the pointer call's target is
    predicted, and the block of the direct-call loop goes on past the RET."""
    assert LEARN_AFTER < 30
    cache = ringvisor("jit").cpu.cache
    items = program(pointer_calls)
    _, L = assemble(items, CODE)
    check(Case(items, [0, 0, 0, 0, 0x2F8000, 0, 0, 0], follow="none"), engines=("jit",))
    sites = cache.predicted.get(CODE >> 12, {})
    assert L["f1"] in sites.values()
    items = program(direct_calls)
    _, L = assemble(items, CODE)
    check(Case(items, [0, 0, 0, 0, 0x2F8000, 0, 0, 0], follow="none"), engines=("jit",))
    # call, add, ret, dec, jnz: one block from the loop's head
    assert any(tr.eip == L["top"] and tr.n_insns >= 5 for tr in cache.blocks.values())
