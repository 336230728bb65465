"""The hardware's hand-off of a guest's ``int n`` to the monitor (``hw/native.py``,
``Monitor._handoff``) changes nothing the machine can see.

The same guest runs twice under each monitor, once with the hand-off and once with
every fault delivered the architectural way (through the real IDT onto the monitor's
stack, the native entry, and the IRET back).  At every entry into the monitor the
monitor must see the same frame and the same guest registers and data segments, with
the same retired instruction count (the hand-off never puts the CPU in the monitor's
ring 0: that state is the monitor's own); after every resume the CPU's whole state
must be the same again; and at the end the console output, the CPU's whole state, its
counts of exceptions and gate transfers, the monitor's counts and the guest's RAM
must be equal.  Only the monitor's own stack page may differ (the long way leaves the
frame there).
"""

from __future__ import annotations

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image
from ringvisor.vmm import bt as btmod
from ringvisor.vmm import monitor as monmod
from ringvisor.vmm import paravirt as pvmod
from ringvisor.vmm.runner import create_vm

WORKLOADS = "run=syscall,divzero,forkwait iters=2"


def _state(cpu) -> tuple:
    st = cpu.state
    return (st.icount, st.eip, cpu.get_eflags(), tuple(st.regs), cpu.cpl, st.cr0, st.cr4,
            st.nmi_blocked, cpu.deliveries, cpu.stats["exceptions"],
            tuple((s.selector, s.base, s.limit, s.attr) for s in st.segs))


def _run(monkeypatch, mode: str, handoff: bool, slice_: int | None = None) -> tuple:
    out = bytearray()
    kernel = image_path("kernel-pv" if mode == "paravirt" else "kernel")
    m, mon = create_vm(read_image(kernel), mode, WORKLOADS, engine="jit", output=out.extend)
    if slice_ is not None:
        m.slice = slice_
    real = m.cpu.native.handoff
    assert real is not None
    taken = []

    def counting(cpu, vector, err, soft):
        h = real(cpu, vector, err, soft)
        if h is not None:
            taken.append((vector, err, soft))
        return h

    m.cpu.native.handoff = counting if handoff else None
    trace = []
    handle, resume = mon.handle, mon.resume
    quick = set()            # the entries taken in the hand-off (no frame, no ``handle``)
    quick_ints = []          # (the user ``int n``s among them: ``softint``)
    paths = [(monmod, "quick_int")]
    if mode in ("bt", "paravirt"):
        paths.append((btmod, "quick_return") if mode == "bt" else (pvmod, "quick_iret"))
    for module, name in paths:

        def traced_quick(mon_, cpu, *args, took=getattr(module, name), name=name):
            icount = cpu.state.icount
            at = len(trace)
            if not took(mon_, cpu, *args):
                assert len(trace) == at         # (declined: nothing done)
                return False
            quick.add(icount)
            if name == "quick_int":
                quick_ints.append(icount)
            trace.insert(at, ("entry", icount))
            if len(trace) == at + 1:            # (an IRET's resumes through ``resume``)
                trace.append(("resumed", _state(cpu)))
            return True
        monkeypatch.setattr(module, name, traced_quick)

    def traced_handle(cpu, f=None):
        trace.append(("entry", cpu.state.icount))
        f = handle(cpu, f)
        trace.append(("frame", f.err, f.eip, f.cs, f.eflags, f.ss, cpu.state.regs[4]))
        return f

    def traced_resume(f):
        resume(f)
        trace.append(("resumed", _state(m.cpu)))

    shadow_entry = mon.shadow_entry

    def traced_shadow_entry(f):
        # (called by every entry as soon as it holds the frame, before any work)
        st = m.cpu.state
        trace.append(("taken", f.err, f.eip, f.cs, f.eflags, f.esp, f.ss, tuple(st.regs),
                      tuple((s.selector, s.base, s.limit, s.attr)
                            for i, s in enumerate(st.segs) if i not in (1, 2))))
        return shadow_entry(f)

    mon.handle, mon.resume, mon.shadow_entry = traced_handle, traced_resume, traced_shadow_entry
    cpu_run = m.cpu.run
    ends = []                # where each run of the CPU stopped (at its bound, or halted)

    def run(until):
        cpu_run(until)
        ends.append(m.cpu.state.icount)

    m.cpu.run = run
    stop = m.run(20_000_000)
    assert stop.status == 1 or stop.reason == "exit", stop.message
    text = out.decode(errors="replace")
    for name in ("syscall", "divzero", "forkwait"):
        assert f"{name}: iters=2" in text, text[-400:]
    trace.append(("ends", ends))
    return (taken, trace, (quick, quick_ints), text, m.cpu.get_state(), bytes(m.mem.ram[:mon.guest_ram]),
            (dict(mon.traps), dict(mon.emulated), mon.stats["reflected"], dict(m.cpu.stats),
             [(a, str(e)) for a, e in m.cpu.exceptions], m.cpu.deliveries,
             dict(mon.tc.stats) if mode == "bt" else None,
             dict(mon.hypercalls) if mode == "paravirt" else None))


def _without_frames(trace: list, quick: set) -> list:
    """``trace`` less the frames of the entries at the retired-instruction counts of
    ``quick``."""
    out, skip = [], False
    for item in trace:
        if item[0] == "entry":
            skip = item[1] in quick
        elif skip and item[0] in ("taken", "frame"):
            continue
        out.append(item)
    return out


@pytest.mark.parametrize("mode, slice_", [("trapemu", None), ("bt", None), ("paravirt", None),
                                          ("bt", 7)])
def test_handoff_is_invisible(monkeypatch, mode, slice_):
    # (slices of 7 instructions: the run's bound falls everywhere, between a fault and
    # its handler too, where the CPU must not hand off: the handler's entry is the next
    # slice's first instruction, after the devices' due work)
    taken, trace, (quick, ints), text, cpu_state, ram, counts = _run(monkeypatch, mode, True,
                                                                     slice_)
    taken0, trace0, _, text0, cpu_state0, ram0, counts0 = _run(monkeypatch, mode, False, slice_)
    assert not taken0
    # the system calls' int 0x80 delivered in the hand-off (``softint``), and under bt
    # and paravirt the kernel's returns, indirect jumps, segment loads and IRETs
    # (``btreturn``; paravirt's ``iret`` hypercall: ``pvreturn``): the long way's
    # entries there are compared by their count and the CPU's whole state after them
    # (no frame is taken in the hand-off)
    assert len(ints) >= 2 * 2, ints
    assert len(quick) > 10 if mode in ("bt", "paravirt") else len(quick) == len(ints)
    trace0 = _without_frames(trace0, quick)
    # the workloads' system calls came the short way (each an int 0x80 the real gate
    # refuses, handed off as the #GP(0x80 * 8 + 2) it raises), and so did the page faults
    assert taken.count((0x80, None, True)) >= 2 * 2, taken[:5]
    assert any(v == 14 for v, _, _ in taken)
    if mode == "bt":         # and the translated code's callouts
        assert any(soft for _, _, soft in taken)
    assert len(trace) == len(trace0)
    for i, (a, b) in enumerate(zip(trace, trace0)):
        assert a == b, (i, a, b)
    assert text == text0
    assert counts == counts0          # the monitor's and the CPU's: exceptions, deliveries
    assert cpu_state == cpu_state0
    assert ram == ram0
