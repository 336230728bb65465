"""Kernels that must run under every monitor exactly as on the hardware.

Each guest in ``hwtests.MONITOR_KERNELS`` (sources in ``tests/hwguests/``,
built on the shared runtime there: its own GDT, IDT, TSS and page tables,
nothing like the teaching kernel) does what ordinary kernels do and a
monitor must not notice: it single-steps itself, patches the code it is
running, remaps its code pages under chained calls, sets its own
breakpoints, reads constants through CS, keeps NT, takes #UD and #NM,
enters and leaves handlers and call gates of 16 bits.

Every guest runs on ``qemu-system-i386 -kernel`` (the reference), on the
bare ringvisor PC, and under ``trapemu`` and ``bt``; the serial output must
be the expected lines below in every case.  The expected values come from
the Intel SDM (each guest's source says which rules) and were checked on
QEMU 7.2 TCG; where QEMU departs from the SDM the guest does not print the
case (``kernelisms``) or prints it only in a build that runs on ringvisor
alone (``kernelisms-sdm``, checked against the SDM).

Under trapemu the sensitive unprivileged instructions (Robin & Irvine) may
show the monitor; the guests print nothing that depends on them (PUSHF
images are printed as TF, NT and DF only), so the lines are the same in
every mode (hvm: the kernel at ring 0 in VMX non-root operation).
"""

from __future__ import annotations

import functools
import re

import pytest

from hwtests import MONITOR_KERNELS, build_kernel, kernel_named, output_lines, run_platform
from ringvisor.tools.qemu import find_qemu
from ringvisor.vmm.runner import run_vm

MODES = ("native", "trapemu", "bt", "hvm")
LIMIT = 2_000_000             # every guest retires under 250 000 instructions natively

# --------------------------------------------------------------------------
# selfstep: the saved EIP of every single-step trap, relative to the routine
# (selfstep_asm.S).  flow: no trap after the POPF that sets TF (+9..+11);
# then one after each instruction: nop, mov, xor, the loop body 3 times
# (add, dec, jnz: taken twice, falling through once), jmp, cmp, je (taken),
# cmp, je (not taken), call (to step_leaf at +85), inc, ret, lea, an
# indirect call, inc, ret, mov, an indirect jmp, mov, loop (taken once:
# +66 twice), mov, pushf, andl, and the POPF that clears TF (+79: it began
# with TF set).  system: PUSHF/POPF and the instructions a monitor
# emulates (mov to and from CR0 and CR3, out, in, cli) are stepped like any
# other.  int: no trap after INT n (+19 is the ADD after it) and none in the
# handler (TF is cleared by the gate and restored by its IRET).  rep movsb:
# one trap per iteration, EIP at the REP MOVSB (+25) until the last (SDM
# Vol. 3 §17.3.1.4).  DR6 reads 0xffff4ff0 (BS, reserved bits set) every
# time (§17.2.3).
# --------------------------------------------------------------------------
_FLOW = ("flow: result=8 steps=33 +11 +16 +18 +20 +21 +18 +20 +21 +18 +20 +21 +23 +27 +30 "
         "+34 +37 +39 +85 +86 +44 +50 +85 +86 +52 +57 +61 +66 +66 +68 +70 +71 +78 +79 end=+79 "
         "dr6!=0xffff4ff0:0")
