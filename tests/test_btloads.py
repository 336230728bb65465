"""bt's kernel segment loads done in the hand-off (``vmm/btreturn.py``'s ``_quick_load``).

A MOV or POP into DS, ES, FS or GS whose selector the translator cannot know is a
callout (a selector of RPL 1 would pass at the real ring 1: tests/sysgen/regress-rpl.S).
The hand-off does it without a whole entry, from the guest's descriptor read through the
real TLB, and keeps what the checks concluded by the descriptor's bytes.  The kernel
below loads a selector twice (the second load is the cache's), then edits its
descriptor in place (not present; then DPL 0 under an RPL-3 selector) and loads it
again: #NP(selector), #GP(selector), as on QEMU and the bare PC.  A cache that ignored
the descriptor's bytes would load the old segment and the test fails (it does when the
key leaves them out).
"""

from __future__ import annotations

import pytest

import sysgen
from ringvisor.tools.qemu import find_qemu
from ringvisor.vmm import btreturn

STEPS = r"""
# 0: POP FS of entry 20 (a DPL-0 data segment, accessed, base 0), twice; its base made
# 0x1000 in place; POP FS twice (the first load after an in-place edit may go the long
# way, the second comes the short way again); a read through FS sees the new base:
# EAX = the descriptor's own low half, 0x1000ffff.
    STEP 0
    movl $0x0000ffff, gdt+160
    movl $0x00cf9300, gdt+160+4
    pushl $0xa0
    pop %fs
    pushl $0xa0
    pop %fs
    movl $0x1000ffff, gdt+160
    pushl $0xa0
    pop %fs
    pushl $0xa0
    pop %fs
    mov %fs:gdt+160-0x1000, %eax
    mov $0x1212, %ebx
    END 0

# 1: the same made not present in place: #NP(0xa0) at the POP, EBX = 0x1414.
    STEP 1
    movl $0x0000ffff, gdt+160
    movl $0x00cf9300, gdt+160+4
    pushl $0xa0
    pop %fs
    pushl $0xa0
    pop %fs
    movb $0x13, gdt+160+5
    mov $0x1414, %ebx
    pushl $0xa0
    pop %fs
    mov $0x1515, %ebx
    END 1

# 2: MOV to GS from a register (not known to the translator) with RPL 3 of entry 20,
# now DPL 3, twice; made DPL 0 in place; MOV twice: #GP(0xa0), EBX = 0x1616.
    STEP 2
    movl $0x00cff300, gdt+160+4
    pushl $0xa3
    pop %ecx
    mov %cx, %gs
    mov %cx, %gs
    movb $0x93, gdt+160+5
    mov $0x1616, %ebx
    mov %cx, %gs
    mov %cx, %gs
    mov $0x1717, %ebx
    END 2

# 3: a null selector and the kernel's own data selector through POP: no fault.
    STEP 3
    pushl $0
    pop %gs
    pushl $0x10
    pop %es
    pushl $0x10
    pop %es
    mov $0x1818, %ebx
    END 3

    call finish
"""


@pytest.fixture(scope="module")
def image():
    return sysgen.build_steps((sysgen.SYSGEN_DIR / "fixed.inc").read_text() + STEPS,
                              "sysgen-btloads")


def _faults(lines):
    return [ln.split()[:3] + [f for f in ln.split() if f.startswith("b=")]
            for ln in lines if " v=" in ln]


def test_loads_in_the_handoff_see_descriptors_edited_in_place(image, monkeypatch):
    taken = []
    real = btreturn._quick_load

    def counting(mon, cpu, ins, esp):
        ok = real(mon, cpu, ins, esp)
        if ok:
            taken.append(str(ins))
        return ok
    monkeypatch.setattr(btreturn, "_quick_load", counting)
    bt = sysgen.run("bt", image)
    assert [ln.split()[2] for ln in bt if ln.startswith("s000 f=")] == ["a=1000ffff"]
    assert _faults(bt) == [["s001", "v=0b", "e=00a0", "b=00001414"],
                           ["s002", "v=0d", "e=00a0", "b=00001616"]]
    # the loads before each edit came the short way, the second from the cache
    assert sum("fs" in t for t in taken) >= 2 and sum("gs" in t for t in taken) >= 2, taken
    assert sysgen.run("native", image) == bt


@pytest.mark.skipif(find_qemu() is None, reason="qemu-system-i386 is not installed")
def test_loads_match_qemu(image):
    assert sysgen.run("qemu", image) == sysgen.run("bt", image)
