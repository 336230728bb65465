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


@pytest.mark.skipif(find_qemu() is None, reason="qemu-system-i386 is not installed")
def test_regressions_match_qemu():
    """tests/sysgen/regress.S: what the generator found, minimised (a single-stepped RET
    to a JMP under bt; INT n through a task gate with TF set on the bare PC; an IRET and
    a RETF to the kernel's ring that fault on the new CS under trapemu and bt; INT n from
    user code to a ring-3 handler, refused by both monitors)."""
    image = sysgen.build_steps((sysgen.SYSGEN_DIR / "regress.S").read_text(), "sysgen-regress")
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
    for platform in ("native", "trapemu", "bt"):
        assert sysgen.run(platform, image) == ref, platform
