"""Save and restore: a VM stopped anywhere and restored runs on exactly as if never stopped.

The reference is the same guest run without a stop; "exactly" is byte for byte,
``[timing]`` lines included (virtual time is the instruction count), in every
structure, across engines (saved under one, restored under the other).  Stop
points are found in the reference run itself: while a timer interrupt is being
serviced, right after a HLT (the CPU halted), with serial input waiting in the
UART, and in the middle of a REP string instruction.
"""

from __future__ import annotations

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import Machine, read_image
from ringvisor.hw.state import Segment
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.vm import VmInfo, capture, restore
from ringvisor.vmm import attach_monitor, create_vm

# input for the teaching kernel's shell: the first part waits in the UART from the start;
# then the shell idles (halted between timer ticks) until the second part arrives, at an
# instruction count the reference run chooses and every other run repeats
SCRIPT = b"hello\nsieve 1\n"
LATER = b"fault-div\nuptime\nstats\nexit 5\n"
LIMIT = 50_000_000
# the teaching kernel's GDT beside its counters (its own page by default): the monitors'
# adaptive state for a GDT page shared with hot data is then part of every run here
KERNEL_CMDLINE = "gdt=shared"


def image(mode: str) -> bytes:
    return read_image(image_path("kernel-pv" if mode == "paravirt" else "kernel"))


def boot(mode: str, output, engine: str = "jit"):
    m, mon = create_vm(image(mode), mode, KERNEL_CMDLINE, 32, engine, output=output)
    m.feed_input(SCRIPT)
    return m, mon


def run_to(m, n: int):
    stop = m.run(n - m.cpu.state.icount)
    assert stop.reason == "limit" and m.cpu.state.icount == n, stop
    m.stop = None


def finish(m, feed_at: int):
    """Run to the end, the later input arriving at instruction ``feed_at``."""
    if m.cpu.state.icount < feed_at:
        run_to(m, feed_at)
        m.feed_input(LATER)
    return m.run(LIMIT)


class Reference:
    """One uninterrupted run, and the instruction counts at which interesting things happened."""

    def __init__(self, mode: str) -> None:
        out = bytearray()
        m, mon = boot(mode, out.extend)
        self.interrupts: list[int] = []
        self.halts: list[int] = []
        cpu = m.cpu
        deliver, idle = cpu.deliver_interrupt, m._idle

        def on_interrupt():
            self.interrupts.append(cpu.state.icount)
            deliver()

        def on_idle():
            if cpu.state.icount not in self.halts:
                self.halts.append(cpu.state.icount)
            idle()
        cpu.deliver_interrupt, m._idle = on_interrupt, on_idle
        self.exits: list[int] = []
        if mode == "hvm":
            # the guest's interrupts are injected on VM entry (the monitor acknowledges its
            # virtual PIC), and the monitor runs at HOST_RIP after each VM exit
            ack = mon.platform.acknowledge

            def on_ack():
                self.interrupts.append(cpu.state.icount)
                return ack()
            mon.platform.acknowledge = on_ack
            regions = cpu.native.regions
            for i, (start, end, handler, name) in enumerate(regions):
                if handler == mon.exit:
                    def on_exit(c, handler=handler):
                        # (a native entry has counted itself when its handler runs:
                        # codecache._native_entry; the CPU was at HOST_RIP one before)
                        self.exits.append(cpu.state.icount - 1)
                        handler(c)
                    regions[i] = (start, end, on_exit, name)
            cpu.cache.flush()
        # until the shell has read the first part and waits for more
        while not self.halts or cpu.state.icount < self.halts[0] + 3000:
            m.stop = None
            assert m.run(20_000).reason == "limit"
        self.feed_at = cpu.state.icount
        m.stop = None
        m.feed_input(LATER)
        self.stop = m.run(LIMIT)
        self.output = bytes(out)
        self.icount = cpu.state.icount


_refs: dict[str, Reference] = {}


def reference(mode: str) -> Reference:
    if mode not in _refs:
        _refs[mode] = Reference(mode)
    return _refs[mode]


