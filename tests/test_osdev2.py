"""More kernels written as elsewhere (``tests/hwguests/osdev2``: a directory each, no shared
runtime, each in the manner of another author and unlike ``tests/hwguests/osdev`` and the
teaching kernel), each printing the same transcript on ``qemu-system-i386 -kernel``,
natively and under trapemu and bt -- under trapemu apart from Robin & Irvine's lines
(docs/virtualization.md), and on QEMU apart from where QEMU departs from the SDM (then the
SDM's line is expected, and QEMU's is named here).

``osdev2-jit``: a toy JIT kernel generating code into frames it sees through three linear
aliases and rewriting it every way a JIT, a live patcher and a debugger do, single-stepping
and breakpointing it (the module comment of ``osdev2/jit/jit.c`` lists them).  It found:
a translated block reused for the same frame run through another linear page (the block
returned the EIPs of the first alias: a step there reported the other alias's EIPs and an
execution breakpoint on the first alias fired), the single-step trap after MOV SS and POP
SS (SDM Vol. 3 §6.8.3 holds it until after the next instruction; natively, and under bt
for the loads it emulates), and DR7.GD, which nothing modelled (QEMU's TCG does not
either).

``osdev2-tss``: every task a TSS -- JMP and CALL to TSSs and back (busy bits, NT, the back
link, a TSS with its own CR3), the faults of bad switches (busy, a limit below 67H, IRET to a
back link not busy, a DPL-0 TSS from ring 3), a ring-3 task with its own I/O bitmap reaching
task gates in the IDT and GDT, and double faults through a task gate: the kernel stack
overflowing into its guard page, by recursion and by an INT, mended by the double-fault task.
It found that the monitors pushed a guest's exception frame in one write and so reported the
frame's lowest address in CR2 when it did not fit: the processor pushes a value at a time
from the top, and CR2 is the first push that faults (the #PF that became the #DF).

``osdev2-sysenter``: two user threads entering the kernel by SYSENTER (INT 0x80 the slow
path) and yielding to each other, the FPU following them lazily (CR0.TS, #NM, FXSAVE and
FXRSTOR), PAE paging, RDTSC under CR4.TSD, SYSENTER with TF (the step at the kernel's entry),
SYSEXIT at ring 3 and SYSENTER without IA32_SYSENTER_CS (#GP(0)), and DR0-DR3 on user code and
data, on a kernel store and on a port (an I/O breakpoint under CR4.DE).  It found I/O
breakpoints not modelled (natively, under the monitors and hvm; QEMU has them), and, under bt, the
EIP of a data breakpoint's trap after a store followed by a JMP the translation had folded
into its stub: the JMP's target, as if it had run.  QEMU departs from the SDM in its DR6 bits
(false and stale B1-B3) and its FXSAVE image (no FOP, FCS or FIP; C1 after a rounding up);
its lax null-segment checks also hid a bug of the kernel's own (entering ring 3 with a DPL-0
DS, which the IRET nulls, and then taking traps with it).

``osdev2-xv6``: a kernel in xv6's manner -- higher half through a page directory of 4 MiB
pages, per-CPU data through %gs (a byte-granular 8-byte segment), CS reloaded by LJMP, a
page directory and a kernel stack per process, swtch() and trapret, fork copying the
parent's pages, exec of programs in the image (position-independent, at address 0),
wait/exit with zombies, INT 0x40 system calls, the PIT preempting spinning processes; the
transcript depends on the order of events only.  Nothing differed but what trapemu must.
"""

from __future__ import annotations

import functools

import pytest

from hwtests import build_kernel, kernel_named, output_lines, run_platform

