"""The guest's local APIC under the monitors: trap-and-emulate and binary translation
give it a virtual one (``ringvisor/vmm/vapic.py``), the monitor owning the physical APIC.

``tests/hwguests/apictimer`` drives the APIC timer (periodic while halted and while
busy, one-shot), the TPR, self-IPIs, the 8259A behind LINT0 and NMI IPIs; it prints the same
lines on ``qemu-system-i386 -kernel`` (QEMU 7.2), natively and under ``--mode trapemu``
and ``--mode bt``, where every access to its APIC page traps and is emulated.
"""

from __future__ import annotations

import functools

import pytest

from hwtests import EMULATOR_MAX_INSTRUCTIONS, PC_MONITORS, build_kernel, device_page_traps, output_lines, run_platform
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.vm import VmInfo, capture, restore
from ringvisor.vmm.runner import attach_monitor, create_vm, run_vm
from ringvisor.hw.machine import read_image

EXPECTED = [
    "apictimer: start",
    # CPUID.1:EDX.APIC and IA32_APIC_BASE (BSP, enabled: SDM Vol. 3 §10.4.4); the APIC as
    # the firmware leaves it (SVR enabled, vector 0xFF; LINT0 ExtINT)
    "cpuid apic=1 id=0 base=fee00900",
    "id=00000000 version=00050014 svr=000001ff lint0=00008700",
    # periodic mode reloads the initial count (§10.5.4); the mask bit stops it
    "periodic (halted): ticks=5 reloaded=1 lvt=00030040",
    "periodic (busy): ticked=1",
    "one-shot: counting down=1",
    "one-shot: fired=1 tccr=0",
    # a vector whose class is at or below the TPR's waits in IRR (§10.8.3.1)
    "tpr=50: held in irr=1 delivered=0 ppr=50",
    "tpr=0: delivered=1 irr=0",
    # the highest pending vector first; in service while its handler runs (§10.8.3)
    "self-ipi pending: irr 0x52=1 0x71=1 0x66=1",
    "self-ipi order: 71 66 52 isr-in-handler=1 ppr-in-handler=50 isr-after=0",
    # the handler's EOI and IRET let the lower vector in at once (§10.8.3.1, IRET)
    "after the handler's iret: taken=2 order 61 60",
    "tpr lowered with IF set: held=0 then taken=1",
    # an ExtINT vector comes from the 8259A and never enters the APIC's ISR (§10.5.1)
    "pic irq0 through lint0: ticks>=2 apic isr 0x20=0",
    # an NMI IPI is taken with IF clear (the frame's IF 0); one raised in the NMI
    # handler waits for the handler's IRET (§6.7.1): 2 inside, 3 after
    "nmi with IF clear: taken=1 if-in-frame=0",
    "nmi raised in its handler: in handler 2, after its iret 3",
    "apictimer: done",
]


@functools.lru_cache(maxsize=None)
def _vm(mode: str):
    return run_vm(build_kernel("apictimer"), mode, max_instructions=EMULATOR_MAX_INSTRUCTIONS,
                  quiet=True)


@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu),
                                      "jit", *PC_MONITORS])
def test_apic_timer_guest(platform):
    if platform in PC_MONITORS:
        r = _vm(platform)
        out, code = r.output.decode("latin-1").replace("\r\n", "\n"), r.status >> 1
        assert r.stop.reason == "exit", r.stop.message
    else:
        out, code = run_platform(platform, build_kernel("apictimer"))
    assert output_lines(out) == EXPECTED, out
    assert code == 0


@pytest.mark.parametrize("mode", PC_MONITORS)
def test_every_apic_access_traps_and_the_timer_notifies_the_monitor(mode):
    """Nothing of the guest's reaches the physical APIC: its page is never in the shadow
    or EPT (each access is one trap), and each virtual interrupt the guest took while busy
    or halted came through a notification on the physical APIC's monitor vector (under
    hvm: an external-interrupt exit, the vector injected on VM entry)."""
    r = _vm(mode)
    mon, phys = r.monitor, r.machine.lapic
    assert r.stop.reason == "exit"
    assert device_page_traps(mon) == mon.stats["apic_accesses"] > 50
    taken = mon.stats["interrupts injected"] if mode == "hvm" else mon.stats["virtual_interrupts"]
    assert taken >= 13
    # the physical APIC keeps the firmware's programming: its timer was never armed
    assert phys.s.lvt[0] == 0x10000 and phys.s.initial_count == 0 and not phys.s.isr
    assert mon.platform.vapic.apic.s.lvt[0] != phys.s.lvt[0]


def test_save_and_restore_keep_the_virtual_apic():
    """A VM saved under trap-and-emulate while its periodic APIC timer runs restores with
    the timer armed, and goes on to the same output as the run that was not saved."""
    image_path = build_kernel("apictimer")
    out = bytearray()
    m, mon = create_vm(read_image(image_path), "trapemu", output=out.extend)
    while mon.platform.vapic.apic._timer is None or b"periodic" not in out:
        m.stop = None
        assert m.run(20_000).reason == "limit"  # until the busy phase's periodic timer runs
    image = stream.pack_image(capture(m, mon, VmInfo(description="vapic")))
    before = bytes(out)
    m.stop = None
    m.run(EMULATOR_MAX_INSTRUCTIONS)
    r, rmon, _ = restore(stream.read_sections(image, "x"), attach_monitor, "jit", None, "x")
    more = bytearray()
    r.output = more.extend
    r.uart.output = r._serial_out
    r.run(EMULATOR_MAX_INSTRUCTIONS)
    assert bytes(out) == before + bytes(more) and b"apictimer: done" in more