def stop_points(ref: Reference) -> dict[str, int]:
    """Three points cover the situations (and each restored run is a long one, so there
    are no more): the CPU halted, an interrupt being serviced, and input waiting in the
    UART (fed two instructions before, not yet read by the guest)."""
    idle_ticks = [i for i in ref.interrupts if ref.halts[0] < i < ref.feed_at]
    points = {
        "halted": ref.halts[0],
        "servicing an interrupt": idle_ticks[0] + 5,
        "later input waiting": ref.feed_at + 2,
    }
    if ref.exits:
        # under hvm: in VMX root operation, the guest's VM exit taken and its handler next
        points["after a VM exit"] = next(i for i in ref.exits if i > ref.feed_at + 2)
    return points


@pytest.mark.parametrize("mode", ["native", "trapemu", "bt", "paravirt", "hvm"])
def test_save_restore_is_one_uninterrupted_run(mode):
    ref = reference(mode)
    assert ref.stop.reason == "exit" and ref.stop.status == 11, ref.output
    assert b"[timing] ticks " in ref.output
    out = bytearray()
    m, mon = boot(mode, out.extend)
    seen = set()
    images = []
    for what, n in sorted(stop_points(ref).items(), key=lambda kv: kv[1]):
        if n > ref.feed_at and m.cpu.state.icount < ref.feed_at:
            run_to(m, ref.feed_at)
            m.feed_input(LATER)
        run_to(m, n)
        # under trapemu and bt the guest's view of the PIC is the monitor's (vmm/platform.py)
        pic = mon.platform.vpic if mode in ("trapemu", "bt", "hvm") else m.pic
        if pic.master.s.isr or (mode == "paravirt" and what.startswith("servicing")):
            seen.add("interrupt")
        if m.cpu.state.halted:
            seen.add("halted")
        if m.uart.has_pending_input():
            seen.add("input")
        if mode == "hvm" and not m.cpu.nonroot:
            seen.add("root")
        images.append((what, n, len(out), stream.pack_image(capture(m, mon, VmInfo()))))
    finish(m, ref.feed_at)
    # stopping and going on is invisible ...
    assert bytes(out) == ref.output
    assert seen == {"halted", "input", "interrupt"} | ({"root"} if mode == "hvm" else set()), seen
    # ... and so is saving, then restoring on another machine under either engine
    for k, (what, n, before, data) in enumerate(images):
        rest = bytearray()
        engine = "interp" if k % 2 else "jit"
        m2, mon2, info = restore(stream.read_sections(data), attach_monitor, engine, rest.extend)
        assert info.icount == n and info.mode == mode
        stop = finish(m2, ref.feed_at)
        assert (stop.reason, stop.status) == ("exit", 11), f"{what}: {stop.message}"
        assert ref.output[:before] + bytes(rest) == ref.output, f"restored {what} (at {n}) under {engine}"
        assert m2.cpu.state.icount == ref.icount


# -- the monitors' own state on every path a VM takes --------------------------------------
# A GDT page shared with hot data (the teaching kernel's with gdt=shared) has rounds of
# stores that decide whether the next store is emulated or relaxes the page (vmm/gdt.py
# ``ripe``); a relaxed round costs one more entry into the monitor, an instruction of
# virtual time.  A path that dropped them (they were once TRANSIENT) continued the VM a
# few instructions off.
PATHS_CMDLINE = "run=pgfault,syscall iters=300 " + KERNEL_CMDLINE
PATHS_AT = 200_000              # rounds bursting, and stores due within PATHS_AHEAD
PATHS_AHEAD = 40_000