EXPECTED = {
    "selfstep": [
        "selfstep: start",
        "dr6 after writing 0: 0xffff0ff0",
        _FLOW, _FLOW, _FLOW,
        "system: result=90 steps=17 +11 +12 +18 +19 +20 +23 +26 +29 +34 +36 +37 +38 +41 +42 "
        "+43 +50 +51 end=+51 dr6!=0xffff4ff0:0",
        "pushf image: tf=1 nt=0 df=0",
        "int: result=12 steps=5 +14 +19 +20 +27 +28 end=+28 dr6!=0xffff4ff0:0",
        "int 0x81: count=1 handler tf=0",
        "rep movsb: result=0 steps=7 +25 +25 +27 +29 +30 +37 +38 end=+38 dr6!=0xffff4ff0:0",
        "copied: abc",
        "selfstep: done",
    ],
    # ----------------------------------------------------------------------
    # selfpatch: every store changes code ahead of it in the straight line
    # being executed, and the new bytes run (SDM Vol. 3 §11.6).  ahead:
    # 1 + v; next: "inc; inc" after mov $100 -> 102, "xor" -> 0; loop: 0 + n
    # + (n-1) + .. + 2; rmw: mov $1, dec, inc, inc -> 2; straddle: the store
    # rewrites the top two immediate bytes and the two NOPs after;
    # rep: push 7; pop eax, then 3 x inc edx -> 10; push: the pushed dword
    # is inc; inc; inc; nop -> 3; self: the store turns itself into
    # "jmp +6; inc; inc" -> 1, then 3; alias: hashes of 1 + v through
    # either linear address.
    # ----------------------------------------------------------------------
    "selfpatch": [
        "selfpatch: start",
        "ahead: 6 4097 hash=0xef6e426e",
        "next: 102 0 102",
        "loop: n=10 -> 54, n=3 -> 5, n=10 -> 54",
        "rmw: 2 2",
        "straddle: 0x40000101 0x00000101",
        "rep: 10 10",
        "push: 3 3",
        "self: 1 3 3",
        "alias: 7846533 420800037",
        "selfpatch: done",
    ],
    # ----------------------------------------------------------------------
    # remap: each digit is one transfer (direct call, direct jmp, indirect
    # call, ret) reaching the callee page at 0x402000 through the mapping
    # in force (SDM Vol. 3 §4.10.4: INVLPG, MOV to CR3).  A fetch from a
    # not-present page: #PF, error code 0, CR2 = the address, EIP = the
    # target (a CALL has pushed its return address) or, for the
    # instruction straddling 0x402ffd..0x403001, its first byte with CR2 =
    # the second page (§6.15 int 14).
    # ----------------------------------------------------------------------
    "remap": [
        "remap: start",
        "mapped F_ONE: 1111",
        "PTE -> F_TWO, invlpg: 2222",
        "CR3 -> second directory: 3333",
        "CR3 -> first directory: 2222",
        "PTE -> F_ONE, CR3 reloaded: 1111",
        "PDE -> second table, CR3 reloaded: 3333",
        "PDE restored, invlpg: 1111",
        "straddling mov: 0x11223344",
        "second page -> G_TWO, invlpg: 0x55663344",
        "second page unmapped: #14 err=0x0 eip=+0 cr2=0x403000 pushed=0x401045",
        "unmapped, direct call: #14 err=0x0 eip=+0 cr2=0x402000 pushed=0x401005",
        "unmapped, direct jmp: #14 err=0x0 eip=+0 cr2=0x402000",
        "unmapped, indirect call: #14 err=0x0 eip=+0 cr2=0x402000 pushed=0x401027",
        "unmapped, ret: #14 err=0x0 eip=+0 cr2=0x402000",
        "mapped F_TWO again: 2222",
        "4 MiB page: 44445",
        "remap: done",
    ],
    # ----------------------------------------------------------------------
    # debugreg (SDM Vol. 3 §17.2, §17.3.1): instruction breakpoints are
    # faults (EIP = the instruction; with RF set by the handler the loop
    # hits once per iteration), data breakpoints traps (EIP = the next
    # instruction: +2 after "movl %ecx,(%edx)", +3 after movzwl, lgdt and
    # "movw %ss,(%edx)" is 2 bytes); DR6 = 0xffff0ff0 | Bn.  DR4/DR5 are
    # DR6/DR7 with CR4.DE clear, #UD with it set; RDTSC at CPL 3 with
    # CR4.TSD set is #GP(0) (Vol. 2 RDTSC).
    # ----------------------------------------------------------------------
    "debugreg": [
        "debugreg: start",
        "dr6=0xffff0ff0 dr7=0x00000400",
        *["result 15; exec bp in a loop, RF: count=5" + " [eip=+0 dr6=0xffff0ff1]" * 4] * 2,
        "result 15; exec bp, disarmed by the handler: count=1 [eip=+0 dr6=0xffff0ff2]",
        "result 2; exec bp on cli: count=1 [eip=+0 dr6=0xffff0ff4]",
        "result 2; exec bp on mov from cr0: count=1 [eip=+0 dr6=0xffff0ff8]",
        "write watchpoint, 4 bytes: count=3" + " [eip=+2 dr6=0xffff0ff2]" * 3,
        "halfs[1]=0x907; write watchpoint, 1 byte: count=2 [ dr6=0xffff0ff8] [ dr6=0xffff0ff8]",
        "read 1; read/write watchpoint on a read: count=1 [eip=+3 dr6=0xffff0ff4]",
        "write watchpoint on mov %ss, mem: count=1 [eip=+2 dr6=0xffff0ff1]",
        "read/write watchpoint on lgdt: count=1 [eip=+3 dr6=0xffff0ff2]",
        "user eax=3; exec bp in user code: count=1 [eip=+0 dr6=0xffff0ff1 user]",
        "write watchpoint, untouched: count=0",
        "CR4.DE=0: dr4=0xffff0ff1 dr5=0x00330400",
        "CR4.DE=1 mov from dr4: #6 eip=+0",
        "CR4.DE=1 mov to dr5: #6 eip=+0",
        "CR4.DE=1 mov from dr6: no exception",
        "CR4.TSD=0 user rdtsc: frame eip=+4",
        "CR4.TSD=1 user rdtsc: #13 err=0x0 eip=+0",
        "CR4.TSD=1 kernel rdtsc: no fault",
        "debugreg: done",
    ],
}

