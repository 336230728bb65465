"""What a debugger sees of a VM: the guest, never the monitor.

The gdb stub (``ringvisor.debug.gdbstub``) and the console's monitor prompt
(``ringvisor.ui.hmp``) reach a VM through this one small interface: the guest's
registers as the guest believes them, its memory by guest virtual address
through the guest's own page tables, one guest instruction at a time, and
breakpoints and watchpoints on guest addresses.

On the bare machine (:class:`NativeView`) that is the CPU itself.  Under a
monitor (:class:`MonitorView`) the real CPU holds something else -- the guest
kernel at ring 1, the monitor's descriptor tables and page tables, translated
code under binary translation -- and the view undoes it with the monitor's own
guest-view hooks (``Monitor.view_eip``, ``guest_if``, ``at_guest_boundary``,
``debug_addresses``), never by reading the monitor's internals:

* registers: general registers are the real ones (the guest runs on its own
  stack); EIP is the guest's (binary translation maps a translation-cache
  address back); CS and SS in the guest kernel are the selectors the guest
  loaded (ring 0), not the ring-1 ones the monitor runs it with; EFLAGS carries
  the virtual IF and IOPL; CR0, CR2, CR3, CR4 and the descriptor-table
  registers are the virtual CPU's;
* memory: the guest's page tables, walked without setting accessed or dirty
  bits; addresses the guest cannot map are errors, and the monitor's region
  is never reachable;
* a single step is one *guest* instruction: real instructions are executed
  until the real CPU is back between two guest instructions and the guest's
  state moved -- through a trap into the monitor and its emulation, a shadow
  page-table fill (which the guest never sees), a translation's chaining stub.

Under hardware-assisted virtualization (:class:`HvmView`) the processor holds the
guest's own registers while it runs in VMX non-root operation; only its control
registers and its memory go through the monitor (``hvm.py``).
"""

from __future__ import annotations

import copy

from ringvisor.hw.state import IF, REG_NAMES, SEG_NAMES, TF
from ringvisor.hw.x87 import ES

from . import layout as L
from .guestmem import GuestBadFrame, GuestPageFault

# the registers a view reports, in this order (names as gdb and QEMU's monitor print them)
REGISTERS = REG_NAMES + ("eip", "eflags", "cs", "ss", "ds", "es", "fs", "gs",
                         "cr0", "cr2", "cr3", "cr4", "gdt_base", "gdt_limit",
                         "idt_base", "idt_limit", "ldtr", "tr")
SEGMENT_ORDER = ("cs", "ss", "ds", "es", "fs", "gs")
MAX_REAL_STEPS = 10_000      # real instructions one guest step may take (see step())


class GuestViewHooks:
    """What a monitor answers for the guest view (``Monitor`` inherits these defaults;
    binary translation and para-virtualization answer some differently)."""

    def view_eip(self, eip: int, cs: int) -> int:
        """The guest EIP at which the real CPU, at ``cs:eip`` in guest code, stands."""
        return eip

    def guest_if(self, value: bool | None = None) -> bool:
        """The guest's EFLAGS.IF (set it if ``value`` is given)."""
        if value is not None:
            self.vcpu.vif = value
        return self.vcpu.vif

    def at_guest_boundary(self) -> bool:
        """The real CPU stands between two guest instructions: not at a monitor entry
        point (ring 0), not inside an instruction the monitor single-steps (a store it
        lets through, an interrupt shadow: ``stepping.py``)."""
        return self.cpu.cpl != 0 and self.step is None and self.shadow_at is None

    def view_eflags(self, real: int) -> int:
        """The guest's EFLAGS for the real ones: its virtual IF and IOPL, and no TF the
        monitor set for a step of its own."""
        if self.step is not None and not self.step.guest_tf:
            real &= ~TF
        return (self.vcpu.eflags_view(real) & ~IF) | (IF if self.guest_if() else 0)

    def debug_addresses(self, addresses: set[int]) -> set[int]:
        """The real linear addresses at which guest code at ``addresses`` runs."""
        return set(addresses)


