"""The system-level differential tester (tests/sysgen.py) on a few fixed seeds.

Each seed is a random kernel of system-level operations (segment loads, far transfers
across rings, gates, PTE changes, self-modifying stores, single steps, debug registers,
port I/O, CR0/CR4 bits); its serial output on ``qemu-system-i386 -kernel`` must be
the output natively and under trapemu and bt (under trapemu, without the steps that
hold one of Robin & Irvine's sensitive instructions).  Many more seeds:
``python tests/sysgen.py 0-299`` (docs/debugging.md).
"""

from __future__ import annotations

import pytest

import sysgen
from ringvisor.tools.qemu import find_qemu

SEEDS = (101, 104)          # --avoid-gaps, 10 steps each: about 1.5 s of CPU per seed with QEMU


def test_generator_is_deterministic():
    a, sa = sysgen.steps_source(7, 30)
    b, sb = sysgen.steps_source(7, 30)
    assert (a, sa) == (b, sb)
    assert a != sysgen.steps_source(8, 30)[0]
    kept, _ = sysgen.steps_source(7, 30, keep={3, 5})
    assert "# step 3\n" in kept and "# step 5\n" in kept and "# step 4\n" not in kept


def test_trapemu_comparison_leaves_out_only_sensitive_steps():
    lines = ["sysgen: start", "s001 f=000", "s002* f=000 b=0000004b", "s002* v=0d e=0000",
             "s003+ f=000 b=80010011", "end"]
    assert sysgen.comparable(lines, "trapemu", {2, 3}) == ["sysgen: start", "s001 f=000", "end"]
    assert sysgen.comparable(lines, "bt", {2, 3}) == lines[:4] + ["end"]
    assert sysgen.comparable(lines, "native", {2, 3}) == lines


@pytest.mark.skipif(find_qemu() is None, reason="qemu-system-i386 is not installed")
@pytest.mark.parametrize("seed", SEEDS)
def test_seed_matches_qemu(seed):
    assert sysgen.differences(seed, count=10, avoid_gaps=True) == {}


# seeds whose first 12 steps enter rings 1 and 2 (IRETs, far transfers, gates and faults
# there), compared under bt, which runs them, with QEMU (trapemu stops at them)
RINGS12_SEEDS = (4, 10)


@pytest.mark.skipif(find_qemu() is None, reason="qemu-system-i386 is not installed")
@pytest.mark.parametrize("seed", RINGS12_SEEDS)
def test_rings12_seed_matches_qemu_under_bt(seed):
    assert sysgen.differences(seed, ("bt",), count=12, rings12=True) == {}