# --------------------------------------------------------------------------
# kernelisms: CS-relative reads (sum of the constants, a byte and a jump
# table entry); NT set and then cleared through POPF, seen by PUSHF across
# trapping instructions; #UD at the instruction (SDM Vol. 3 §6.15 int 6);
# x87/MMX/SSE under CR0.EM/TS/MP (§2.5, tables 9-1 and 9-2: x87 #NM with EM
# or TS, WAIT #NM only with MP and TS, MMX #UD with EM and #NM with TS, SSE
# #UD without CR4.OSFXSR); CLTS and LMSW change TS; user code takes #NM too.
# --------------------------------------------------------------------------
_UD = ["ud2", "ud1", "ud0", "lock nop", "lock add reg", "mov to cs", "lea reg", "cmpxchg8b reg",
       "far jmp reg"]


def _fpu_row(title: str, cr0: int, fwait_nm: bool, mmx: int) -> list[str]:
    return [f"{title} (cr0 & 0xe = {cr0:#x}):", "  fnop: #7 eip=+0", "  fninit: #7 eip=+0",
            "  fwait: #7 eip=+0" if fwait_nm else "  fwait: no exception",
            f"  movd mm0: #{mmx} eip=+0", "  xorps: #6 eip=+0"]


_KERNELISMS_HEAD = [
    "kernelisms: start",
    "cs reads: 0x10050365 0x100503ce hash=0x27a3a614",
]
_KERNELISMS_TAIL = [
    "nt through pushf/popf: 0x4000",
    *[f"{n}: #6 eip=+0" for n in _UD],
    *_fpu_row("TS", 0x8, False, 7),
    *_fpu_row("EM", 0x4, False, 6),
    *_fpu_row("MP TS", 0xa, True, 7),
    "after clts: cr0 & 0xe = 0x6",
    "after lmsw: cr0 & 0xe = 0x8",
    "fnop after lmsw: #7 eip=+0",
    "user fnop with TS: #7 eip=+0",
    # the x87's last-instruction pointer is the guest's own code, not the translation
    # cache's (bt); under trapemu FCS is the ring-compressed CS that MOV from CS shows too
    "fnstenv after fld1: fip=+0 fcs=cs",
    "kernelisms: done",
]
EXPECTED["kernelisms"] = _KERNELISMS_HEAD + _KERNELISMS_TAIL
# SDM Vol. 3 §5.5, Vol. 2 MOV: a write through CS, a read beyond the code
# segment's limit (0x3ffffe + 4 > 0x3fffff) and a read of an execute-only
# segment are #GP(0); the read below the limit returns the Multiboot magic
# at the start of the image (0x100000).
EXPECTED["kernelisms-sdm"] = _KERNELISMS_HEAD + [
    "cs write: #13 err=0x0 eip=+0",
    "cs limit read below: 0x1badb002",
    "cs limit read across the limit: #13 err=0x0 eip=+0",
    "cs read, execute-only segment: #13 err=0x0 eip=+0",
] + _KERNELISMS_TAIL