def _runs_as(m, mon, copy, mon_c, what: str) -> None:
    """``copy`` of ``m`` taken earlier, run to where ``m`` is now, is where it is."""
    copy.stop = None
    run_to(copy, m.cpu.state.icount)
    a, b = m.cpu.state, copy.cpu.state
    assert (b.regs, b.eip, b.eflags) == (a.regs, a.eip, a.eflags), what
    assert mon_c.traps == mon.traps, what
    assert mon_c.gdt.get_state() == mon.gdt.get_state(), what


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_clone_snapshot_and_replay_carry_the_gdt_rounds(mode, tmp_path):
    """A clone, a snapshot reverted and a replayed checkpoint run on as the VM they were
    taken from (save/restore above, migration in test_migration and test_postcopy)."""
    from ringvisor.lifecycle.replay import record, replay
    from ringvisor.lifecycle.snapshots import SnapshotTree
    from ringvisor.lifecycle.vm import clone
    from ringvisor.vmm.gdt import ROUNDS
    m, mon = create_vm(image(mode), mode, PATHS_CMDLINE, 32)
    run_to(m, PATHS_AT)
    rounds = {k: getattr(mon.gdt, k) for k in ROUNDS}
    assert rounds["bursts"] and rounds != ROUNDS, "no rounds to carry at this point"
    info = VmInfo(cmdline=PATHS_CMDLINE)
    copies = {"clone": clone(m, mon, info, 1, attach_monitor)[0]}
    tree = SnapshotTree(tmp_path / "store")
    tree.create("s", m, mon, info)
    copies["snapshot"] = tree.revert("s", attach_monitor)
    # the VM runs on, recorded with a checkpoint half-way
    stop, rec, _ = record(m, mon, info, budget=PATHS_AHEAD, interval=PATHS_AHEAD // 2)
    assert stop.reason == "limit" and len(rec.checkpoints) == 2
    half = PATHS_AT + PATHS_AHEAD // 2
    m3, mon3, _, _, at, _ = replay(rec, attach_monitor, to=half)
    assert at == half == m3.cpu.state.icount
    copies["replay"] = (m3, mon3, None)
    for what, (m2, mon2, _) in copies.items():
        _runs_as(m, mon, m2, mon2, what)


def flat_machine(code: bytes, engine: str) -> Machine:
    """1 MiB, flat protected mode, ``code`` at 0x1000."""
    m = Machine(1, engine)
    m.mem.write(0x1000, code)
    st = m.cpu.state
    for i in range(6):
        st.segs[i] = Segment(0x08 if i == 1 else 0x10, 0, 0xFFFFFFFF, 0xC09B if i == 1 else 0xC093)
    st.cr0, st.eip = 1, 0x1000
    m.cpu.mode_changed()
    return m


# mov ecx, 3000; mov esi, 0x10000; mov edi, 0x20000; rep movsb; mov al, 'k'; out 0xe9... (see below)
REP_CODE = bytes([0xB9, 0xB8, 0x0B, 0, 0,              # mov ecx, 3000
                  0xBE, 0, 0, 1, 0,                    # mov esi, 0x10000
                  0xBF, 0, 0, 2, 0,                    # mov edi, 0x20000
                  0xF3, 0xA4,                          # rep movsb
                  0xB0, 0x21, 0xE6, 0xF4])             # mov al, 0x21; out 0xf4, al (debug exit)


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_stop_in_the_middle_of_rep_movs(engine):
    """A REP string instruction stops between iterations at the exact count (SDM Vol. 2B, REP:
    the registers hold the progress, EIP the instruction) and resumes from a saved image."""
    ref = flat_machine(REP_CODE, engine)
    ref.mem.write(0x10000, bytes(range(256)) * 12)
    assert ref.run().reason == "exit"
    m = flat_machine(REP_CODE, engine)
    m.mem.write(0x10000, bytes(range(256)) * 12)
    assert m.run(1234).reason == "limit"
    st = m.cpu.state
    # three MOVs, then 1231 iterations: EIP still at the REP, ECX holds what is left
    assert st.icount == 1234 and st.eip == 0x100F and st.regs[1] == 3000 - 1231
    data = stream.pack_image(capture(m))
    other = "interp" if engine == "jit" else "jit"
    m2, _, _ = restore(stream.read_sections(data), None, other)
    stop = m2.run()
    assert (stop.reason, stop.status) == ("exit", (0x21 << 1) | 1)
    assert m2.mem.ram == ref.mem.ram
    assert m2.cpu.get_state() == ref.cpu.get_state()
