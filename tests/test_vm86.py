"""Virtual-8086 mode (SDM Vol. 3 ch. 20): the ``vm86`` guest (tests/hwguests/vm86), a
protected-mode kernel that runs real-mode code at 1234:0000 in VM86 with a #GP monitor
of its own, on ``qemu-system-i386 -kernel``, on both engines and under trapemu and bt;
and CR4.VME and CR4.PVI: the ``vme`` guest (tests/hwguests/vme), checked against the SDM
(QEMU's TCG has neither), natively and under the monitors.

IPs are offsets in the real-mode block; EFLAGS in a fault frame is printed with RF
masked (QEMU does not set it in the image of a fault, the SDM does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hwtests import build_kernel, guest_lines, output_lines
from ringvisor.vmm.runner import run_vm

LIMIT = 5_000_000            # each guest retires well under 1 M instructions natively

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
    "real-mode code in vm86: rep outsb through COM1",
    "g: int 33 through a task gate: tr 50 link 28 eflags 00004002; tss 28 holds eflags "
    "00023002 cs 1234 ip 0154 ds 3000 bx 1357",
    "g: back in vm86: pushfd 00003002 cs 1234 bx 2468; tr 28",
    # REP OUTSB with 16-bit addressing (no address-size prefix in VM86): SI and CX step
    # and count, ESI's and ECX's upper halves stay (Vol. 2 OUTS, REP); the message went
    # out through COM1 before the lines above were printed
    "g: after rep outsb: ecx abcd0000 esi 123401b7 (message at 0187)",
    "done",
]


@pytest.fixture(scope="module")
def image() -> Path:
    return build_kernel("vm86")


@pytest.mark.parametrize("platform", ["qemu", "jit", "interp"])
def test_vm86_guest(image, platform):
    assert guest_lines(platform, image) == (EXPECTED, 0)


# Under trapemu the guest kernel's own PUSHF and STR run for real at ring 1 and show the
# monitor's IOPL, IF and TR (Robin & Irvine's sensitive unprivileged instructions,
# docs/virtualization.md): the lines that print what the kernel reads that way are left
# out there; everything VM86 code does or sees is compared.  Under bt, every line.
TRAPEMU_KERNEL_VIEWS = ("a: int 30 handler", "e: pushfd", "g: int 33", "g: back in vm86")


def monitor_lines(image: Path, mode: str, skip: tuple[str, ...] = ()) -> tuple[list[str], int]:
    r = run_vm(image, mode, max_instructions=LIMIT, quiet=True)
    lines = output_lines(r.output.decode("latin-1").replace("\r\n", "\n"))
    return [x for x in lines if not x.startswith(skip)], (r.status >> 1 if r.status & 1 else -1)


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_vm86_guest_under_the_monitors(image, mode):
    """The guest's VM86 code runs for real in virtual-8086 mode under the monitor: its
    faults and interrupts reach the guest's handlers with the VM86 frame, its
    IOPL-sensitive instructions the guest's #GP handler, and the task switches in and
    out of VM86 are the guest's."""
    skip = TRAPEMU_KERNEL_VIEWS if mode == "trapemu" else ()
    assert monitor_lines(image, mode, skip) == \
        ([x for x in EXPECTED if not x.startswith(skip)], 0)

# -- CR4.VME and CR4.PVI: the ``vme`` guest (tests/hwguests/vme) ----------------------------
# QEMU's TCG implements neither (QEMU 7.2 drops CPUID.01H:EDX.VME, "TCG doesn't support
# requested feature"), and this host's KVM cannot run a VM86 guest: the expected lines are
# the SDM's rules, each named (Vol. 2's PUSHF pseudocode omits VME: Vol. 3 §20.3 and
# Table 20-2 give it), and they agree with Bochs's implementation of the same rules
# (cpu/flag_ctrl.cc CLI, STI, PUSHF_Fw, POPF_Fw; cpu/vm8086.cc iret16_stack_return_from_v86,
# v86_redirect_interrupt).  IPs are offsets in the real-mode block; "op" is the first
# byte of the instruction the #GP(0) came from.
VME_EXPECTED = [
    "cpuid: vme 1",                      # CPUID.01H:EDX[1] (Vol. 2 CPUID, Table 3-11)
    "cr4 1",
    # p -- VME, IOPL 0: PUSHFD is not virtualized (Vol. 2 PUSHF: "operand size = 16"
    # only); a POPF that sets TF, INT 0x41 (its redirection bit set: Table 20-2 method 3)
    # and an IRET that sets TF raise #GP(0); EFLAGS in the frame holds VIF (bit 19)
    "gp: ip 0024 err 0 eflags 000a0202 op 66",
    "gp: ip 002f err 0 eflags 000a0202 op 9d",
    "gp: ip 0042 err 0 eflags 000a0202 op cd",
    "gp: ip 0051 err 0 eflags 000a0202 op cf",
    # CLI/STI clear and set VIF (Vol. 2 CLI, STI: VM = 1, IOPL < 3, VME = 1); PUSHF pushes
    # IOPL 3 and IF = VIF; POPF loads the flags but IF goes to VIF (§20.3, Vol. 2 POPF)
    "p: pushf after cli 3002, after sti 3202, after popf of 0cd5 3cd7, of 0200 3202",
    # INT 0x40, its bit clear: method 6 pushes FLAGS with IOPL 3 and IF = VIF, then
    # clears VIF and TF; the handler's 16-bit IRET puts the popped IF in VIF (Vol. 2 IRET)
    "p: int 40 image 3202, in handler 3002, bx 4444, after its iret 3202; sp 0800",
    "p: leaving eflags 000a0216",
    # q -- VIP set: STI, and POPF with IF set, raise #GP(0) (Vol. 2 STI, POPF); CLI and a
    # POPF with IF clear do not
    "gp: ip 0061 err 0 eflags 00120202 op fb",
    "gp: ip 006b err 0 eflags 00120202 op 9d",
    "q: pushf 3003; leaving eflags 00120203",
    # r -- IOPL 3: INT 0x40 by method 5 (FLAGS as they are, then IF and TF clear), INT
    # 0x41 through the IDT by method 4; CLI and STI act on IF, VIF stays (PUSHFD shows it)
    "r: int 40 image 3202, in handler 3002, bx 4444; int 41 frame eflags 000a3202",
    "r: pushfd after cli 00083002, after sti 00083202; leaving eflags 000a3202",
    # s -- no VME, IOPL 0: INT n whatever the bitmap (method 2) and CLI raise #GP(0)
    "gp: ip 0098 err 0 eflags 000a0202 op cd",
    "gp: ip 00a0 err 0 eflags 000a0202 op fa",
    # t -- PVI, CPL 3, IOPL 0: CLI and STI act on VIF, IF stays (Vol. 2 CLI, STI: "(IOPL <
    # CPL) and (CPL = 3) and (PVI = 1)"); STI with VIP set raises #GP(0); without PVI, CLI
    # raises #GP(0)
    "t: pushfd after cli 00000202, after sti 00080202; leaving eflags 00080202",
    "gp: ring 3 err 0 eflags 00180202 op fb",
    "t: vip: pushfd after cli 00100202",
    "gp: ring 3 err 0 eflags 00000202 op fa",
    "done",
]