# ldt (tests/hwguests/ldt): a kernel with its segments in an LDT that lies inside
# its GDT.  LLDT (SDM Vol. 2): #GP(selector) for a TI=1 selector, one beyond the
# GDT, a data segment or a TSS; #NP(selector) for a not-present LDT descriptor;
# the RPL is kept in LDTR's selector (SLDT 0x43).  Loads through TI=1 (Vol. 2 MOV,
# Vol. 3 6.14): the error code is the selector with TI (0x24 not present: #NP,
# 0x34 past the limit: #GP; with no LDT, 0xc: #GP); a DPL-3 data segment loads at
# CPL 0.  The accessed bit is set by the first load (Vol. 3 3.4.5).  An edit in
# place is seen at the next load, not by the loaded FS (0x1004 until reloaded:
# 0x1044, 0x1084 after a GDT edit in the same frame, 0x10c4 behind paging).  A far
# call to an LDT code segment runs with that CS (RPL left out: trapemu shows the
# monitor's ring there).  Ring 3 runs on LDT code and stack segments, and the
# interrupt frame holds them.  Checked on QEMU 7.2.
EXPECTED["ldt"] = [
    "ldt: start",
    "sldt at boot: 0x0",
    "lldt of a TI=1 selector: #13 err=0x44 eip=+0",
    "lldt beyond the GDT: #13 err=0x800 eip=+0",
    "lldt of a data segment: #13 err=0x10 eip=+0",
    "lldt of a not-present LDT: #11 err=0x48 eip=+0",
    "lldt of a TSS: #13 err=0x28 eip=+0",
    "lldt of the LDT: no exception",
    "sldt: 0x43",
    "accessed before the first load: 0x0",
    "read through the LDT: 0x1004",
    "load of an LDT data segment: no exception",
    "accessed after it: 0x1",
    "load of a not-present LDT entry: #11 err=0x24 eip=+0",
    "load past the LDT's limit: #13 err=0x34 eip=+0",
    "load of a DPL-3 LDT data segment at CPL 0: no exception",
    "after the edit, before a reload: 0x1004",
    "after the edit, reloaded: 0x1044",
    "after a GDT and an LDT edit in one page: 0x1084",
    "far call through the LDT: cs=0x2c, back: cs=0x8",
    "ring 3: cs=0x1f ds=0x17 read=0x1008 frame cs=0x1f ss=0x17",
    "with paging, after an edit: 0x10c4",
    "lldt of the null selector: no exception",
    "sldt after it: 0x0",
    "load through TI=1 with no LDT: #13 err=0xc eip=+0",
    "ldt: done",
]

# segbase (tests/hwguests/segbase): code run through a code segment based at 0x80000
# (linear = base + offset, SDM Vol. 3 3.4): CALL pushes the offset, an indirect call
# and a read through a based DS (3 * (1 + .. + n) + n calls + 1000 from the table);
# SYSENTER from ring 3 enters at IA32_SYSENTER_EIP/ESP with CS = IA32_SYSENTER_CS and
# SS 8 above it, SYSEXIT returns to EDX/ECX with CS 16 and SS 24 above it, RPL 3 (Vol.
# 2 SYSENTER, SYSEXIT); with IA32_SYSENTER_CS 0, SYSENTER is #GP(0).  Call gates (Vol. 2
# CALL/JMP, CALL-GATE): at the same privilege a CALL pushes CS:EIP (8 bytes) and a JMP
# nothing but the near call before it; from ring 3 to ring 0 the TSS's stack gets SS,
# ESP, the gate's two parameters, CS and EIP (ESP0 0x280000 - 24), and LRET $8
# releases the parameters on the user's stack too (Vol. 2 RET); a DPL-0 gate from
# ring 3 is #GP(gate), a gate not present #NP(gate).  Checked on QEMU.
EXPECTED["segbase"] = [
    "segbase: start",
    "based_sum(0) = 1000",
    "based_sum(5) = 1050",
    "based_sum(10) = 1175",
    "sysenter: kernel esp=0x27f000 cs=0x8 ss=0x10; sysexit: eax=0x2345 cs=0x1b ss=0x23 "
    "esp=0x28fffc",
    "sysenter with IA32_SYSENTER_CS 0: #13 err=0x0 eip=+0",
    "kernel call gate: pushed cs=0x8, esp below by 8",
    "jmp through a gate: esp below by 4",
    "user call gate: cs=0x1b params 0x1111 0x2222 user ss=0x23 esp ok 1, ret ok 1, "
    "kernel ss=0x10 esp=0x27ffe8, back: esp up by 8",
    "ring 3 call through a DPL-0 gate: #13 err=0x70 eip=+0",
    "ring 3 call through a gate not present: #11 err=0x80 eip=+0",
    "segbase: done",
]

# tscwrite (tests/hwguests/tscwrite): WRMSR to IA32_TIME_STAMP_COUNTER, after which the
# counter runs on from the value (SDM Vol. 3 17.17) for RDTSC at rings 0 and 3 and for
# RDMSR; with CR4.TSD, ring 3's RDTSC is #GP(0).  QEMU 7.2's TCG ignores the write, so
# the expected lines are the SDM's, checked natively and under every monitor.
EXPECTED["tscwrite-sdm"] = [
    "tscwrite: start",
    "ring 3 rdtsc: no exception",
    "written: rdtsc hi=0x12345678 rdmsr hi=0x12345678 user rdtsc hi=0x12345678 later=yes",
    "ring 3 rdtsc with TSD: #13 err=0x0 eip=+0",
    "written back: hi=0x0 below 2^31=yes",
    "tscwrite: done",
]