JIT = [
    "jitk: start",
    "alias: 11111111 22222222 22222222 33333333 33333333",
    "patch ahead: 5 6 7 8",
    "own loop body: f 28",
    "call target: a1 b2 a1 b2",
    "rep movsb over the next instructions: 44556677",
    "store behind eip: 6 a",
    "forms: xchg a0 cmpxchg a1 cmpxchg8b a2 bts ffffffef stos 1133 push 12345678 fnstcw 37f "
    "add 100 movs-back 2030404",
    "not present: 5a5a, #PF 1 err=0 cr2=50002000 eip=50002000 -> 5a5a",
    "remapped: 3b3b then 5a5a",
    "straddle: badcafe, #PF 1 err=0 cr2=50005000 eip=50004ffd -> badcafe",
    "straddling stores: 600dd00d 60f00f0d",
    "cr3: 6161 6262 6161",
    "user: 55, #PF 2, calls 1 f005 f005 2 3",
    "int3 patch: 5 77 (bp at +1) 77 77, 2 hits",
    # the steps after MOV SS (at 29, 31) and POP SS (at 36) come after the next instruction
    "stepped: eax=2, 12 steps at e 15 16 1b 20 25 25 25 27 29 2c 31 34 36 38 39 40 41, "
    "dr6 other than ffff4ff0: 0",
    "stepped via the alias: eax=2, 12 steps at e 15 16 1b 20 25 25 25 27 29 2c 31 34 36 38 39 40 41, "
    "dr6 other than ffff4ff0: 0",
    "moved 616263",
    "dr0 exec: 2 3 3, hits 2 at +5 +5 dr6 ffff0ff1 ffff0ff1",
    "dr1 write: alias hits 0, store hits at +7 dr6 ffff0ff2, then exec hit dr6 ffff0ff1 -> 7",
    # SDM Vol. 3 §17.2.4: #DB (fault, at the MOV) with DR6.BD, GD cleared for the handler
    "dr7.gd: hits 1 at mov 1 dr6 ffff2ff0, then dr7 400",
    "jitk: done",
]

TSS = [
    "tssk: start",
    "jmp to A twice: runs 2, A's link 0, main's type seen by A 9, A's type now 9",
    "call B twice: runs 2, B's link 28 nt 1 cr3 pd_b 1 window 22, "
    "main's type seen by B b, B calling main: #GP 28; back: B's type 9, main's nt 0, window 11",
    "jmp to itself (busy): #13 err 28",
    "jmp to a TSS of limit 60: #10 err 48, its type 9",
    "iret with nt to a back link not busy: #10 err 38, nt after 0",
    "ring 3 task: in from a port not in its bitmap: #GP 0 from cs 1b; "
    "int 0x50: task C link 58 nt 1, U's type b, U's cs 1b, eip user+8; "
    "jmp to main's TSS from ring 3: #GP 28; back through a task gate",
    "types: main b df 9 A 9 B 9 C 9 U 9",
    # CR2: the first push of the #PF's frame (EFLAGS), the processor pushing from the top
    "double fault 1: link 28 err 0 cr2=guard+f68, main esp=guard+f6c eip=dive+d, df busy 1",
    "recovered from the overflow, main's type b, df's 9",
    "double fault 2: link 28 err 0 cr2=guard+ffc, main esp=guard+1008 eip=int_site+0, df busy 1",
    "recovered again, main's type b, df's 9",
    "tssk: done",
]

SYSENTER = [
    "sysk: start, pae 1",
    "threads done: #NM 6 (thread 0 3, thread 1 3)",
    "thread 0: st0 401090fd:aa22168c xmm1 40000000 40800000 40c00000 41000000 mxcsr 3f80 fcw "
    "f7f",
    "thread 1: st0 3ff24442:9103a47e xmm1 41a00000 42200000 42700000 42a00000 mxcsr 1f80 fcw "
    "37f",
    "fxsave of thread 1: fcw 37f fsw 3a20 ftw 80 fop 6e9 fcs 1b mxcsr 1f80",
    "rdtsc: #GP 0 at ring 3 under TSD, then counts 1",
    "breakpoints: d #DB: [u+0 cs 1b dr6 ffff0ff1] [u+10 cs 1b dr6 ffff0ff2] [u+1e cs 1b dr6 "
    "ffff0ff4] [u+26 cs 1b dr6 ffff0ff6] [k+2fc cs 8 dr6 ffff0ff2] [k+216 cs 8 dr6 ffff0ff8] "
    "[u+60 cs 1b dr6 ffff4ff0] [u+61 cs 1b dr6 ffff4ff0] [u+62 cs 1b dr6 ffff4ff0] [u+64 cs "
    "1b dr6 ffff4ff0] [u+69 cs 1b dr6 ffff4ff0] [u+6e cs 1b dr6 ffff4ff0] [k+0 cs 8 dr6 "
    "ffff4ff0]",
    "watched: 8888 0 3ff0",
    "sysenter with tf: #DB at the entry 1; #GP: 0 at +73 0 at +7c",
    "sysk: done",
]

XV6 = [
    "xv6ish: struct cpu through gs yes, kernel at 80101030",
    "init: starting",
    "fork: 1 -> 2",
    "pid 2 shows 222",
    "exec: pid 2 runs hello",
    "hello from exec",
    "pid 2 shows 2",
    "exit: pid 2 status 7",
    "wait: pid 1 reaps 2 (status 7)",
    "pid 1 shows 111",
    "fork: 1 -> 3",
    "fork: 1 -> 4",
    "pid 1 shows 0",
    "init: done",
    "init exits 0: ticks yes, spinners preempted by the timer yes, 53 pages allocated",
]