@pytest.fixture(scope="module")
def vme_image() -> Path:
    return build_kernel("vme")


@pytest.mark.parametrize("platform", ["jit", "interp"])
def test_vme_guest(vme_image, platform):
    assert guest_lines(platform, vme_image) == (VME_EXPECTED, 0)


def test_vme_guest_on_qemu(vme_image):
    """QEMU's TCG offers no VME: the guest says so and stops (should a later QEMU offer
    it, this fails, and its lines become the reference)."""
    assert guest_lines("qemu", vme_image) == (["cpuid: vme 0", "done"], 0)


# Under trapemu the kernel's IRET to ring 3 runs for real at ring 1, where it cannot load
# IF, VIF or VIP (Robin & Irvine: IRET losing IF): part t, which sets VIF and VIP for its
# ring-3 code that way, is left out there.
TRAPEMU_RING3_IRET = ("t:", "gp: ring 3")


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_vme_guest_under_the_monitors(vme_image, mode):
    """The guest's CR4.VME and CR4.PVI are virtualized: the monitor applies their rules
    (hw.vme) to the IOPL-sensitive instructions that trap from VM86 and ring 3."""
    skip = TRAPEMU_RING3_IRET if mode == "trapemu" else ()
    assert monitor_lines(vme_image, mode, skip) == \
        ([x for x in VME_EXPECTED if not x.startswith(skip)], 0)


@pytest.mark.parametrize("ept", [True, False], ids=["ept", "shadow"])
def test_vm86_guest_in_vmx_non_root(image, ept):
    """Under ``--mode hvm`` the guest kernel runs in VMX non-root operation and its VM86
    code with it; each port I/O exit from VM86 is followed by a VM entry to a virtual-8086
    guest (its segments selector * 16, limit FFFFH, access rights F3H: SDM Vol. 3C
    §26.3.1.2).  Part e's far CALL to a TSS whose EFLAGS has VM set exits (reason 9) and
    the monitor switches the guest into its virtual-8086 task (vmm/hvmtasks.py); part g's
    REP OUTSB steps SI and counts CX in 16 bits (the exit's address size): every line is
    QEMU's, with EPT and with shadow paging."""
    r = run_vm(image, "hvm", max_instructions=LIMIT, quiet=True, ept=ept)
    lines = output_lines(r.output.decode("latin-1").replace("\r\n", "\n"))
    assert (lines, r.status) == (EXPECTED, 1), r.stop
    assert r.monitor.exits["task switch"] >= 1


def test_vm86_guest_saved_in_vm86_and_restored(image):
    """A VM saved while its guest runs VM86 code under bt (the real CPU in virtual-8086
    mode, the monitor's state beside it) and restored on another machine goes on as if
    never stopped."""
    from ringvisor.hw.machine import read_image
    from ringvisor.lifecycle import stream
    from ringvisor.lifecycle.vm import VmInfo, capture, restore
    from ringvisor.vmm import attach_monitor, create_vm

    out = bytearray()
    m, mon = create_vm(read_image(image), "bt", "", 32, "jit", output=out.extend)
    while not m.cpu.mode.vm86 or not out:          # (in VM86, after its first line)
        assert m.run(2000).reason == "limit"
        m.stop = None
    before, data = len(out), stream.pack_image(capture(m, mon, VmInfo()))
    assert m.run(LIMIT).reason == "exit"
    rest = bytearray()
    m2, _, _ = restore(stream.read_sections(data), attach_monitor, "jit", rest.extend)
    assert m2.run(LIMIT).reason == "exit"
    assert bytes(out[:before] + rest) == bytes(out)
    assert output_lines(out.decode("latin-1").replace("\r\n", "\n")) == EXPECTED