# gates16 (tests/hwguests/gates16): the 16-bit transfers, in code segments based so that
# IP holds the routines' offsets.  A 16-bit interrupt or trap gate pushes FLAGS, CS and
# IP as words (6 bytes; SDM Vol. 3 §6.12.1, Figure 6-4), and from ring 3 SS and SP
# first, on the TSS's ring-0 stack (10 bytes), with the error code of #NP(0x60) as a word
# (the handler steps past the 2-byte MOV to FS); the 16-bit IRET pops them back (CF set
# in the image comes back, ESP is restored: SDM Vol. 2 IRET).  A far call through a
# 16-bit call gate pushes CS and IP as words (4 bytes), from ring 3 SS, SP and its two
# word parameters in order (12 bytes; SDM Vol. 2 CALL), and RETF $4 with a 16-bit operand
# releases them on both stacks.  The FLAGS image is CMP's ZF and PF with IF clear.
EXPECTED["gates16"] = [
    "gates16: start",
    "int through a 16-bit interrupt gate: ip=+0 cs=0040 flags=0046 frame=6",
    "its 16-bit iret: cf=1 esp restored=1",
    "int through a 16-bit trap gate: ip=+0 cs=0040 flags=0046 frame=6 restored=1",
    "#np through a 16-bit gate: err=0060 ip=+0 cs=0040 resumed=1",
    "far call through a 16-bit call gate: ip=+0 cs=0040 frame=4 restored=1",
    "from ring 3, a 16-bit interrupt gate: ip=+0 cs=004b flags=0046 sp=esp:1 ss=0023 frame=10 "
    "restored=1",
    "from ring 3, a 16-bit call gate: ip=+0 cs=004b params=2222 1111 sp=esp-4:1 ss=0023 "
    "frame=12 restored=1",
    "gates16: done",
]

# tschalt (tests/hwguests/tschalt): the TSC counts on while the processor waits in HLT
# (SDM Vol. 3 §17.17): over the same number of PIT periods it gives about the same count
# spinning and halted.
EXPECTED["tschalt"] = [
    "tschalt: start",
    "tsc counted while spinning: yes",
    "tsc over the same ticks halted: the same",
    "tschalt: done",
]


# gatecache (tests/hwguests/gatecache): between two INT 0x81 from ring 3, the program
# rewrites in user mode, with no other entry into its kernel between, the gate (a new
# handler B in a code segment of its own, 0x48), the TSS's ESP0 and SS0, the handler's
# code descriptor in place (not present: #NP(0x48); a data segment: #GP(0x48); in the
# -sdm build a 64 KiB limit below the entry point: #GP(0), which QEMU 7.2 does not
# check) and the gate's access byte (DPL 0: #GP(0x81 * 8 + 2); not present:
# #NP(0x40a)), each fault at the INT itself (SDM Vol. 2 INT n; Vol. 3 §6.12.1.1).  The
# hardware reads all three at every delivery: a monitor that caches them must see each
# store at the next trap.  CS and SS in the handler are printed without their RPL.
_GATECACHE = [
    "gatecache: start",
    "0: handler A stack=esp0 ss=0010 cs=0008",
    "1: handler A stack=esp0 ss=0010 cs=0008",
    "2: handler B stack=esp0 ss=0010 cs=0048",
    "3: handler B stack=esp0 ss=0010 cs=0048",
    "4: handler B stack=alt ss=0010 cs=0048",
    "5: handler B stack=alt ss=0050 cs=0048",
    "6: handler B stack=alt ss=0050 cs=0048",
    "7: fault #11 err=0x48 eip=+0 count=1",
    "8: fault #13 err=0x48 eip=+0 count=1",
    "9: handler B stack=alt ss=0050 cs=0048",
    "10: fault #13 err=0x40a eip=+0 count=1",
    "11: fault #11 err=0x40a eip=+0 count=1",
    "12: handler B stack=alt ss=0050 cs=0048",
    "13: handler A stack=esp0 ss=0010 cs=0008",
    "14: handler A stack=esp0 ss=0010 cs=0008",
    "esp0=280000 ss0=10",
    "gatecache: done",
]
EXPECTED["gatecache"] = _GATECACHE
EXPECTED["gatecache-sdm"] = _GATECACHE[:11] + [
    "10: fault #13 err=0x0 eip=+0 count=1",
    "11: handler B stack=alt ss=0050 cs=0048",
] + [f"{int(x.split(':')[0]) + 2}:{x.split(':', 1)[1]}" for x in _GATECACHE[11:16]] + _GATECACHE[16:]


