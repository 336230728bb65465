"""Hardware task switching (SDM Vol. 3 ch. 7): the ``tasks`` guest
(tests/hwguests/tasks) on ``qemu-system-i386 -kernel``, on both engines, and under the
monitors, which switch the guest's tasks on its virtual CPU.

GDT: 0x28 the runtime's 32-bit TSS (the main task), 0x48 a 32-bit TSS (task B),
0x50 the double-fault task's TSS, 0x58 a task gate to 0x48, 0x60 a 16-bit TSS, 0x68 a
TSS whose DS selector is 0x48, 0x70 a TSS not present, 0x78 a TSS with limit 0x60.
Descriptor types: 9/B a 32-bit TSS available/busy, 1/3 a 16-bit one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hwtests import build_kernel, guest_lines, output_lines

EXPECTED = [
    # CALL to a TSS (§7.3, Table 7-2): the new task gets NT=1 and a back link to the
    # caller, both TSSes are busy, CR0.TS is set; its registers come from its TSS
    "call: count 1 eax 11111111 nt 1 link 28 tr 48 ts 1 busy main b b b",
    # IRET with NT=1 (§7.3 step 8 / Vol. 2 IRET TASK-RETURN): back to the linked task,
    # the returning task's busy bit cleared, the caller's registers and the EIP after
    # its CALL restored from (and saved in) its TSS
    "iret: nt 0 ebx cafe0001 saved eip ok tr 28 busy main b b 9",
    # the returning task's state was saved at its IRET: a second CALL resumes after it
    "call again: count 2 b eip after iret yes",
    # JMP through a task gate (§7.2.5): no back link, no NT (its EFLAGS as saved at the
    # IRET, NT clear), the old task's busy bit cleared; JMP back: the reverse
    "jmp: count 3 nt 0 link 0 busy main 9 b b; back: busy main b b 9 tr 28",
    # a 16-bit TSS (§7.6): IP, FLAGS and the registers in 16 bits, the back link at 0
    "tss16: ax 1616 nt 1 tr 60 link 28 ip after iret busy c 1",
    # #GP with a not-present #GP gate: #NP during delivery, a double fault (Table 6-5)
    # through a task gate in the IDT: a nested task (NT, back link), error code 0 on the
    # new task's stack, the faulting EIP saved in the old TSS; its IRET returns
    "#DF task: count 1 err 0 nt 1 link 28 tr 50 saved eip at the fault; back: tr 28 busy df 9",
    # faults before the commit point (Table 7-1) are the old task's, at the instruction:
    # a busy TSS is no CALL target (#GP(selector)), a TSS not present is #NP(selector),
    # a limit below 67H is #TS(selector), an IRET whose back link names a TSS that is not
    # busy is #TS(link) with NT still set
    "call busy tss: #13 err=0x28 eip=+0",
    "call tss not present: #11 err=0x70 eip=+0",
    "call short tss: #TS count 1 err 78 tr 28",
    "iret to a free tss: #TS count 1 err 48 at iret yes nt 1 tr 28",
    # a fault after the commit point (a DS selector naming a system descriptor:
    # #TS(selector)) is taken in the new task (TR 0x68), the old one already not busy
    "jmp bad ds: #TS count 1 err 48 tr 68 busy main 9; back: tr 28 busy e 9",
    # every task switch sets CR0.TS (§2.5)
    "cr0.ts 1",
    "done",
]


@pytest.fixture(scope="module")
def image() -> Path:
    return build_kernel("tasks")


@pytest.mark.parametrize("platform", ["qemu", "jit", "interp"])
def test_tasks_guest(image, platform):
    assert guest_lines(platform, image) == (EXPECTED, 0)


def _without_tr(line: str) -> str:
    return re.sub(r" tr [0-9a-f]+", " tr -", line)


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_tasks_guest_under_the_monitors(image, mode):
    """The monitors perform the guest's task switches on its virtual CPU (vmm/tasks.py):
    every line as on QEMU.  Under trapemu STR, which does not trap at ring 1, reads the
    real TR -- the monitor's TSS (Robin & Irvine's list): the TR values are the
    monitor's there, and everything else is the guest's."""
    from ringvisor.vmm import layout as L
    from ringvisor.vmm.runner import run_vm
    r = run_vm(image, mode, max_instructions=5_000_000, quiet=True)
    assert r.status == 1                                  # (the guest's exit code 0)
    lines = output_lines(r.output.decode("latin-1").replace("\r\n", "\n"))
    if mode == "bt":
        assert lines == EXPECTED
        return
    assert [_without_tr(x) for x in lines] == [_without_tr(x) for x in EXPECTED]
    shown = set(re.findall(r" tr ([0-9a-f]+)", " ".join(lines)))
    assert shown == {f"{L.SEL_MTSS:x}"}


@pytest.mark.parametrize("ept", [True, False], ids=["ept", "shadow"])
def test_tasks_guest_under_hvm(image, ept):
    """In VMX non-root operation every task switch exits (reason 9, SDM Vol. 3C
    §25.4.2) once the gate and the TSS descriptor passed their checks; the hvm monitor
    performs it on the guest's state (vmm/hvmtasks.py).  STR does not exit: the guest
    reads its own TR, and every line is QEMU's, with EPT and with shadow paging."""
    from ringvisor.vmm.runner import run_vm
    r = run_vm(image, "hvm", max_instructions=5_000_000, quiet=True, ept=ept)
    assert r.status == 1, r.stop
    assert output_lines(r.output.decode("latin-1").replace("\r\n", "\n")) == EXPECTED
    # the CALLs, IRETs, JMPs and the task gates (IDT and GDT) exited, one at a time
    assert r.monitor.exits["task switch"] == r.monitor.stats["task switches"] >= 10
