"""Virtual-8086 mode (SDM Vol. 3 ch. 20): the ``vm86`` guest (tests/hwguests/vm86), a
protected-mode kernel that runs real-mode code at 1234:0000 in VM86 with a #GP monitor
of its own, on ``qemu-system-i386 -kernel`` and on both engines; and the monitors' clean
stop when a guest enters VM86.

IPs are offsets in the real-mode block; EFLAGS in a fault frame is printed with RF
masked (QEMU does not set it in the image of a fault, the SDM does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hwtests import build_kernel, guest_lines, monitor_stop_line

EXPECTED = [
    # a, IOPL 3 -- the real-mode code prints through COM1 itself: IN/OUT consult only the
    # TSS I/O bitmap in VM86 (§20.2.8.1), which allows 3F8H-3FDH
    "real-mode code in vm86: hello through COM1",
    # INT 0xf0 through a DPL-3 gate (§20.3.1.1, Figure 20-2): EIP, CS, EFLAGS (VM set),
    # ESP, SS, then ES, DS, FS, GS as the VM86 code left them (ES from its LES)
    "a: int f0: ip 0064 cs 1234 eflags 00023046 sp 0800 ss 2000 es 5000 ds 3000 fs 4000 gs 5000",
    # IRET to VM86 (Vol. 2 IRET: RETURN-TO-VIRTUAL-8086-MODE) loaded all six selectors;
    # PUSHFD at IOPL 3 pushes IOPL 3 and IF, with VM and RF clear (Vol. 2 PUSHF)
    "a: pushfd 00003202 cs 1234 ss 2000 sp 0800 es 3123 fs 4000 gs 5000",
    # segment * 16 addressing (§20.1.1): 3123:0005 is linear 31235H; a far CALL pushes
    # CS:IP and RETF pops them as in real mode; LES loads a paragraph, no descriptor
    "a: linear 31235 feedface 40002 4d4d; far call cs 1234; les 5000:abcd",
    # POPF and a real-mode IRET at IOPL 3 load IF and the arithmetic flags but never
    # IOPL (Vol. 2 POPF, IRET: "IOPL unchanged" in virtual-8086 mode)
    "a: flags after popf 0 3002, after iret of 08c5 38c7",
    # the handler of a trap gate runs with VM clear, IOPL and IF as they were; the
    # kernel's IRET through the same frame returns to VM86 with its EAX
    "a: int 30 handler eflags 00003046, ax after iret to vm86 600d",
    # b, IOPL 0 -- CLI, STI, PUSHF, POPF, INT n and IRET raise #GP(0) at the instruction
    # (§20.2.7); the guest's monitor emulates each one (INT 0x21 reflected through the
    # IVT at linear 0 to a real-mode handler, whose PUSHF and IRET trap too)
    "gp: ip 00af err 0 cli",
    "gp: ip 00b0 err 0 pushf",
    "gp: ip 00b5 err 0 sti",
    "gp: ip 00b6 err 0 pushf",
    "gp: ip 00bd err 0 popf",
    "gp: ip 00c6 err 0 int 21 -> ivt",
    "gp: ip 00d3 err 0 pushf",
    "gp: ip 00d8 err 0 iret",
    # INT3 is not IOPL-sensitive (Vol. 2 INT n: only INT n is): #BP through the IDT, a
    # trap whose saved IP is past it
    "#BP ip 00cd (after int3)",
    "gp: ip 00cd err 0 int f0 (leave)",
    "b: pushf after cli 0002, after sti 0202; cf after popf 1; bx 0105; flags in int 21 0006; "
    "vif 0",
    "b: int f0: ip 00cd cs 1234 eflags 00020203 sp 0800 ss 2000 es 3000 ds 3000 fs 0000 gs 0000",
    # c, IOPL 3 faults -- #DE from VM86: the frame on the ring-0 stack, and DS, ES, FS
    # and GS null in the handler (§20.3.1.1)
    "#DE frame: ip 00e1 cs 1234 eflags 00023002 sp 0800 ss 2000 es 3000 ds 3000 fs 0000 gs 0000",
    "#DE in handler: ds 0000 es 0000 fs 0000 gs 0000",
    "#0 err 0 ip 00e1",
    # INT 0x31 through a DPL-0 gate: #GP(vector * 8 + 2) (§6.12.1.1)
    "#13 err 18a ip 00e9",
    # INT 0x32 to a ring-3 handler: a VM86 interrupt goes to ring 0 only, #GP(selector)
    # (Vol. 2 INT n: "IF VM = 1 and the code segment is not DPL 0")
    "#13 err 18 ip 00f1",
    # OUT to port 80H, denied by the bitmap: #GP(0) although IOPL is 3 (§20.2.8.1)
    "#13 err 0 ip 00f9",
    # SLDT and ARPL are not recognized in virtual-8086 mode: #UD
    "#6 err 0 ip 0101",
    "#6 err 0 ip 010a",
    # HLT and MOV from CR0 at CPL 3: #GP(0)
    "#13 err 0 ip 0112",
    "#13 err 0 ip 0119",
    # d -- VM86 runs at CPL 3: a write to a supervisor page is #PF(P|W|U = 7), a read of
    # a page not present #PF(U = 4) (§4.7), CR2 the linear address seg * 16 + offset
    "#PF err 7 cr2 00030050 ip 011e",
    "#PF err 4 cr2 00060004 ip 0124",
    "d: 1111 6004",
    # e -- a far CALL to a TSS whose EFLAGS has VM set: the task runs in VM86 with its
    # selectors as paragraphs (§20.2.5), NT set and a back link (§7.4); its handler's
    # IRET with NT set returns to the caller's task and frees the VM86 TSS
    "e: int f0: ip 0146 cs 1234 eflags 00027002 sp 0700 ss 2000 es 3000 ds 3000 fs 7000 gs 0123",
    "e: pushfd 00007002 cs 1234 ss 2000 fs 7000 sp 0700; tr 48 link 28 busy b; "
    "back: tr 28, vm86 tss type 9",
    # f -- a hardware interrupt in VM86 at IOPL 0 is not IOPL-sensitive (§20.3.1): IRQ 0
    # leaves through the IDT with the VM86 frame (the INT 0xf0 after it traps)
    "gp: ip 014d err 0 int f0 (leave)",
    "f: irq 0 in vm86: cs 1234 vm 1 if 1 iopl 0 ss 2000 sp 0800 es 3000 ds 3000; handler ds 0",
    # g -- INT 0x33 through a task gate (IOPL 3): a nested task switch out of VM86 saves
    # its state in the current TSS, EFLAGS with VM set and the IP after the INT (§7.3,
    # §20.3.1.2); the new task has NT set and the back link; its IRET returns to VM86,
    # the selectors loaded as paragraphs, with the BX it changed in the saved TSS
    "g: int 33 through a task gate: tr 50 link 28 eflags 00004002; tss 28 holds eflags "
    "00023002 cs 1234 ip 0154 ds 3000 bx 1357",
    "g: back in vm86: pushfd 00003002 cs 1234 bx 2468; tr 28",
    "done",
]


@pytest.fixture(scope="module")
def image() -> Path:
    return build_kernel("vm86")


@pytest.mark.parametrize("platform", ["qemu", "jit", "interp"])
def test_vm86_guest(image, platform):
    assert guest_lines(platform, image) == (EXPECTED, 0)


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_monitors_stop_on_vm86(image, mode):
    """The monitors do not virtualize VM86: one line at the guest's IRET into it."""
    assert monitor_stop_line(mode, image) == (
        f"ringvisor: stopped: {mode}: IRET to virtual-8086 mode (1234:0000): "
        "VM86 is not virtualized")
