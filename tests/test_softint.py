"""A user ``int n`` delivered in the hand-off (``vmm/softint.py``) is the delivery the
long way makes, in the corner cases too.

The teaching kernel's system calls run twice under a monitor: with the quick path and
without it (``Monitor.quick_ints``: every ``int 0x80`` a whole entry, the #GP its real
gate raises).  At the same system call of both runs the test changes what the
processor reads at the next ``int 0x80``, as a kernel's own store would (the IDT and the
TSS are not write-protected: the store makes no entry): the gate's handler, its DPL
(0: #GP(0x80 * 8 + 2)), its present bit (#NP(0x402)), the TSS's ESP0 (the frame pushed
elsewhere, or on a page that is not mapped: the push faults), or sets TF in the user's
EFLAGS.  The console, the CPU's whole state, every byte of guest RAM and the counters
must be the same; the quick path must have taken the changed gate and declined the
others (or never been offered them: single-step).
"""

from __future__ import annotations

import struct

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image
from ringvisor.hw.state import TF
from ringvisor.vmm import monitor as monmod
from ringvisor.vmm.runner import create_vm

AT = 10                    # the system call after whose hand-off the change is made


def _gate_phys(mon, vector: int) -> int:
    return mon.gm.peek((mon.vcpu.idt_base + vector * 8) & 0xFFFFFFFF)


def _change(case: str, m, mon) -> None:
    mem = m.mem
    if case == "handler":           # int 0x80 enters the kernel's #DE handler (kills)
        a, b = _gate_phys(mon, 0x80), _gate_phys(mon, 0)
        old = int.from_bytes(mem.read(a, 8), "little")
        new = int.from_bytes(mem.read(b, 8), "little")
        keep = 0x0000FF00FFFF0000                  # selector and access byte: int 0x80's
        mem.write(a, struct.pack("<Q", (old & keep) | (new & ~keep)))
    elif case in ("dpl0", "absent"):
        a = _gate_phys(mon, 0x80) + 5
        access = mem.read(a, 1)[0]
        mem.write(a, bytes([access & ~0x60 if case == "dpl0" else access & ~0x80]))
    elif case in ("esp0", "esp0-unmapped"):
        a = mon.gm.peek((mon.vcpu.tr_base + 4) & 0xFFFFFFFF)
        esp0 = int.from_bytes(mem.read(a, 4), "little")
        mem.write(a, struct.pack("<I", esp0 - 0x100 if case == "esp0" else 0x7FF00000))
    elif case == "tf":
        m.cpu.state.eflags |= TF


def _run(monkeypatch, mode: str, case: str, quick: bool) -> tuple:
    out = bytearray()
    m, mon = create_vm(read_image(image_path("kernel")), mode, "run=syscall iters=10",
                       engine="jit", output=out.extend)
    monkeypatch.setattr(type(mon), "quick_ints", quick)
    real = m.cpu.native.handoff
    calls = []

    def handoff(cpu, vector, err, soft):
        if vector == 0x80 and soft and cpu.cpl == 3:
            calls.append(cpu.state.icount)
            if len(calls) == AT:
                _change(case, m, mon)
                if case == "tf":
                    return None          # (offered with TF set: the CPU declines first)
        return real(cpu, vector, err, soft)

    m.cpu.native.handoff = handoff
    took = []
    quick_int = monmod.quick_int

    def traced(mon_, cpu, vector, at):
        ok = quick_int(mon_, cpu, vector, at)
        took.append((len(calls), ok))
        return ok

    monkeypatch.setattr(monmod, "quick_int", traced)
    m.run(3_000_000)
    return (out.decode(errors="replace"), m.cpu.get_state(), bytes(m.mem.ram[:mon.guest_ram]),
            dict(mon.traps), mon.stats["reflected"], m.cpu.stats["exceptions"],
            m.cpu.deliveries, [(a, str(e)) for a, e in m.cpu.exceptions]), took


@pytest.mark.parametrize("mode, case, taken", [
    ("trapemu", "handler", True), ("trapemu", "dpl0", False), ("trapemu", "absent", False),
    ("trapemu", "esp0", True), ("trapemu", "esp0-unmapped", False), ("trapemu", "tf", None),
    ("bt", "handler", False), ("bt", "dpl0", False), ("bt", "esp0-unmapped", False)])
def test_quick_int_is_the_long_way(monkeypatch, mode, case, taken):
    got, took = _run(monkeypatch, mode, case, True)
    want, none = _run(monkeypatch, mode, case, False)
    assert not none
    # the quick path took the calls before the change and decided the changed one
    assert (AT - 1, True) in took
    mine = [ok for n, ok in took if n == AT]
    assert mine == ([] if taken is None else [taken]), took
    if case in ("handler", "dpl0", "absent"):
        assert "killed" in want[0], want[0][-300:]
    for a, b in zip(got, want):
        assert a == b