class ViewError(Exception):
    """The guest has no such thing (unmapped memory, a register a view cannot write)."""


class GuestView:
    """The common part: memory page by page, breakpoints, watchpoints, events."""

    name = "native"

    def __init__(self, machine) -> None:
        self.machine = machine
        self.cpu = machine.cpu
        self.mem = machine.mem

    # -- memory ---------------------------------------------------------------------------
    def phys(self, lin: int) -> int:
        raise NotImplementedError

    def _phys_checked(self, lin: int) -> int:
        try:
            p = self.phys(lin & 0xFFFFFFFF)
        except (GuestPageFault, GuestBadFrame):
            p = None
        if p is None or not self.mem.is_ram(p):
            raise ViewError(f"guest address {lin & 0xFFFFFFFF:#010x} is not mapped")
        return p

    def read(self, addr: int, n: int) -> bytes:
        """Guest memory at guest virtual ``addr``: as much as is mapped from there
        (a ViewError if not even the first byte is)."""
        out = bytearray()
        while n > 0:
            chunk = min(n, 0x1000 - (addr & 0xFFF))
            try:
                p = self._phys_checked(addr)
            except ViewError:
                if not out:
                    raise
                break
            out += self.mem.read(p, chunk)
            addr = (addr + chunk) & 0xFFFFFFFF
            n -= chunk
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Write guest memory (read-only pages too: a debugger plants breakpoints in code)."""
        parts, off = [], 0
        while off < len(data):
            a = (addr + off) & 0xFFFFFFFF
            chunk = min(len(data) - off, 0x1000 - (a & 0xFFF))
            parts.append((self._phys_checked(a), data[off:off + chunk]))
            off += chunk
        for p, d in parts:
            self.mem.write(p, d)        # drops translated code built from those bytes
            self.written(p, len(d))

    def written(self, phys: int, n: int) -> None:
        pass

    # -- registers ------------------------------------------------------------------------
    def registers(self) -> dict[str, int]:
        raise NotImplementedError

    def set_register(self, name: str, value: int) -> None:
        raise NotImplementedError

    def fpu(self):
        """The guest's x87/MMX/SSE state (``hw.state.FpuState``): the CPU's own in every
        mode: the monitors run no x87 or SSE code of their own."""
        return self.cpu.state.fpu

    def fpu_shown(self):
        """The x87/MMX/SSE state as a debugger shows it (``fpu()`` is the one it writes)."""
        return self.cpu.state.fpu

    def fpu_written(self) -> None:
        """A debugger wrote the x87 state: FERR# follows ES, as after FLDENV or FXRSTOR."""
        if not self.cpu.state.fpu.fsw & ES:
            self.cpu.ferr_clear()

    @property
    def halted(self) -> bool:
        return self.cpu.state.halted

    # -- execution ------------------------------------------------------------------------
    def step(self) -> None:
        """Execute one guest instruction (taking no interrupt, firing no timer).  A halted
        guest instead runs until something wakes it, and stops at what woke it."""
        raise NotImplementedError

    def _wake(self) -> None:
        """The guest is halted: run the machine (timers, interrupts) until something ends
        the halt, and stop before the first instruction after it."""
        cpu = self.cpu
        cpu.host.break_next = True
        cpu.host_debug_changed()
        try:
            self.machine.run()
        finally:
            cpu.host.break_next = False
            if cpu.host.event is not None and cpu.host.event.kind == "step":
                cpu.host.event = None
            cpu.host_debug_changed()

    def settle(self) -> None:
        """After a pause: bring the real CPU back between two guest instructions."""

    def resume(self) -> None:
        """Before running on: the breakpoint the guest stands on, if any, is passed once."""
        st = self.cpu.state
        self.cpu.host.pass_once((self.cpu.mode.cs_base + st.eip) & 0xFFFFFFFF, st.icount)

    # -- breakpoints and watchpoints ---------------------------------------------------------
    def real_addresses(self, addresses: set[int]) -> set[int]:
        return set(addresses)

    def set_breakpoints(self, addresses) -> None:
        """Stop before guest code at any of ``addresses`` (guest virtual) runs."""
        self.cpu.host.set_breakpoints(self.real_addresses(set(addresses)))
        self.cpu.host_debug_changed()

    def set_watchpoints(self, ranges) -> None:
        """Stop after an access to a watched range: (guest address, length, kind)."""
        for addr, length, _ in ranges:
            self.check_range(addr, length)
        self.cpu.host.set_watchpoints(ranges)
        self.cpu.host_debug_changed()

    def check_range(self, addr: int, length: int) -> None:
        if length <= 0 or addr < 0 or addr + length > 1 << 32:
            raise ViewError(f"bad range {addr:#x}+{length}")

    def event(self):
        """Why the host debugger stopped the guest (a HostEvent), or None."""
        return self.cpu.host.event

    def clear(self) -> None:
        """Forget every breakpoint and watchpoint (a debugger detached).  Through
        ``set_breakpoints``, so that a monitor forgets them too: binary translation
        would otherwise plant a breakpoint again in code it translates later."""
        self.set_breakpoints(())
        self.set_watchpoints(())