@functools.lru_cache(maxsize=None)
def _run(name: str, mode: str) -> tuple[list[str], int]:
    image = build_kernel(name)
    if mode == "qemu":
        out, code = run_platform("qemu", image, qemu_args=kernel_named(name).qemu_args)
        return output_lines(out), code
    r = run_vm(image, mode, max_instructions=LIMIT, quiet=True)
    code = r.status >> 1 if r.status & 1 else -1
    return output_lines(r.output.decode("latin-1").replace("\r\n", "\n")), code


@pytest.mark.parametrize("name,mode", [(k, m) for k in EXPECTED for m in MODES])
def test_guest(name: str, mode: str) -> None:
    lines, code = _run(name, mode)
    assert lines == EXPECTED[name]
    assert code == 0


@pytest.mark.qemu
@pytest.mark.parametrize("name", [k for k in EXPECTED if not k.endswith("-sdm")])
def test_guest_on_qemu(name: str) -> None:
    if find_qemu() is None:
        pytest.skip("qemu-system-i386 not installed")
    lines, code = _run(name, "qemu")
    assert lines == EXPECTED[name]
    assert code == 0


def test_every_monitor_guest_is_checked() -> None:
    assert set(EXPECTED) == set(MONITOR_KERNELS)


# --------------------------------------------------------------------------
# cpufeat (tests/hwguests/cpufeat; EXPECTED_CPUFEAT, checked on QEMU, is in
# test_hw_guests.py): CR4.UMIP at ring 3 and ring 0, CR4.SMEP, RDTSCP's
# IA32_TSC_AUX, under the monitors.  Under trapemu SGDT in the kernel with UMIP
# clear runs at ring 1 without trapping and shows the monitor's GDT (Robin &
# Irvine): that line is left out there.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_cpu_features_under_the_monitors(mode: str) -> None:
    from test_hw_guests import EXPECTED_CPUFEAT
    image = build_kernel("cpufeat")
    r = run_vm(image, mode, max_instructions=LIMIT, quiet=True)
    lines = output_lines(r.output.decode("latin-1").replace("\r\n", "\n"))
    expected = list(EXPECTED_CPUFEAT)
    if mode == "trapemu":
        shown = [l for l in lines if l.startswith("umip=0 ring 0 sgdt")]
        assert shown and "base=0xffc00000" in shown[0]        # the monitor's GDT
        skip = ("umip=0 ring 0 sgdt",)
        lines = [l for l in lines if not l.startswith(skip)]
        expected = [l for l in expected if not l.startswith(skip)]
    assert lines == expected


# --------------------------------------------------------------------------
# smap (tests/hwguests/smap; EXPECTED_SMAP, checked on QEMU, is in test_hw_guests.py):
# the kernel's ring 1 is supervisor too, so the real CR4.SMAP and EFLAGS.AC (the
# guest's) decide its accesses; STAC/CLAC are #UD there and emulated, and the
# monitor's own fills of the real TLB leave user pages alone.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_smap_under_the_monitors(mode: str) -> None:
    from test_hw_guests import EXPECTED_SMAP
    r = run_vm(build_kernel("smap"), mode, max_instructions=LIMIT, quiet=True)
    assert output_lines(r.output.decode("latin-1").replace("\r\n", "\n")) == EXPECTED_SMAP


# --------------------------------------------------------------------------
# rings12 (tests/hwguests/rings12): a driver at ring 1, then one at ring 2, each entered
# by an IRET to its own code and stack segments.  At CPL 1 and 2, MOV from CR0 is #GP(0)
# (SDM Vol. 3 §5.9), a DPL-0 data segment #GP(selector) (§5.6), IN above IOPL #GP(0)
# (Vol. 1 §19.5.1); the fault's frame holds the driver's CS.  QEMU, the bare PC, hvm
# (the guest's rings are the processor's in VMX non-root operation) and bt (which
# translates ring-1 and ring-2 code at a virtual CPL) print these lines; trapemu gives
# a guest rings 0 and 3 only, and stops at the first entry from the driver's code.
# --------------------------------------------------------------------------
def _rings(ring: int, cs: int, ss: int) -> list[str]:
    return [f"ring {ring}: cs={cs:04x} ss={ss:04x}",
            f"ring {ring} mov from cr0: #13 err=0x0 frame cs={cs:04x}",
            f"ring {ring} load of a DPL-0 data segment: #13 err=0x10",
            f"ring {ring} in from a port (IOPL 0): #13 err=0x0"]


RINGS12 = ["rings12: start", *_rings(1, 0x31, 0x39), *_rings(2, 0x42, 0x4a), "rings12: done"]


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "native", "hvm",
                                      "bt"])
def test_drivers_at_rings_1_and_2(platform: str) -> None:
    if platform == "qemu":
        if find_qemu() is None:
            pytest.skip("qemu-system-i386 not installed")
        lines, code = _run("rings12", "qemu")
    else:
        lines, code = _run("rings12", platform)
    assert (lines, code) == (RINGS12, 0)


