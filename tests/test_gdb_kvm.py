"""gdb under ``--mode kvm``: the host's processor runs the guest, KVM stops it for gdb.

Debian's gdb in batch mode against ``ringvisor run bench-sieve --mode kvm --gdb``:
a paging-free, polled guest with symbols, which KVM runs on every host that has
it (a nested kvm-pvm cannot page or take interrupts for a 32-bit guest:
tests/test_kvm.py).  A breakpoint at a symbol, registers, memory, single steps
checked against the ELF's own decoding, a hardware breakpoint, a watchpoint
(by the debug registers where this host's KVM reports data breakpoints, else
gdb's own, by single steps -- ``hw.kvmdebug.limits`` says which), Ctrl-C, and a
detach with breakpoints still set, after which the guest's output is that of an
undisturbed run.  Skips where /dev/kvm is absent or unusable.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw import kvm as K

sys.path.insert(0, str(Path(__file__).parent))
from test_gdb import (Client, accessors, free_port, gdb, instruction_ends, register,  # noqa: E402
                      start, symbol, symbol_span, untimed)

UNUSABLE = K.unusable_reason()
pytestmark = [pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed"),
              pytest.mark.skipif(UNUSABLE is not None, reason=UNUSABLE or "")]

KERNEL = "bench-sieve"
CMDLINE = "iters=2"
STATUS = 1                           # the bench guest writes 0 to isa-debug-exit
FLAG = "*(unsigned char *)((char *)&sieve_flags + 2)"


@pytest.fixture(scope="module")
def reference() -> list[str]:
    """The guest's output undisturbed: natively, which kvm must match (timing aside)."""
    from ringvisor.hw.machine import run_image
    out, status = run_image(image_path(KERNEL), cmdline=CMDLINE, max_instructions=100_000_000)
    assert status == STATUS
    return untimed(out.decode("latin-1"))


@pytest.fixture(scope="module")
def debug_limits() -> dict[str, str]:
    from ringvisor.hw.kvmdebug import limits
    return limits()


def run_with_gdb(commands: str, tmp_path, cmdline: str = CMDLINE) -> tuple[str, object, str, str]:
    port = free_port()
    vm = start(KERNEL, "kvm", port, "-S", cmdline=cmdline)
    try:
        out = gdb(KERNEL, port, commands, tmp_path)
        stdout, stderr = vm.communicate(timeout=120)
    finally:
        vm.kill()
    return out, vm, stdout.decode("latin-1"), stderr.decode()


def test_break_step_hbreak_and_detach(reference, tmp_path):
    path = image_path(KERNEL)
    entry, printer = symbol(path, "sieve_run"), symbol(path, "print")
    ends = instruction_ends(path, entry, 3)
    out, vm, stdout, stderr = run_with_gdb("""
info registers eip
break sieve_run
continue
info registers eip cs ss ds eflags cr0
x/4xb &sieve_flags
""" + "stepi\ninfo registers eip\n" * 3 + """x/1i $pc
hbreak print
continue
info registers eip
detach
""", tmp_path)
    # -S: before the first instruction, at the Multiboot entry
    eips = [int(x, 16) for x in re.findall(r"^eip\s+(0x[0-9a-f]+)", out, re.M)]
    assert eips[0] == symbol(path, "_start"), out
    assert "Breakpoint 1, " in out and "in sieve_run ()" in out, out
    # the breakpoint, one instruction per stepi (decoded from the ELF), the hbreak
    assert eips[1:] == [entry] + ends + [printer], out
    # flat protected mode as the bench guest set it up: its selectors, PE without PG
    assert (register(out, "cs"), register(out, "ss"), register(out, "ds")) == (0x08, 0x10, 0x10)
    assert register(out, "cr0") & 0x80000001 == 0x1
    assert register(out, "eflags") & 0x100 == 0, "the debugger's TF must not show"
    assert re.search(r"<sieve_flags>:\s+0x00\s+0x00\s+0x00\s+0x00", out), out
    assert "Hardware assisted breakpoint 2 at" in out and "in print ()" in out, out
    assert "detached" in out, out
    # detached with both breakpoints still set: the guest ran on, none the wiser
    assert vm.returncode == STATUS, stderr
    assert untimed(stdout) == reference
    assert stderr.strip() == "ringvisor: the debugger detached; the guest runs on"