class NativeView(GuestView):
    """The bare machine: what the CPU holds is what the guest has."""

    def phys(self, lin: int) -> int | None:
        return self.cpu.mmu.probe(lin)

    def registers(self) -> dict[str, int]:
        cpu = self.cpu
        st = cpu.state
        r = {n: st.regs[i] for i, n in enumerate(REG_NAMES)}
        r["eip"] = st.eip
        r["eflags"] = cpu.get_eflags()
        for i, n in enumerate(SEG_NAMES):
            r[n] = st.segs[i].selector
        r.update(cr0=st.cr0, cr2=st.cr2, cr3=st.cr3, cr4=st.cr4,
                 gdt_base=st.gdtr.base, gdt_limit=st.gdtr.limit,
                 idt_base=st.idtr.base, idt_limit=st.idtr.limit,
                 ldtr=st.ldtr.selector, tr=st.tr.selector)
        return {n: r[n] for n in REGISTERS}

    def set_register(self, name: str, value: int) -> None:
        cpu = self.cpu
        st = cpu.state
        value &= 0xFFFFFFFF
        if name in REG_NAMES:
            st.regs[REG_NAMES.index(name)] = value
        elif name == "eip":
            st.eip = value
        elif name == "eflags":
            cpu.set_eflags(value)
            cpu.mode_changed()
        elif name in SEG_NAMES and name != "cs":
            from ringvisor.hw.faults import CpuFault
            try:
                cpu.segmentation.load(SEG_NAMES.index(name), value)
            except CpuFault as e:
                raise ViewError(f"cannot load {name} with {value:#06x}: {e}") from None
            cpu.mode_changed()
        else:
            raise ViewError(f"{name} cannot be written from the debugger")

    def step(self) -> None:
        host = self.cpu.host
        host.event = None                 # what stopped the guest last is old news
        if self.halted:
            self._wake()
            return
        host.stepping = True
        try:
            self.machine.step()
        finally:
            host.stepping = False