# ringcalls (tests/hwguests/ringcalls): the transfers into and out of rings 1 and 2 and
# the checks made there -- call gates with parameters into ring 1 (from rings 3 and 2)
# and ring 2 (from ring 3) on the TSS's SS1:ESP1 and SS2:ESP2, RET imm back nulling the
# data segments of lower DPL (SDM Vol. 2 RET), a gate of DPL 2 from ring 3 (#GP(gate)),
# an interrupt handler at ring 1 entered from rings 3, 2 and 1 and refused from ring 0
# (#GP(selector), Vol. 3 §6.12.1.1), the same at ring 2 (SS2:ESP2 from ring 3, refused
# from ring 1), IRET from ring 0 to rings 1 and 2 (the data segments
# of lower DPL null), faults at ring 2 delivered to ring 0 with its SS:ESP in the frame,
# CLI/STI/POPF/OUT against IOPL at rings 1 and 2, and rings 1 and 2 as supervisor for
# paging (a supervisor page read, a read-only user page written under CR0.WP clear and
# set), a selector beyond the GDT's limit loaded from an immediate at ring 0 (#GP: the
# monitor's slot standing for a ring-2 stack does not show), tasks at rings 1 and 2 (by
# CALL and through a task gate from ring 3: segments, NT, back link, a fault there, the
# IRET back, the state saved), 16-bit code at ring 1 (CLI at IOPL 0: bt's interpreter of
# 16-bit code at the virtual CPL).  QEMU, the bare PC, hvm and bt print these lines;
# trapemu stops at the first gate.
RINGCALLS = [
    'ringcalls: start',
    'gate 3->1: cs=0031 ss=0039 esp=top-24',
    'gate 3->1 frame: eip=back cs=001b p=22222222,11111111 esp=top-12 ss=0023',
    'gate 3->1 back: result=11111111 esp=top-4 ds=0000 es=0000 fs=0023 gs=0023',
    'gate 2->1: cs=0031 ss=0039 esp=top-24',
    'gate 2->1 frame: eip=back cs=0042 p=22222222,11111111 esp=top-12 ss=004a',
    'gate 2->1 back: result=11111111 esp=top-4 ds=0000 es=004a fs=0023 gs=004a',
    'gate 3->2: cs=0042 ss=004a esp=top-24',
    'gate 3->2 frame: eip=back cs=001b p=22222222,11111111 esp=top-12 ss=0023',
    'gate 3->2 back: result=11111111 esp=top-4 ds=0023 es=0023 fs=0023 gs=0023',
    'gate of DPL 2 from ring 3: #13 err=0x60 cs=001b',
    'gate 2->1 (1 parameter): esp=top-20 p=33333333 esp=top-8 ss=004a result=33333333 back esp=top-4',
    'int 0x61 from ring 3: cs=0031 ss=0039 esp=top-20 eflags=3',
    'int 0x61 from ring 3 frame: eip=back cs=001b eflags=3 esp=top-4 ss=0023',
    'int 0x61 from ring 3 back: esp=top-4',
    'int 0x61 from ring 2: cs=0031 ss=0039 esp=top-20 eflags=3',
    'int 0x61 from ring 2 frame: eip=back cs=0042 eflags=3 esp=top-4 ss=004a',
    'int 0x61 from ring 2 back: esp=top-4',
    'int 0x61 from ring 1: cs=0031 ss=0039 esp=top-16 eflags=3',
    'int 0x61 from ring 1 frame: eip=back cs=0031 eflags=3',
    'int 0x61 from ring 1 back: esp=top-4',
    'int 0x61 from ring 0: #13 err=0x30',
    'int 0x61 from ring 3 (ring-2 handler): cs=0042 ss=004a esp=top-20 eflags=3',
    'int 0x61 from ring 3 (ring-2 handler) frame: eip=back cs=001b eflags=3 esp=top-4 ss=0023',
    'int 0x61 from ring 3 (ring-2 handler) back: esp=top-4',
    'int 0x61 from ring 2 (ring-2 handler): cs=0042 ss=004a esp=top-16 eflags=3',
    'int 0x61 from ring 2 (ring-2 handler) frame: eip=back cs=0042 eflags=3',
    'int 0x61 from ring 2 (ring-2 handler) back: esp=top-4',
    'int 0x61 from ring 1 (ring-2 handler): #13 err=0x40 cs=0031',
    'iret to ring 2 with ds=004a es=0010 fs=0039 gs=0023: cs=0042 ss=004a esp=top-4 ds=004a es=0000 fs=0000 gs=0023',
    'iret to ring 1 with ds=004a es=0010 fs=0039 gs=0023: cs=0031 ss=0039 esp=top-4 ds=004a es=0000 fs=0039 gs=0023',
    'ring 2 mov from cr0: #13 err=0x0 eip=+0 cs=0042 esp=top-16 ss=004a',
    'ring 2 DPL-1 data into es: #13 err=0x38 eip=+0',
    'ring 2 DPL-1 data into ss: #13 err=0x38 eip=+0',
    'ring 2 RPL-3 selector of DPL-2 data into fs: #13 err=0x48',
    'ring 2 store to a page not present: #14 err=0x2 cr2=400010',
    'ring 1 iopl 1: eflags=1000 cli #255 (eflags=1000) sti #255 (eflags=1200) popf 3002 -> 1000 out #255',
    'ring 1 iopl 0: eflags=0 cli #13 (eflags=0) sti #13 (eflags=0) popf 3002 -> 0 out #13',
    'ring 2 iopl 1: eflags=1000 cli #13 (eflags=1000) sti #13 (eflags=1000) popf 3002 -> 1000 out #13',
    'ring 2 read of a supervisor page: #255 value=5eed',
    'ring 2 write to a read-only user page, wp=0: #255 value=2222',
    'ring 2 write to a read-only user page, wp=1: #14 err=0x3 cr2=3e1000 value=2222',
    'ring 3 read of a supervisor page: #14 err=0x5',
    'task at ring 1 (call): cs=0031 ss=0039 esp=top-0 ds=0039 es=004a fs=0023 gs=0000 eflags=4002 link=0028',
    'task at ring 1 (call) mov from cr0: #13 err=0x0 eip=+0 cs=0031',
    'task at ring 1 (call) saved: eip=back cs=0031 ss=0039 esp=top-0',
    'task at ring 1 (int from ring 3): cs=0031 ss=0039 esp=top-0 ds=0039 es=004a fs=0023 gs=0000 eflags=4002 link=0028',
    'task at ring 1 (int from ring 3) mov from cr0: #13 err=0x0 eip=+0 cs=0031',
    'task at ring 1 (int from ring 3) saved: eip=back cs=0031 ss=0039 esp=top-0',
    'task at ring 1 (int from ring 3) back: cs=001b ss=0023 esp=top-4',
    'task at ring 2 (call): cs=0042 ss=004a esp=top-0 ds=004a es=0023 fs=0000 gs=004a eflags=4002 link=0028',
    'task at ring 2 (call) mov from cr0: #13 err=0x0 eip=+0 cs=0042',
    'task at ring 2 (call) saved: eip=back cs=0042 ss=004a esp=top-0',
    '16-bit code at ring 1: cs=0071 eip=5 ax=0071 cli #13 err=0x0 eip=+0 cs=0071',
    'ring 0 load of 0xffe0 into ds: #13 err=0xffe0',
    'ringcalls: done',
]


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "native", "hvm",
                                      "bt"])