@pytest.mark.skipif(find_qemu() is None, reason="qemu-system-i386 is not installed")
def test_regressions_match_qemu():
    """tests/sysgen/regress.S: what the generator found, minimised (a single-stepped RET
    to a JMP under bt; INT n through a task gate with TF set on the bare PC; an IRET and
    a RETF to the kernel's ring that fault on the new CS under trapemu and bt; INT n from
    user code to a ring-3 handler, refused by both monitors; INT n executed with RF set,
    directly and through a task gate, whose saved EFLAGS lacked RF on the bare PC;
    accesses through a 32-bit expand-down segment, one based in the monitors' region and
    one wrapping around 4 GiB, and a kernel stack in a 32-bit expand-down SS, whose loads
    both monitors refused; an instruction breakpoint with DR7 LEN 11, which bt missed; a
    descriptor made not present in place, in a GDT page with hot data beside it, loaded
    before any entry into the monitor, which both monitors loaded from the old copy;
    readable code segments that no CS may hold under a monitor -- based in its region, or
    leaving less than a page below it -- loaded into data registers and read, which both
    monitors refused)."""
    image = sysgen.build_steps(sysgen.fixed_steps("regress.S"), "sysgen-regress")
    ref = sysgen.run("qemu", image)
    # QEMU's lines are the SDM's: the trap after the RET at the JMP, one task line and no
    # trap in the task, the faulting returns with the flags of before and ESP untouched
    s0 = [ln for ln in ref if ln.startswith("s000 v=01")]
    assert len(s0) == 10 and [ln for ln in ref if ln.startswith("s001")][0].startswith("s001 task")
    assert [ln.split()[4:6] for ln in ref if ln.startswith(("s002 v", "s003 v"))] == \
        [["fl=00044", "sp=00203ff4"], ["fl=00044", "sp=00203ff8"]]
    # the ring-3 handler's load of the kernel's DS: the stub's frame on the user stack
    assert [ln.split()[1:4] + ln.split()[5:7] for ln in ref if ln.startswith("s004 v")] == \
        [["v=0d", "e=0010", "at=004b:00200163", "ss=0053", "sp=00205fbc"]]
    # a ring-3 handler that is user code: its frame on the user stack, back by IRET
    s5 = [ln.split() for ln in ref if ln.startswith("s005 f")][0]
    assert (s5[5], s5[8], s5[6], s5[4]) == ("b=00000016", "di=0000004b", "bp=00000002", "d=00205ff4")
    # the INT's EFLAGS image keeps RF, on the handler's stack and in the outgoing TSS
    assert [ln.split()[7] for ln in ref if ln.startswith("s006 f")] == ["si=00010002"]
    assert [ln.split()[10] for ln in ref if ln.startswith("tss:")] == ["00010002"]
    # the segments reaching the monitors' region: the values stored and read through them
    regs = {ln[:4]: dict(f.split("=") for f in ln.split()[1:]) for ln in ref
            if ln.startswith(("s008 f", "s009 f", "s00a f", "s00b f"))}
    assert (regs["s008"]["b"], regs["s008"]["c"]) == ("12345678", "12345679")
    assert (regs["s009"]["si"], regs["s009"]["bp"], regs["s009"]["a"]) == \
        ("12345679", "12345679", "abcdef01")
    assert (regs["s00a"]["a"], regs["s00a"]["b"]) == ("55aa55aa", "55aa5faa")
    # the instruction breakpoint with LEN 11 stops at its address (1 modulo 4)
    s12 = [ln.split() for ln in ref if ln.startswith("s00c v")]
    assert [(x[1], int(x[3].split(":")[1], 16) % 4) for x in s12] == [("v=01", 1)]
    # ... and the stack through an expand-down SS: what was pushed, read back and popped
    assert [regs["s00b"][k] for k in ("b", "c", "d", "di")] == \
        ["12345679", "12345679", "00000011", "0000005a"]
    # the descriptor made not present in place: #NP(selector) at its next load
    assert [ln.split()[1:3] + ln.split()[9:10] for ln in ref if ln.startswith("s00d v")] == \
        [["v=0b", "e=00a0", "b=00001313"]]
    # the code segments read as data: step 8's value through both, then the guest's #PF
    s14 = [ln.split() for ln in ref if ln.startswith("s00e v")][0]
    assert s14[1:3] + s14[6:7] + s14[8:9] + s14[11:13] == \
        ["v=0e", "e=0000", "cr2=ffbff810", "c=12345679", "si=12345679", "di=12345679"]
    for platform in ("native", "trapemu", "bt"):
        assert sysgen.run(platform, image) == ref, platform


def test_cut_segments_fault_as_on_the_bare_pc():
    """tests/sysgen/regress-sdm.S: accesses that segments reaching the monitors' region
    (a 32-bit expand-down one, one that wraps around 4 GiB) forbid: #GP(0) under the
    monitors as on the bare PC, which checks limits and types as the SDM says (QEMU does
    not: no reference there)."""
    image = sysgen.build_steps(sysgen.fixed_steps("regress-sdm.S"),
                               "sysgen-regress-sdm")
    ref = sysgen.run("native", image)
    faults = [ln.split()[:3] for ln in ref if " v=" in ln]
    assert faults == [["s000", "v=0d", "e=0000"], ["s001", "v=0d", "e=0000"],
                      ["s002", "v=0d", "e=0000"]]
    assert [f for ln in ref if ln.startswith("s002 v") for f in ln.split() if f[:2] == "b="] \
        == ["b=00000077"]
    for platform in ("trapemu", "bt"):
        assert sysgen.run(platform, image) == ref, platform