def test_watchpoint(reference, debug_limits, tmp_path):
    """A watch on sieve_flags[2] from sieve_run's entry stops right after the store of
    the sieve's first loop (a data breakpoint is a trap: SDM Vol. 3 17.3.1.2), old value
    0, new value 1.  Where this host's KVM reports no data breakpoints (kvm-pvm) the
    hardware watchpoint is refused (test_ctrl_c_...) and gdb watches by single steps."""
    path = image_path(KERNEL)
    software = "watchpoints" in debug_limits
    out, vm, stdout, stderr = run_with_gdb(f"""
break sieve_run
continue
delete
set can-use-hw-watchpoints {0 if software else 1}
watch {FLAG}
continue
info registers eip
detach
""", tmp_path)
    m = re.search(rf"^(Hardware )?[Ww]atchpoint 2: {re.escape(FLAG)}\n\nOld value = 0 '\\000'\n"
                  r"New value = 1 '\\001'\n", out, re.M)
    assert m, out
    assert bool(m.group(1)) == (not software), out
    eip = register(out, "eip")
    # right after an instruction of sieve_run whose memory operand is sieve_flags
    assert eip in accessors(path, "sieve_run", "sieve_flags"), out
    assert vm.returncode == STATUS, stderr
    assert untimed(stdout) == reference


def test_ctrl_c_registers_memory_limits_and_kill(debug_limits):
    """Ctrl-C stops a guest running on the host's CPU (the stub is polled at the vCPU's
    timer kicks); registers and memory at the stop, what the debug registers cannot
    hold refused (one line on stderr) and the VM still stopped, then kill."""
    port = free_port()
    vm = start(KERNEL, "kvm", port, cmdline="iters=100000000")
    try:
        c = Client(port)
        assert c.ask(b"qSupported:swbreak+;hwbreak+").startswith(b"PacketSize=")
        assert c.ask(b"?").startswith(b"T05")
        c.raw(b"$c#63")
        c.raw(b"\x03")                                      # Ctrl-C
        stop = c.packet()
        assert stop.startswith(b"T02"), stop
        eip = int.from_bytes(bytes.fromhex(c.ask(b"p8").decode()), "little")
        assert 0x100000 <= eip < symbol(image_path(KERNEL), "__bss_start")
        code = bytes.fromhex(c.ask(b"m%x,4" % eip).decode())
        assert len(code) == 4
        assert c.ask(b"X%x,4:" % eip + code.replace(b"}", b"}]").replace(b"#", b"}\x03")
                     .replace(b"$", b"}\x04").replace(b"*", b"}\x0a")) == b"OK"
        assert bytes.fromhex(c.ask(b"m%x,4" % eip).decode()) == code
        # x86 cannot break on reads alone (and kvm-pvm on no data access at all)
        assert c.ask(b"Z3,105000,4").startswith(b"E")
        if "breakpoints" in debug_limits:                   # breakpoints take debug registers
            assert [c.ask(b"Z1,%x,1" % (0x100000 + i)) for i in range(5)] == [b"OK"] * 4 + [b"E0e"]
        assert int.from_bytes(bytes.fromhex(c.ask(b"p8").decode()), "little") == eip  # still there
        c.raw(b"$k#6b")
        stdout, stderr = vm.communicate(timeout=120)
    finally:
        vm.kill()
    assert vm.returncode == 0, stderr.decode()
    lines = stderr.decode().strip().splitlines()
    assert lines[-1] == "ringvisor: killed by the debugger", lines
    from ringvisor.hw.kvmdebug import limits
    why = limits().get("watchpoints", "x86 debug registers cannot break on reads alone")
    assert f"ringvisor: watchpoint at 0x105000 refused: {why}" in lines, lines