class KvmView(NativeView):
    """The guest on the host's processor (``--mode kvm``).  Between two runs the CPU's
    state is the vCPU's -- read back with KVM_GET_REGS/SREGS/FPU/XSAVE when a run ends,
    given to KVM with the SET ioctls before the next -- and guest memory is the RAM KVM
    runs it in, so the bare machine's view serves: registers, memory through the
    guest's page tables.  Breakpoints, watchpoints and steps are asked of KVM
    (``hw/kvmdebug.py``), which has four debug registers and, on some hosts, no data
    breakpoints or int3 reports: what does not fit is refused here, with the reason."""

    name = "kvm"

    def _fits(self, breakpoints, watchpoints) -> None:
        try:
            self.machine.debug.check(breakpoints, watchpoints)
        except ValueError as e:
            raise ViewError(str(e)) from None

    def set_breakpoints(self, addresses) -> None:
        watched = [(f, last - f + 1, k) for f, last, k in self.cpu.host.watchpoints]
        self._fits(set(addresses), watched)
        super().set_breakpoints(addresses)

    def set_watchpoints(self, ranges) -> None:
        for addr, length, _ in ranges:
            self.check_range(addr, length)
        self._fits(self.cpu.host.breakpoints, list(ranges))
        super().set_watchpoints(ranges)


class MonitorView(GuestView):
    """The guest under a monitor, through the monitor's guest-view hooks."""

    def __init__(self, machine, monitor) -> None:
        super().__init__(machine)
        self.mon = monitor
        self.name = monitor.name

    def phys(self, lin: int) -> int:
        if lin >= L.MLIN:
            return None             # the hypervisor region: no guest mapping reaches it
        return self.mon.gm.peek(lin)

    def written(self, phys: int, n: int) -> None:
        self.mon.guest_written(phys, n)     # shadow page tables, translations of that code

    def check_range(self, addr: int, length: int) -> None:
        super().check_range(addr, length)
        if addr + length > L.MLIN:
            raise ViewError(f"{addr:#010x}+{length} reaches the monitor's region, "
                            "which the guest cannot see")

    def _in_kernel(self) -> bool:
        """True while the guest runs its kernel (virtual ring 0)."""
        return self.cpu.cpl != 3

    def registers(self) -> dict[str, int]:
        cpu, mon = self.cpu, self.mon
        st, v = cpu.state, mon.vcpu
        r = {n: st.regs[i] for i, n in enumerate(REG_NAMES)}
        cs = st.segs[1].selector
        r["eip"] = mon.view_eip(st.eip, cs)
        r["eflags"] = mon.view_eflags(cpu.get_eflags())
        kernel = self._in_kernel()
        for i, n in enumerate(SEG_NAMES):
            sel = st.segs[i].selector
            if kernel and sel & 3 == 1:
                sel &= ~3               # ring compression: the guest kernel believes ring 0
            r[n] = sel
        if kernel:
            r["cs"], r["ss"] = v.cs, v.ss
        r.update(cr0=v.cr0, cr2=v.cr2, cr3=v.cr3, cr4=v.cr4,
                 gdt_base=v.gdt_base, gdt_limit=v.gdt_limit,
                 idt_base=v.idt_base, idt_limit=v.idt_limit, ldtr=v.ldtr, tr=v.tr)
        return {n: r[n] for n in REGISTERS}

    def set_register(self, name: str, value: int) -> None:
        cpu, mon = self.cpu, self.mon
        st = cpu.state
        value &= 0xFFFFFFFF
        if name in REG_NAMES:
            st.regs[REG_NAMES.index(name)] = value
        elif name == "eip":
            if self._in_kernel():
                try:
                    st.eip = mon.kernel_entry(value)
                except (GuestPageFault, GuestBadFrame):
                    raise ViewError(f"guest address {value:#010x} is not mapped") from None
            else:
                st.eip = value
            st.halted = False
        elif name == "eflags":
            # what the guest may set for real; IF and IOPL live on the virtual CPU
            cpu.set_eflags(mon.real_eflags(value))
            if self._in_kernel():
                mon.vcpu.iopl = (value >> 12) & 3
            mon.guest_if(bool(value & IF))
            cpu.mode_changed()
        else:
            raise ViewError(f"{name} cannot be written from the debugger under {mon.name}")

    def fpu_shown(self):
        """The x87 state with its last instruction's pointer (FCS:FIP, which the processor
        records as it executes) the guest's: a selector of the guest kernel's code --
        ring-compressed, or the translation cache's in a state recorded before bt
        mapped its code back (``BinaryTranslator.fpu_origin``) -- is the one it loaded.
        (The guest's own FNSTENV under trapemu stores RPL 1: docs/virtualization.md.)"""
        fpu = copy.copy(self.cpu.state.fpu)
        fpu.fip = self.mon.view_eip(fpu.fip, fpu.fcs)
        if fpu.fcs == L.SEL_TCODE:
            fpu.fcs = self.mon.vcpu.cs
        elif fpu.fcs & 3 == 1:
            fpu.fcs &= ~3
        return fpu

    def _snapshot(self) -> tuple:
        return tuple(self.registers().values()), self.halted

    def step(self) -> None:
        """Real instructions until the CPU is between guest instructions again with the
        guest's state moved on.  A guest instruction that changes nothing the guest can
        see (``jmp .``) ends the step after MAX_REAL_STEPS real ones, where the guest
        stands exactly as one step would leave it."""
        m, host = self.machine, self.cpu.host
        host.event = None                 # what stopped the guest last is old news
        while self.halted and m.stop is None and m.pause_reason is None:
            # an interrupt the monitor keeps to itself leaves the guest halted: wait on
            self._wake()
            self.settle()
            if not self.halted:
                return
        before = self._snapshot()
        host.stepping = True
        try:
            for _ in range(MAX_REAL_STEPS):
                m.step()
                if m.stop is not None:
                    return
                if self.mon.at_guest_boundary() and (self._snapshot() != before or
                                                     host.event is not None):
                    return
        finally:
            host.stepping = False

    def settle(self) -> None:
        m, host = self.machine, self.cpu.host
        host.stepping = True
        try:
            for _ in range(MAX_REAL_STEPS):
                if self.mon.at_guest_boundary() or m.stop is not None:
                    return
                m.step()
        finally:
            host.stepping = False

    def real_addresses(self, addresses: set[int]) -> set[int]:
        for a in addresses:
            if a >= L.MLIN:
                raise ViewError(f"{a:#010x} is in the monitor's region, which the guest "
                                "cannot see")
        return self.mon.debug_addresses(addresses)