@pytest.mark.skipif(find_qemu() is None, reason="qemu-system-i386 is not installed")
def test_kernel_segment_loads_with_rpl_1():
    """tests/sysgen/regress-rpl.S: the kernel's loads of DS, ES, FS, GS (MOV from a
    register and from memory, POP, LFS), SS (MOV, POP) and CS (far JMP, far CALL) with
    a selector of RPL 1 for its DPL-0 descriptors: #GP(selector) on QEMU, on the bare
    PC and under bt (which let the data-segment MOV and POP through: ring 1 passes
    them).  Under trapemu they all succeed, ring compression's documented limit (the
    kernel's loads run on the real processor at ring 1, where RPL 1 passes every check
    RPL 0 does): what is pinned here is exactly that -- no fault, the rest the same."""
    image = sysgen.build_steps(sysgen.fixed_steps("regress-rpl.S"), "sysgen-regress-rpl")
    ref = sysgen.run("qemu", image)
    faults = [ln.split()[:3] for ln in ref if " v=" in ln]
    assert faults == [[f"s00{i}", "v=0d", "e=0008" if i >= 8 else "e=0010"]
                      for i in (0, 1, 2, 3, 4, 6, 7, 8, 9)]
    for platform in ("native", "bt"):
        assert sysgen.run(platform, image) == ref, platform
    te = sysgen.run("trapemu", image)
    assert not [ln for ln in te if " v=" in ln]
    done = [ln.split()[5] for ln in te if ln[:2] == "s0" and ln.split()[0] != "s005"]
    assert done == [f"b=0000100{i}" for i in (0, 1, 2, 3, 4, 6, 7, 8, 9)]
    assert [ln for ln in te if ln.startswith("s005")] == [ln for ln in ref if ln.startswith("s005")]


@pytest.mark.skipif(find_qemu() is None, reason="qemu-system-i386 is not installed")
def test_kernel_code_in_a_segment_that_wraps_around_4g():
    """tests/sysgen/regress-code.S: a higher-half kernel's "GDT trick" code segment (base
    0x40000000, offsets from 0xc0000000 reaching linear 0 up) runs under bt as on QEMU and
    the bare PC, and so does a far JMP to a code segment based in the region (the guest's
    own #PF at its unmapped address); under trapemu the real CS is cut below the region:
    the far JMP to the first is #GP(0), to the second #GP(selector), the documented limit."""
    image = sysgen.build_steps(sysgen.fixed_steps("regress-code.S"), "sysgen-regress-code")
    ref = sysgen.run("qemu", image)
    s0 = [ln.split() for ln in ref if ln.startswith("s000")]
    assert [x[3:6] + x[7:8] for x in s0] == [["c=00001616", "d=00001717", "b=00001515", "si=00001818"]]
    for platform in ("native", "bt"):
        assert sysgen.run(platform, image) == ref, platform
    assert [ln.split()[1:4] + ln.split()[6:7] for ln in ref if ln.startswith("s001 v")] == \
        [["v=0e", "e=0000", "at=00c0:00000010", "cr2=ffc00010"]]
    te = [ln.split()[:3] for ln in sysgen.run("trapemu", image) if " v=" in ln]
    assert te == [["s000", "v=0d", "e=0000"], ["s001", "v=0d", "e=00c0"]]


def test_user_esp_on_a_16_bit_stack_keeps_its_high_half():
    """Seed 7025, minimised: ring-3 code on a 16-bit stack segment (B=0), resumed by the
    monitor after an entry: the monitor's IRET to the 16-bit stack loaded only SP and left
    the high half of the monitor's own ESP in the guest's (0xffc16000 where the bare PC
    keeps 0x00206000 -- espfix's leak), under both monitors."""
    assert sysgen.differences(7025, keep=[13], sdm=True) == {}