def port_output(path) -> tuple[int, int]:
    """putc_serial's ``out`` to the UART and the instruction after it (decoded from the ELF)."""
    import iced_x86 as ix
    from elftools.elf.elffile import ELFFile
    start_, size = symbol_span(path, "putc_serial")
    with open(path, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        code = text.data()[start_ - text["sh_addr"]:][:size]
    out = next(i for i in ix.Decoder(32, code, ip=start_) if i.mnemonic == ix.Mnemonic.OUT)
    return out.ip32, out.next_ip32


def test_continue_from_a_breakpoint_and_step_over_port_output(reference):
    """A hardware breakpoint on the ``out`` that writes each character: continue from it
    runs that ``out`` once and stops at the next character's (the breakpoint is passed
    once, as EFLAGS.RF passes it); a single step of the ``out`` -- an IO exit served in
    the middle of the instruction -- stops right after it, not one instruction later."""
    path = image_path(KERNEL)
    out_at, after = port_output(path)
    port = free_port()
    vm = start(KERNEL, "kvm", port, "-S", cmdline=CMDLINE)
    try:
        c = Client(port)
        assert c.ask(b"qSupported:swbreak+;hwbreak+").startswith(b"PacketSize=")
        assert c.ask(b"Z1,%x,1" % out_at) == b"OK"
        chars = []
        for _ in range(3):
            c.raw(b"$c#63")
            assert c.packet().startswith(b"T05hwbreak:;"), "a stop at the hardware breakpoint"
            regs = bytes.fromhex(c.ask(b"g").decode())
            assert int.from_bytes(regs[32:36], "little") == out_at
            chars.append(regs[0])                          # AL: the character it writes
        assert bytes(chars) == b"sie"                      # "sieve: ..." one at a time
        c.raw(b"$s#73")
        assert c.packet().startswith(b"T05")
        assert int.from_bytes(bytes.fromhex(c.ask(b"p8").decode()), "little") == after
        assert c.ask(b"D") == b"OK"
        stdout, stderr = vm.communicate(timeout=120)
    finally:
        vm.kill()
    assert vm.returncode == STATUS, stderr.decode()
    assert untimed(stdout.decode()) == reference


class FakeVcpu:
    """What KvmDebug asks of a vCPU, recorded (the software-breakpoint path, for hosts
    whose KVM reports a planted int3; kvm-pvm does not)."""

    def __init__(self) -> None:
        self.told: list[tuple[int, list[int]]] = []
        self.dr6 = 0xFFFF0FF0

    def set_guest_debug(self, control, debugreg) -> None:
        self.told.append((control, list(debugreg)))

    def debugregs(self):
        return K.kvm_debugregs(dr6=self.dr6)

    def set_debugregs(self, regs) -> None:
        self.dr6 = regs.dr6


def test_planted_int3_is_the_guests_byte_between_runs(monkeypatch):
    """int3 bytes are in guest memory only while the vCPU runs; a byte the guest rewrote
    meanwhile is left as the guest wrote it; a #BP at a planted address is the
    debugger's, any other goes back to the guest (INJECT_BP), as does a #DB that is not
    a step or one of the debugger's debug registers (INJECT_DB, with its DR6)."""
    from ringvisor.hw import kvmdebug as D
    from ringvisor.hw.hostdebug import HostDebug, HostEvent
    from ringvisor.hw.memory import PhysicalMemory
    monkeypatch.setattr(D, "limits", lambda: {})
    mem = PhysicalMemory(1 << 20)
    mem.write(0x1000, bytes(range(0x10, 0x20)))
    host, vcpu = HostDebug(), FakeVcpu()
    dbg = D.KvmDebug(vcpu, mem, host, lambda lin: lin - 0x8000)     # a mapping of its own
    host.set_breakpoints({0x9002, 0x9005})
    host.set_watchpoints([(0x9100, 4, "write")])
    dbg.arm()
    assert mem.read(0x1000, 8) == bytes([0x10, 0x11, 0xCC, 0x13, 0x14, 0xCC, 0x16, 0x17])
    control, regs = vcpu.told[-1]
    assert control == K.GUESTDBG_ENABLE | K.GUESTDBG_USE_SW_BP | K.GUESTDBG_USE_HW_BP
    assert regs[0] == 0x9100 and regs[7] == 0xD0602   # G0, R/W0 01b, LEN0 11b (SDM 17.2.4)
    bp = K.kvm_debug_exit_arch(exception=K.BP_VECTOR, pc=0x9005)
    assert dbg.debug_exit(bp, 0x9005) == HostEvent("breakpoint", 0x9005)
    assert dbg.debug_exit(K.kvm_debug_exit_arch(exception=K.BP_VECTOR), 0x9007) is None
    assert vcpu.told[-1][0] & K.GUESTDBG_INJECT_BP
    watch = K.kvm_debug_exit_arch(exception=K.DB_VECTOR, dr6=0xFFFF0FF1)
    assert dbg.debug_exit(watch, 0x9010) == HostEvent("write", 0x9100)
    own = K.kvm_debug_exit_arch(exception=K.DB_VECTOR, dr6=0xFFFF4FF0)   # the guest's TF
    assert dbg.debug_exit(own, 0x9010) is None
    assert vcpu.told[-1][0] & K.GUESTDBG_INJECT_DB and vcpu.dr6 == 0xFFFF4FF0
    mem.write(0x1005, b"\x90")                       # the guest rewrote one of them
    dbg.disarm()
    assert mem.read(0x1000, 8) == bytes([0x10, 0x11, 0x12, 0x13, 0x14, 0x90, 0x16, 0x17])
    host.set_breakpoints(())                          # the debugger left: KVM is told so
    host.set_watchpoints(())
    dbg.arm()
    assert vcpu.told[-1] == (0, [0] * 8)


def test_a_stepped_hlt_halts():
    """stepi over HLT leaves the guest halted after it, whichever way this host's KVM
    reports the step (KVM_EXIT_HLT on VT-x, only the single-step trap on kvm-pvm)."""
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm
    from ringvisor.vmm.guestview import view_of
    m, _ = create_vm(read_image(image_path(KERNEL)), "kvm", "", 32, output=lambda b: None)
    try:
        view = view_of(m)
        eip = view.registers()["eip"]
        view.write(eip, b"\x90\xf4")                    # nop; hlt -- at the entry point
        view.step()
        assert view.registers()["eip"] == eip + 1 and not view.halted
        view.step()
        assert view.registers()["eip"] == eip + 2 and view.halted
        assert view.event() is None
    finally:
        m.close()