class HvmView(MonitorView):
    """The guest under hardware-assisted virtualization (``hvm.py``).  In VMX non-root
    operation the processor holds the guest's own registers -- ring 0, its selectors,
    its EFLAGS.IF, its EIP -- except CR0, CR3 and CR4, which are the VMCS's (the read
    shadows hold what the guest believes: the virtual CPU's); no address is the
    monitor's, which runs at VMX root under a CR3 of its own.  Between two guest
    instructions means in non-root operation, outside a one-store MTF window."""

    def phys(self, lin: int) -> int:
        self.mon.sync_vcpu()                  # (under EPT the guest's CR3 is its own)
        return self.mon.gm.peek(lin)

    def check_range(self, addr: int, length: int) -> None:
        GuestView.check_range(self, addr, length)

    def real_addresses(self, addresses: set[int]) -> set[int]:
        return set(addresses)

    fpu_shown = GuestView.fpu_shown           # the processor records the guest's own pointers

    def registers(self) -> dict[str, int]:
        r = NativeView.registers(self)
        self.mon.sync_vcpu()
        v = self.mon.vcpu
        r.update(cr0=v.cr0, cr3=v.cr3, cr4=v.cr4)
        return r

    def set_register(self, name: str, value: int) -> None:
        if name == "eip":
            self.cpu.state.halted = False
        NativeView.set_register(self, name, value)


def view_of(machine, monitor=None) -> GuestView:
    """The guest view of a VM: the monitor's, or the bare machine's."""
    if monitor is None:
        return KvmView(machine) if getattr(machine, "mode_name", "") == "kvm" else NativeView(machine)
    return (HvmView if monitor.name == "hvm" else MonitorView)(machine, monitor)