def test_rings_1_and_2_transfers(platform: str) -> None:
    if platform == "qemu" and find_qemu() is None:
        pytest.skip("qemu-system-i386 not installed")
    assert _run("ringcalls", platform) == (RINGCALLS, 0)


def test_rings_1_and_2_stop_trapemu() -> None:
    r = run_vm(build_kernel("ringcalls"), "trapemu", max_instructions=LIMIT, quiet=True)
    assert output_lines(r.output.decode("latin-1").replace("\r\n", "\n")) == ["ringcalls: start"]
    assert r.stop.reason == "unsupported", r.stop
    assert r.stop.message.splitlines()[0] == (
        "stopped: trapemu: a call gate (0x0053) into ring 1; only rings 0 and 3 are virtualized")


@pytest.mark.parametrize("mode,ring", [("trapemu", 1), ("trapemu", 2)])
def test_drivers_at_rings_1_and_2_are_refused(mode: str, ring: int) -> None:
    r = run_vm(build_kernel("rings12"), mode, cmdline=f"ring={ring}", max_instructions=LIMIT,
               quiet=True)
    assert output_lines(r.output.decode("latin-1").replace("\r\n", "\n")) == ["rings12: start"]
    cs = {1: 0x31, 2: 0x42}[ring]
    assert r.stop.reason == "unsupported", r.stop
    assert re.fullmatch(rf"stopped: {mode}: the guest (returns to|runs at) ring {ring} \({cs:#06x}:"
                        r"0x[0-9a-f]{8}\); only rings 0 and 3 are virtualized",
                        r.stop.message.splitlines()[0]), r.stop.message
