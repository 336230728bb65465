"""Para-virtualization: the teaching kernel built by pvcc, under hypercalls and events.

The reference is the unmodified kernel on the bare hardware: the para-virtual
build must print the same (untagged) output for every workload.  The hostile
side is a fuzzer guest issuing random hypercalls with random arguments; after
each run the hypervisor's own memory and invariants are checked.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.guests import build as guest_build
from ringvisor.guests.toolchain import Target, build
from ringvisor.vmm import layout as L
from ringvisor.vmm import run_vm
from ringvisor.vmm.evtchn import EventChannels
from ringvisor.abi import SHARED_INFO, EvtchnStat

LIMIT = 60_000_000
TESTS = Path(__file__).resolve().parent
PV_INCLUDE = TESTS.parent / "guests" / "include" / "pv"


@pytest.fixture(scope="module")
def kernels() -> tuple[Path, Path]:
    # the shipped images: test_guest_kernel checks they are what the sources build
    return guest_build.image_path("kernel"), guest_build.image_path("kernel-pv")


def untagged(out: bytes) -> list[str]:
    return [l for l in out.decode("utf-8", "replace").splitlines() if not l.startswith("[timing]")]


# every workload group, the fault programs and the self-test, one after the other in one
# boot (init runs each in a fresh process): one boot per group, natively and
# para-virtualized, checked nothing more and cost 3.3 s more CPU
WORKLOADS = "run=all-nano:20,all-lmbench:20,all-cpu:3,all-fault,hello,selftest"


def test_paravirt_output_is_native(kernels):
    native, pv = kernels
    ref = run_vm(native, "native", WORKLOADS, max_instructions=LIMIT, quiet=True)
    r = run_vm(pv, "paravirt", WORKLOADS, max_instructions=LIMIT, quiet=True)
    assert untagged(r.output) == untagged(ref.output)
    assert r.status == ref.status
    assert "init: 22 programs run, 3 failed" in untagged(r.output)       # the fault programs
    s = r.stats["monitor"]
    # the kernel asked instead of trapping: no privileged instruction was emulated
    # but port I/O, and interrupts arrived as events
    assert set(s["emulated"]) <= {"in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"}
    assert s["hypercalls"]["iret (23)"] > 0 and s["hypercalls"]["mmuext_op (26)"] > 0
    assert "selftest: preemption of a spinning child ok" in untagged(r.output)
    assert s["events_delivered"] > 0 and s["hypercalls"]["sched_op (29)"] > 0


def test_unmodified_kernel_is_refused_clearly(kernels):
    native, _ = kernels
    p = subprocess.run([sys.executable, "-m", "ringvisor", "run", str(native), "--mode", "paravirt",
                        "--max-instructions", "5000000"], capture_output=True, timeout=120)
    err = p.stderr.decode()
    assert p.returncode != 0 and "Traceback" not in err
    assert "para-virtualized" in err


# -- event channels, as Xen's two-level ABI defines them ---------------------------------------
class _Mem:
    def __init__(self) -> None:
        self.b = bytearray(0x2000)

    def read32(self, a): return int.from_bytes(self.b[a:a + 4], "little")
    def write32(self, a, v): self.b[a:a + 4] = (v & 0xFFFFFFFF).to_bytes(4, "little")
    def read8(self, a): return self.b[a]
    def write8(self, a, v): self.b[a] = v


def test_event_channel_pending_mask_and_selector():
    mem = _Mem()
    ev = EventChannels(mem, 0)
    a = ev.alloc_unbound(0x7FF0, 0x7FF0)
    b = ev.bind_interdomain(0x7FF0, a)
    assert ev.status(a)["status"] == EvtchnStat.interdomain
    pending = SHARED_INFO.offset("evtchn_pending")
    mask = SHARED_INFO.offset("evtchn_mask")
    # masked port: pending bit set, but no upcall
    mem.write32(mask, 1 << a)
    ev.send(b)
    assert mem.read32(pending) >> a & 1 and not ev.upcall_pending
    # unmasking a pending port notifies: selector bit and upcall_pending
    ev.unmask(a)
    assert ev.upcall_pending and mem.read32(SHARED_INFO.offset("vcpu_info[0].evtchn_pending_sel")) & 1
    # closing one end leaves the other unbound; sending on an unbound port is dropped
    ev.close(b)
    assert ev.status(a)["status"] == EvtchnStat.unbound
    ev.send(a)
    with pytest.raises(Exception):
        ev.send(b)                     # closed
    # a physical IRQ raised before anyone listens is delivered when bound
    ev.raise_pirq(4)
    port = ev.bind_pirq(4)
    assert mem.read32(pending) >> port & 1


# -- the hostile guest -------------------------------------------------------------------------
def build_pv_guest(name: str, out_dir: Path) -> Path:
    """A para-virtual test guest of tests/pvguests (hypercalls written by hand)."""
    root = TESTS / "pvguests"
    out = out_dir / f"{name}.elf"
    build(Target(name=name, sources=[root / "boot.S", *sorted((root / name).glob("*.[cS]"))],
                 linker_script=TESTS / "hwguests" / "link.ld", include_dirs=[PV_INCLUDE, root],
                 optimize="-O2"), out)
    return out


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    return build_pv_guest("pvfuzz", tmp_path_factory.mktemp("pvfuzz"))


def test_event_channels_as_a_guest_sees_them(tmp_path):
    image = build_pv_guest("pvevents", tmp_path)
    r = run_vm(image, "paravirt", "", max_instructions=5_000_000, quiet=True)
    assert r.stop.reason == "shutdown", r.stop
    got = dict(l.rsplit(" ", 1) for l in r.output.decode().splitlines())
    einval, eexist = "-22", "-17"
    assert got == {
        "magic ok": "1", "pages": str(32 << 8), "events masked at start": "1",
        "set_callbacks": "0", "set_callbacks ring 0 cs": einval,
        "alloc_unbound": "0", "bind_interdomain": "0", "ports differ": "1",
        "send": "0", "pending while masked": "1", "upcall_pending while masked": "0",
        "upcalls with the port masked": "0", "unmask": "0", "upcalls after unmask": "1",
        "the upcall saw port a": "1",
        "upcall_pending with events masked": "1", "upcalls with events masked": "1",
        "upcalls after the mask cleared": "2",
        "bind_virq timer": "0", "bind_virq timer again": eexist, "set_timer_op": "0",
        "block": "0", "woken by the timer port": "1", "no earlier than the deadline": "1",
        "bind_pirq 0": "0", "irq 0 there once bound": "1", "eoi": "0",
        "block without a timer": "0", "woken by irq 0": "1",
        "close": "0", "send on the unbound end": "0", "send on the closed port": einval,
        "status": "0", "status is unbound": "1", "send on port 0": einval, "bind_pirq 99": einval,
    }
    # after unmask, after the mask cleared, the timer, IRQ 0 once bound, IRQ 0 woken by
    assert r.stats["monitor"]["events_delivered"] == 5


def _monitor_state(m, mon) -> dict:
    """What the guest must never change: the real IDT, the monitor's page table, its own
    descriptors (the CPU's accessed bits aside) and its stack in the TSS."""
    own = bytearray(m.mem.read(mon.base + L.GDT + L.FIRST_RESERVED * 8, 8 * 8))
    for i in range(8):
        own[i * 8 + 5] &= ~1
    return {"idt": m.mem.read(mon.base + L.IDT, 256 * 8),
            "monitor_pt": m.mem.read(mon.base + L.MONITOR_PT, 0x1000),
            "own_gdt": bytes(own), "tss_stack": m.mem.read(mon.base + L.TSS + 4, 8)}


@pytest.mark.parametrize("seed", range(1, 9))
def test_hypercall_fuzzer_cannot_disturb_the_hypervisor(fuzzer, seed):
    from ringvisor.vmm.runner import create_vm
    from ringvisor.hw.machine import read_image
    out = bytearray()
    m, mon = create_vm(read_image(fuzzer), "paravirt", f"seed={seed} calls=400", 32,
                       output=out.extend)
    before = _monitor_state(m, mon)
    stop = m.run(20_000_000)               # returns: no exception escapes the hypervisor
    text = out.decode("latin-1")
    assert "pvfuzz: start" in text
    # the calls that would only end the guest itself are left out, so every seed runs
    # to its end and shuts down
    assert stop.reason == "shutdown", stop
    assert "refused" in text
    # EPERM: a frame it does not own; EFAULT: a pointer into the hypervisor; EINVAL
    assert "checks: -1 -14 -1 -22 -14 -1 -22" in text
    assert _monitor_state(m, mon) == before
    # nothing the guest can load reaches ring 0 or the hypervisor region
    gdt = m.mem.read(mon.base + L.GDT, L.FIRST_RESERVED * 8)
    for i in range(1, L.FIRST_RESERVED):
        raw = struct.unpack_from("<Q", gdt, i * 8)[0]
        if raw >> 47 & 1:
            assert (raw >> 45) & 3 != 0, f"GDT[{i}] is a ring-0 descriptor"
    # every shadow mapping points into the guest's RAM or at its fixed pages
    fixed = {fr >> 12 for fr, _ in mon.fixed.values()}
    for root in mon.shadow.roots.values():
        for table, _ in root.tables.values():
            for k in range(1024):
                e = m.mem.read32(table + 4 * k)
                if e & 1:
                    assert (e >> 12) < (32 << 8) or (e >> 12) in fixed
    assert sum(mon.hypercalls.values()) > 100


def test_vmbench_measures_paravirt():
    p = subprocess.run([sys.executable, "-m", "ringvisor", "vmbench", "--workload", "syscall",
                        "--mode", "paravirt", "--scale", "0.05", "--repeat", "1"],
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    line = [l for l in p.stdout.decode().splitlines() if l.startswith("syscall")][0]
    assert "native:" in line and "paravirt:" in line and "cyc," in line


def test_the_kernels_own_gates_are_in_its_trap_table(kernels):
    """pvcc's promise is an unmodified kernel: every present gate of its IDT, IRQ
    vectors too, can be invoked by its own ``int n`` as natively (a DPL-0 gate is
    the kernel ring's, DPL 1: #GP(vector * 8 + 2) from user code, SDM Vol. 2 INT n)."""
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm.errors import GuestFault
    from ringvisor.vmm.runner import create_vm
    _, pv = kernels
    m, mon = create_vm(read_image(pv), "paravirt", "run=hello", 32)
    for _ in range(50):                   # (a limit stop must be cleared to go on)
        if mon.trap_table:
            break
        m.stop = None
        m.run(200_000)
    # the teaching kernel (guests/kernel/trap.c): vectors 0-47 DPL 0, 0x80 DPL 3
    assert sorted(mon.trap_table) == list(range(48)) + [0x80]
    assert {v: fl & 3 for v, (fl, _, _) in mon.trap_table.items()} == \
        {**{v: 1 for v in range(48)}, 0x80: 3}
    v = mon.vcpu
    for cpl, vector in ((0, 0x20), (0, 3), (3, 0x80)):
        v.cpl = cpl
        cs, eip, _, size = mon.guest_gate(vector, True)
        assert (cs, eip, size) == (*mon.trap_table[vector][1:], 4)
    v.cpl = 3
    for vector in (0x20, 3):
        with pytest.raises(GuestFault) as e:
            mon.guest_gate(vector, True)
        assert (e.value.vector, e.value.error_code) == (13, vector * 8 + 2)


# What tests/pvguests/gdtguard prints, under --mode paravirt and as a domain (test_xen.py):
# Xen's answers (xen/arch/x86/mm.c: a PGT_seg_desc_page frame has no writable mapping)
_EINVAL = "-22"
GDTGUARD = {
    "set_trap_table": "0", "new_baseptr": "0", "paging on": "0", "probe fault": "1",
    "set_gdt of a writable page": _EINVAL, "update_va_mapping read-only": "0",
    "set_gdt of it read-only": "0", "update_va_mapping writable": _EINVAL,
    "mmu_update writable": _EINVAL, "mmu_update writable alias": _EINVAL,
    "mmu_update read-only alias": "0", "mmu_update alias gone": "0",
    "direct writable alias faults": "1", "its error code": "3",
    "its cr2 is the entry": "1", "the entry stays": "0",
    "direct read-only alias faults": "0", "the entry is": "1",
    "update_va_mapping b read-only": "0", "set_gdt of b": "0",
    "a writable again": "0", "b writable": _EINVAL,
    "direct writable alias of b faults": "1", "direct writable alias of a faults": "0",
    "set_gdt of a mapped writable": _EINVAL,
    "pin_l1 of a table mapping the gdt writable": _EINVAL,
    "pin_l2 of a directory bringing it in": _EINVAL, "new_baseptr of that directory": _EINVAL,
    "new_baseptr once it maps the gdt read-only": "0", "new_baseptr back": "0",
    # ringvisor's unpaged start (its RV_WRITE_CR): paging on validates the directory too
    "paging off": "0", "new_baseptr while paging is off": "0",
    "paging on over a writable mapping of the gdt": _EINVAL,
    "paging on once it is read-only": "0", "new_baseptr back at last": "0"}
# ... and in a domain of two vCPUs (test_xen.py), a vCPU context's directory likewise
GDTGUARD_SMP = {"initialise over a writable mapping of the gdt": _EINVAL,
                "initialise once it is read-only": "0"}


def test_gdt_frames_are_typed_as_in_xen(tmp_path):
    """tests/pvguests/gdtguard: a GDT frame takes Xen's PGT_seg_desc_page type, which no
    writable mapping may share (xen/arch/x86/mm.c): set_gdt of a page mapped writable,
    and mmu_update/update_va_mapping that would map a GDT page writable, fail with
    -EINVAL; a direct store into a page table that would is not done and the guest gets
    its #PF (present, write: 3), as from Xen's ptwr emulation; a set_gdt elsewhere
    releases the old page."""
    image = build_pv_guest("gdtguard", tmp_path)
    r = run_vm(image, "paravirt", "", max_instructions=5_000_000, quiet=True)
    assert r.stop.reason == "shutdown", r.stop
    lines = r.output.decode().splitlines()
    assert lines[0] == "gdtguard: start" and lines[-1] == "gdtguard: done", lines
    got = dict(l.rsplit(" ", 1) for l in lines[1:-1])
    assert got == GDTGUARD