EXPECTED = {"osdev2-jit": JIT, "osdev2-tss": TSS, "osdev2-sysenter": SYSENTER, "osdev2-xv6": XV6}

# Where QEMU's TCG departs from the SDM: the SDM's line, and QEMU's.
QEMU = {
    # no general detect: the MOV from DR7 just reads it, GD still set
    "dr7.gd: hits 1 at mov 1 dr6 ffff2ff0, then dr7 400":
        "dr7.gd: hits 0 at mov 0 dr6 ffff0ff2, then dr7 2400",
    # no FOP, FCS or FIP in FXSAVE's image (QEMU writes zeros), and C1 (the last
    # rounding went up: SDM Vol. 1 §8.1.3.1) clear
    ("fxsave of thread 1: fcw 37f fsw 3a20 ftw 80 fop 6e9 fcs 1b mxcsr 1f80"):
        ("fxsave of thread 1: fcw 37f fsw 3820 ftw 80 fop 0 fcs 0 mxcsr 1f80"),
    # false and stale DR6 bits: a B1 hit on stores that do not touch DR1's bytes (before
    # and after the others), B1 and B2 carried into the #DBs that follow
    ("breakpoints: d #DB: [u+0 cs 1b dr6 ffff0ff1] [u+10 cs 1b dr6 ffff0ff2] [u+1e cs "
     "1b dr6 ffff0ff4] [u+26 cs 1b dr6 ffff0ff6] [k+2fc cs 8 dr6 ffff0ff2] [k+216 cs 8 "
     "dr6 ffff0ff8] [u+60 cs 1b dr6 ffff4ff0] [u+61 cs 1b dr6 ffff4ff0] [u+62 cs 1b dr6 "
     "ffff4ff0] [u+64 cs 1b dr6 ffff4ff0] [u+69 cs 1b dr6 ffff4ff0] [u+6e cs 1b dr6 "
     "ffff4ff0] [k+0 cs 8 dr6 ffff4ff0]"):
        ("breakpoints: f #DB: [u+ffffff85 cs 1b dr6 ffff0ff2] [u+0 cs 1b dr6 ffff0ff1] "
         "[u+10 cs 1b dr6 ffff0ff2] [u+1e cs 1b dr6 ffff0ff4] [u+26 cs 1b dr6 ffff0ff6] "
         "[k+2fc cs 8 dr6 ffff0ff6] [k+216 cs 8 dr6 ffff0ff8] [u+60 cs 1b dr6 ffff4ff6] "
         "[u+61 cs 1b dr6 ffff4ff6] [u+62 cs 1b dr6 ffff4ff6] [u+64 cs 1b dr6 ffff4ff6] "
         "[u+69 cs 1b dr6 ffff4ff6] [u+6e cs 1b dr6 ffff4ff6] [k+0 cs 8 dr6 ffff4ff6] "
         "[u+ffffffa4 cs 1b dr6 ffff0ff2]"),
}

# Under trapemu the kernel runs at ring 1: Robin & Irvine's instructions show it.  xv6ish
# enters each process by trapret's IRET to ring 3 with IF set in the image, which does not
# trap and so loses IF (docs/virtualization.md): its spinners run their loops unpreempted,
# and the timer ticks only in the scheduler's STI window.
TRAPEMU = {
    "init exits 0: ticks yes, spinners preempted by the timer yes, 53 pages allocated":
        "init exits 0: ticks yes, spinners preempted by the timer no, 53 pages allocated",
}


@functools.lru_cache(maxsize=None)
def _run(name: str, platform: str) -> tuple[list[str], int]:
    out, code = run_platform(platform, build_kernel(name), qemu_args=kernel_named(name).qemu_args)
    return output_lines(out), code


CASES = [(name, platform) for name in EXPECTED for platform in ("qemu", "jit", "trapemu", "bt")]
# and under hvm, whose port I/O exits owe the guest's I/O breakpoints as the monitors' traps do
CASES.append(("osdev2-sysenter", "hvm"))


@pytest.mark.parametrize("name,platform", [
    pytest.param(n, p, marks=pytest.mark.qemu) if p == "qemu" else (n, p) for n, p in CASES])
def test_osdev2_kernel(name, platform):
    lines, code = _run(name, platform)
    expected = EXPECTED[name]
    if platform == "qemu":
        expected = [QEMU.get(line, line) for line in expected]
    elif platform == "trapemu":
        expected = [TRAPEMU.get(line, line) for line in expected]
    assert lines == expected, "\n".join(lines)
    assert code == 0
