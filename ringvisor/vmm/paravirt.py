"""Para-virtualization (the chapter's section 3): the guest kernel asks instead of trapping.

The guest kernel was built by ``ringvisor pvcc``: every privileged or sensitive
instruction in it became a hypercall (``int $0x82``, Xen's x86_32 ABI, the
contract in ``ringvisor.abi``) or a store into the shared-info page, so it runs
directly at ring 1 with nothing left to emulate but port I/O (which Xen, too,
emulates for a domain with I/O privilege).  Interrupts become events
(``evtchn``): the virtual interrupt flag is ``evtchn_upcall_mask`` in shared
memory, which the guest flips without a trap, and the hypervisor enters the
guest's event callback when something is pending and the mask is clear.

What stays from the monitor core: the hypervisor region, ring compression of
the guest's GDT (given by ``set_gdt``), shadow page tables over the guest's
write-protected tables (stores the guest makes to its own page tables trap
and are validated, Xen's "writable page tables"; ``mmu_update`` and
``update_va_mapping`` do the same explicitly), and frames pushed for the
guest's handlers exactly as the hardware would push them.

Every hypercall argument is checked: pointers are read through the guest's
own page tables with its kernel rights (a bad one is ``-EFAULT``), frames must
be the guest's own (``-EPERM``), counts are bounded.  A guest that makes the
hypervisor's work impossible (no handler for a fault, an unusable stack) is
stopped with a report, as the other monitors do.
"""

from __future__ import annotations

import struct
from collections import Counter

from ringvisor.abi import (CALLBACK_REGISTER, EVTCHN_ALLOC_UNBOUND, EVTCHN_BIND_INTERDOMAIN,
                           EVTCHN_BIND_IPI, EVTCHN_BIND_PIRQ, EVTCHN_BIND_VIRQ, EVTCHN_CLOSE,
                           EVTCHN_SEND, EVTCHN_STATUS, EVTCHN_UNMASK, HYPERCALL_VECTOR,
                           PHYSDEV_IRQ_STATUS_QUERY, PHYSDEV_SET_IOPL, PV_BOOT_STACK_TOP,
                           PV_BOOT_STACK_VA, PV_SHARED_INFO_VA, PV_START_INFO_VA, SCHED_SHUTDOWN,
                           SHARED_INFO, START_INFO, START_INFO_MAGIC, CallbackOp, CallbackType,
                           ConsoleIO, Errno, EvtchnOp, Hypercall, PhysdevOp, RvMachineOp, SchedOp,
                           Shutdown, Sif, VcpuOp, Virq, VmAssistCmd, VmAssistType, XenVer)
from ringvisor.hw.faults import CpuFault
from ringvisor.hw.machine import Stop

from . import emulate as E
from . import gdttype
from . import layout as L
from .descriptors import guest_descriptor_fields
from .evtchn import EvtchnError, EventChannels
from .frame import Frame
from .guestmem import GuestBadFrame, GuestPageFault
from .errors import GuestFault, HypercallError, fail
from .monitor import Monitor
from .platform import HypervisorTimer
from .pvmm import PvMemory
from .pvreturn import IRET, quick_iret
from .pvtables import PvTables
from .region import pv_region
from .vcpu import CR0_PG

KEEP = object()                  # a hypercall that set the guest's registers itself (iret)
MAX_CONSOLE = 4096
TS = 1 << 3

IO_EMULATORS = {m: E.EMULATORS[m] for m in (E.M.IN, E.M.OUT, E.M.INSB, E.M.INSW, E.M.INSD,
                                            E.M.OUTSB, E.M.OUTSW, E.M.OUTSD) if m in E.EMULATORS}


def _tsc_scale(hz: int) -> tuple[int, int]:
    """vcpu_time_info's (tsc_to_system_mul, tsc_shift): ns = (tsc << shift) * mul >> 32."""
    ratio, shift = 10 ** 9 / hz, 0
    while ratio >= 1:
        ratio /= 2
        shift += 1
    while ratio < 0.5:
        ratio *= 2
        shift -= 1
    return int(ratio * (1 << 32)), shift


class ParaVirt(PvMemory, PvTables, Monitor):
    name = "paravirt"
    virtual_apic = False                 # events and a timer hypercall instead
    pae = False                          # its page tables are 32-bit (the PV ABI's)
    SOFT_GATES = Monitor.SOFT_GATES + (HYPERCALL_VECTOR,)     # (``pv_region``'s gate)
    # a para-virtualized kernel never leaves protected mode (``real_mode``): its real-mode
    # part holds nothing to save
    real_mode = False
    STATE = tuple(n for n in Monitor.STATE if n != "real") + (
        "events", "trap_table", "callbacks", "gdt_frames", "kstack", "pinned", "timer",
        "hypercalls", "time_version")
    WIRING = Monitor.WIRING + ("cmdline", "si_phys", "start_info_phys", "fixed", "time_scale",
                               "io_privileged", "o_time", "o_cr2", "real")

    def __init__(self, machine, guest_ram: int, cmdline: str = "", *, base: int | None = None,
                 shadow_pool: list[int] | None = None, pages: dict[str, int] | None = None,
                 timer=None, events: EventChannels | None = None) -> None:
        """The keyword arguments are for a hypervisor running many guests
        (``ringvisor.hypervisor``): the region's ``base`` and this guest's
        ``shadow_pool`` (``Monitor``), the machine addresses of its start_info,
        shared_info and boot stack ``pages`` (by default the region's own), its
        one-shot ``timer`` and its event channels."""
        super().__init__(machine, guest_ram, base=base, shadow_pool=shadow_pool)
        self.cmdline = cmdline
        if pages is None:
            pages = {"start_info": self.base + L.PV_START_INFO,
                     "shared_info": self.base + L.PV_SHARED_INFO,
                     "boot_stack": self.base + L.PV_BOOT_STACK}
        self.si_phys = pages["shared_info"]
        self.start_info_phys = pages["start_info"]
        # the running vCPU's vcpu_info fields the monitor writes (a domain of several
        # vCPUs points them at the loaded one's slot: hypervisor/pvdomain.py)
        self.o_time = self.si_phys + SHARED_INFO.offset("vcpu_info[0].time")
        self.o_cr2 = self.si_phys + SHARED_INFO.offset("vcpu_info[0].arch.cr2")
        self.events = events if events is not None else EventChannels(self.mem, self.si_phys)
        # the fixed pages: linear page -> (machine frame, writable)
        self.fixed = {PV_BOOT_STACK_VA: (pages["boot_stack"], True),
                      PV_START_INFO_VA: (self.start_info_phys, False),
                      PV_SHARED_INFO_VA: (self.si_phys, True)}
        self.io_privileged = True         # port I/O is emulated for it (Xen's I/O privilege)
        self.gm.fixed = self.fixed
        self.gdt.tracking = False        # the GDT comes by set_gdt, edits by update_descriptor
        self.trap_table: dict[int, tuple[int, int, int]] = {}    # vector -> (flags, cs, eip)
        self.callbacks: dict[int, tuple[int, int]] = {}          # CALLBACKTYPE -> (cs, eip)
        self.gdt_frames: list[int] = []
        self.kstack: tuple[int, int] | None = None               # stack_switch
        self.pinned: set[int] = set()
        self.timer = timer if timer is not None else HypervisorTimer(machine, L.HV_TIMER)
        self.hypercalls: Counter[str] = Counter()
        self.time_version = 0
        self.time_scale = _tsc_scale(machine.clock.tsc_hz)

    # -- start of day ---------------------------------------------------------------------
    def _takeover(self) -> None:
        pv_region(self.mem, self.base)
        self.write_start_info()
        st = self.cpu.state
        st.regs[4] = PV_BOOT_STACK_TOP
        st.regs[6] = PV_START_INFO_VA
        super()._takeover()
        self.vcpu.vif = False

    def start_info(self) -> dict:
        """start_info's fields for this guest (a lone guest holds the machine: Xen's Dom0)."""
        return dict(magic=START_INFO_MAGIC, nr_pages=self.guest_ram >> 12,
                    shared_info=self.si_phys, flags=Sif.PRIVILEGED | Sif.INITDOMAIN,
                    cmd_line=list(self.cmdline.encode()[:1023] + b"\0"))

    def write_start_info(self) -> None:
        """The start-of-day pages: start_info filled in, shared_info clear, events masked."""
        self.mem.write(self.start_info_phys, START_INFO.pack(self.start_info()))
        self.mem.write(self.si_phys, bytes(0x1000))
        self.events.upcall_mask = True
        self.update_time()

    # -- entries --------------------------------------------------------------------------
    # the ``iret`` hypercall to user mode done in the hand-off where an entry has nothing
    # else to do (``pvreturn``); False: every hypercall a whole entry
    quick_irets = True
    quick_kind = 2           # (``softint``)

    def _handoff(self, cpu, vector: int, err: int | None, soft: bool):
        h = super()._handoff(cpu, vector, err, soft)
        if h is not None and soft and vector == HYPERCALL_VECTOR and self.quick_irets \
                and cpu.state.regs[0] == IRET:
            return self._handed_iret
        return h

    def _handed_iret(self, cpu) -> None:
        if not quick_iret(self, cpu):
            self._handed(cpu)

    def dispatch(self, vector: int, f: Frame) -> None:
        v = self.vcpu
        v.vif = not self.events.upcall_mask          # the guest's virtual IF, as it left it
        if self.external(vector):
            pass
        elif vector == HYPERCALL_VECTOR and not f.user:
            self.hypercall(f)
        else:
            super().dispatch(vector, f)
        if self.events.upcall_mask == v.vif:     # (a store only if it changes: a read is cheaper)
            self.events.upcall_mask = not v.vif
        self.take_pirqs()
        if v.vif and self.events.upcall_pending:
            self.upcall(f)

    def external(self, vector: int) -> bool:
        """A physical interrupt (to the virtual PIC) or the hypervisor's timer (an event)
        -- False: not one."""
        if vector >= 32 and self.platform.physical_irq(vector):     # (``Monitor.dispatch``)
            self.traps["interrupt"] += 1
        elif vector == L.HV_TIMER:
            self.traps["timer"] += 1
            self.events.raise_virq(Virq.TIMER)
        else:
            return False
        return True

    def take_pirqs(self) -> None:
        """What the guest's (virtual) PIC lets through becomes an event on the IRQ's port;
        the PIC is acknowledged as the processor's INTA would, so the guest's EOI (its own
        port write, or PHYSDEVOP_eoi) ends it."""
        for _ in range(16):
            if not self.platform.intr:
                return
            irq, _ = self.platform.acknowledge()
            self.events.raise_pirq(irq)

    def interrupt_waiting(self) -> bool:
        return bool(self.events.upcall_pending)

    def deliver_interrupts(self, f: Frame) -> None:
        """Events are delivered by ``dispatch`` (the upcall), not through the IDT."""

    def upcall(self, f: Frame) -> None:
        """Enter the guest's event callback, as an interrupt gate would (events masked)."""
        cb = self.callbacks.get(CallbackType.event)
        if cb is None:
            return                                   # nobody to tell yet: stays pending
        self.halting = False
        self.update_time()
        self.stats["events_delivered"] += 1
        self.enter_guest_handler(f, cb[0], cb[1], True, None, self.guest_eip(f), 1)
        self.events.upcall_mask = True

    def update_time(self) -> None:
        """vcpu_time_info: system time in ns and the TSC it was read at."""
        mul, shift = self.time_scale
        self.time_version += 2
        self.mem.write(self.o_time, struct.pack("<IIQQIbB2x", self.time_version, 0, self.guest_tsc(),
                                      self.system_ns(), mul, shift, 0))

    def system_ns(self) -> int:
        """The guest's system time, in ns: the machine's clock (a domain restored on a
        hypervisor counts from where it was saved: ``hypervisor/pvdomain.py``)."""
        return self.machine.clock.now_ns()

    def guest_tsc(self) -> int:
        """What the guest's RDTSC reads now."""
        return self.cpu.tsc()

    def guest_if(self, value: bool | None = None) -> bool:
        # the virtual IF is the event mask in shared memory, which the guest flips itself
        if value is not None:
            self.events.upcall_mask = not value
        return not self.events.upcall_mask

    # -- what the guest sees at fixed addresses -----------------------------------------
    def page_fault(self, f: Frame) -> None:
        lin = self.cpu.state.cr2
        hit = self.fixed.get(lin & ~0xFFF)
        if hit is not None:
            frame, writable = hit
            err = f.err or 0
            if not (err & 4 or (err & 2 and not writable)):
                self.traps["#PF (fixed page)"] += 1
                self.shadow.install_fixed(lin, frame, writable)
                return
        if (f.err or 0) & 2 and self.gdt_typed() and gdttype.table_store_refused(self, f, lin):
            self.traps["#PF (GDT frame mapped writable: refused)"] += 1
            self.guest_page_fault(f, lin, 3 | (f.err & 4))     # (Xen: pv_ro_page_fault)
            return
        super().page_fault(f)

    def privileged_fault(self, f: Frame, err: int) -> None:
        """Ring 1 executed a privileged instruction: port I/O is emulated, the rest is the
        guest's #GP (a PV kernel has no business executing them)."""
        if not f.user and self.io_privileged:
            ins = self.fetch(f)
            result = E.emulate(self, f, ins, f.eip, (IO_EMULATORS,))
            if result == E.NEXT:
                self.traps["#GP (port I/O)"] += 1
                f.eip = (f.eip + ins.len) & 0xFFFFFFFF
                return
            if result == E.FAULTED:
                return
        super().privileged_fault(f, err)

    # -- hypercalls ------------------------------------------------------------------------------
    def hypercall(self, f: Frame) -> None:
        r = self.cpu.state.regs
        result = self.do_hypercall(f, r[0], (r[3], r[1], r[2], r[6], r[7]))   # ebx ecx edx esi edi
        if result is not KEEP:
            r[0] = result & 0xFFFFFFFF

    @staticmethod
    def hypercall_name(nr: int) -> str:
        """How ``hypercalls`` counts hypercall ``nr``."""
        name = _NAMES.get(nr)
        if name is None:
            try:
                name = f"{Hypercall(nr).name} ({nr})"
            except ValueError:
                name = f"#{nr}"
        return name

    def do_hypercall(self, f: Frame | None, nr: int, args: tuple):
        """Run hypercall ``nr``: its result (0 or positive, or -errno), or KEEP."""
        self.hypercalls[self.hypercall_name(nr)] += 1
        handler = self.HYPERCALLS.get(nr)
        try:
            result = -Errno.ENOSYS if handler is None else handler(self, f, *args)
        except HypercallError as e:
            result = -e.errno
        except (GuestPageFault, GuestBadFrame):
            result = -Errno.EFAULT
        except EvtchnError as e:
            result = -e.errno
        return result if result is KEEP else result or 0

    # guest memory for hypercall arguments: the guest kernel's view, faults become -EFAULT
    def _read(self, lin: int, n: int) -> bytes:
        return self.gm.read(lin, n)

    def _write(self, lin: int, data: bytes) -> None:
        self.gm.write(lin, data)

    def hc_set_callbacks(self, f, ev_cs, ev_eip, fs_cs, fs_eip, *_):
        ev, fs = (self._kernel_code(ev_cs), ev_eip), (self._kernel_code(fs_cs), fs_eip)
        self.callbacks[CallbackType.event], self.callbacks[CallbackType.failsafe] = ev, fs
        return 0

    def hc_callback_op(self, f, cmd, arg, *_):
        if cmd == CallbackOp.register:
            cb = CALLBACK_REGISTER.unpack(self._read(arg, CALLBACK_REGISTER.size))
            if cb["type"] not in (CallbackType.event, CallbackType.failsafe):
                fail(Errno.EINVAL)
            self.callbacks[cb["type"]] = (self._kernel_code(cb["address"]["cs"]), cb["address"]["eip"])
            return 0
        if cmd == CallbackOp.unregister:
            t = struct.unpack("<H", self._read(arg, 2))[0]
            if self.callbacks.pop(t, None) is None:
                fail(Errno.EINVAL)
            return 0
        fail(Errno.ENOSYS)

    def hc_fpu_taskswitch(self, f, set_, *_):
        v = self.vcpu
        v.cr0 = v.cr0 | TS if set_ else v.cr0 & ~TS
        return 0

    def hc_set_timer_op(self, f, lo, hi, *_):
        """A one-shot VIRQ_TIMER at system time ``timeout`` ns (0 cancels)."""
        self._timer(lo | hi << 32)
        return 0

    def _timer(self, timeout: int) -> None:
        if timeout:
            self.timer.arm(timeout)
        else:
            self.timer.cancel()

    def hc_xen_version(self, f, cmd, arg, *_):
        if cmd == XenVer.version:
            return 3 << 16
        if cmd == XenVer.extraversion:
            self._write(arg, b"-ringvisor".ljust(16, b"\0"))
            return 0
        if cmd == XenVer.capabilities:
            self._write(arg, b"xen-3.0-x86_32".ljust(1024, b"\0"))
            return 0
        if cmd == XenVer.get_features:
            idx = struct.unpack("<I", self._read(arg, 4))[0]
            self._write(arg + 4, struct.pack("<I", 0))
            return 0 if idx < 32 else -Errno.EINVAL
        if cmd == XenVer.platform_parameters:
            self._write(arg, struct.pack("<I", PV_BOOT_STACK_VA))
            return 0
        if cmd == XenVer.pagesize:
            return 0x1000
        fail(Errno.ENOSYS)

    def hc_console_io(self, f, cmd, count, buf, *_):
        if cmd == ConsoleIO.write:
            if count > MAX_CONSOLE:
                fail(Errno.EINVAL)
            self.console_write(self._read(buf, count))
            return 0
        if cmd == ConsoleIO.read:
            return 0
        fail(Errno.ENOSYS)

    def console_write(self, data: bytes) -> None:
        """``console_io`` output: the machine's console (a lone guest owns it)."""
        self.machine.output(data)

    def hc_vm_assist(self, f, cmd, type_, *_):
        if cmd not in (VmAssistCmd.enable, VmAssistCmd.disable):
            fail(Errno.EINVAL)
        if type_ != VmAssistType.writable_pagetables:
            fail(Errno.EINVAL)
        return 0                       # page-table stores always trap and are validated

    def hc_iret(self, f, *_):
        """Xen's iret: the guest's stack holds eax, eip, cs, eflags [, esp, ss]."""
        st = self.cpu.state
        sp = (self.real_descriptor_base(f.ss) + st.regs[4]) & 0xFFFFFFFF
        # (all six values in one read where they lie in one page: the two a return to
        # user mode adds cannot fault where the first four did not)
        whole = struct.unpack("<6I", self._read(sp, 24)) if sp & 0xFFF <= 0xFE8 else None
        eax, eip, cs, eflags = whole[:4] if whole else struct.unpack("<4I", self._read(sp, 16))
        try:
            if cs & 3 == 3:
                esp, ss = whole[4:] if whole else struct.unpack("<2I", self._read(sp + 16, 8))
                self.return_to_user(f, eip, cs & 0xFFFF, eflags, esp, ss & 0xFFFF)
            else:
                # the kernel's selectors carry RPL 1 (it runs at ring 1): its ring is 0
                self.return_to_kernel(f, eip, cs & 0xFFFC)
                self.set_guest_eflags(f, eflags)     # (as ring 0 executes it: IOPL too)
                st.regs[4] = (st.regs[4] + 16) & 0xFFFFFFFF
        except CpuFault:
            fail(Errno.EINVAL)
        self.vcpu.vif = bool(eflags & (1 << 9))      # Xen: the mask follows the frame's IF
        st.regs[0] = eax
        return KEEP

    def hc_vcpu_op(self, f, cmd, vcpu, arg, *_):
        if vcpu != 0:
            fail(Errno.ENOENT)
        if cmd == VcpuOp.is_up:
            return 1
        if cmd == VcpuOp.up:
            return 0
        if cmd == VcpuOp.down:
            # the only vCPU goes down: the machine stops, as after "cli; hlt"
            self.vcpu.vif = False
            self.halt(f)
            return 0
        if cmd == VcpuOp.set_singleshot_timer:
            timeout, _flags = struct.unpack("<QI", self._read(arg, 12))
            self._timer(timeout)
            return 0
        if cmd == VcpuOp.stop_singleshot_timer:
            self._timer(0)
            return 0
        fail(Errno.ENOSYS)

    def hc_sched_op(self, f, cmd, arg, *_):
        if cmd == SchedOp.yield_:
            return 0
        if cmd in (SchedOp.block, SchedOp.poll):
            # unmask events and wait for one (at once if one is already pending)
            self.vcpu.vif = True
            if not self.events.upcall_pending:
                self.halting = True
            self.stats["blocks"] += 1
            return 0
        if cmd == SchedOp.shutdown:
            reason = SCHED_SHUTDOWN.unpack(self._read(arg, SCHED_SHUTDOWN.size))["reason"]
            try:
                why = Shutdown(reason).name
            except ValueError:
                fail(Errno.EINVAL)
            self.stop(Stop("shutdown", 0 if reason == Shutdown.poweroff else 1,
                           f"the guest shut down ({why})"))
            return 0
        if cmd == SchedOp.shutdown_code:
            return 0
        fail(Errno.ENOSYS)

    def hc_event_channel_op(self, f, cmd, arg, *_):
        ev = self.events

        def io(s, fn, out: str | None = None):
            d = s.unpack(self._read(arg, s.size))
            result = fn(d)
            if out is not None:
                d[out] = result
                self._write(arg, s.pack(d))
            return 0

        if cmd == EvtchnOp.alloc_unbound:
            return io(EVTCHN_ALLOC_UNBOUND, lambda d: ev.alloc_unbound(d["dom"], d["remote_dom"]), "port")
        if cmd == EvtchnOp.bind_interdomain:
            return io(EVTCHN_BIND_INTERDOMAIN,
                      lambda d: ev.bind_interdomain(d["remote_dom"], d["remote_port"]), "local_port")
        if cmd == EvtchnOp.bind_virq:
            return io(EVTCHN_BIND_VIRQ, lambda d: ev.bind_virq(d["virq"], d["vcpu"]), "port")
        if cmd == EvtchnOp.bind_pirq:
            return io(EVTCHN_BIND_PIRQ, lambda d: ev.bind_pirq(d["pirq"]), "port")
        if cmd == EvtchnOp.bind_ipi:
            return io(EVTCHN_BIND_IPI, lambda d: ev.bind_ipi(d["vcpu"]), "port")
        if cmd == EvtchnOp.close:
            return io(EVTCHN_CLOSE, lambda d: ev.close(d["port"]))
        if cmd == EvtchnOp.send:
            return io(EVTCHN_SEND, lambda d: ev.send(d["port"]))
        if cmd == EvtchnOp.unmask:
            return io(EVTCHN_UNMASK, lambda d: ev.unmask(d["port"]))
        if cmd == EvtchnOp.status:
            d = EVTCHN_STATUS.unpack(self._read(arg, EVTCHN_STATUS.size))
            ev._self(d["dom"])
            d.update(ev.status(d["port"]))
            self._write(arg, EVTCHN_STATUS.pack(d))
            return 0
        fail(Errno.ENOSYS)

    def hc_physdev_op(self, f, cmd, arg, *_):
        if cmd == PhysdevOp.eoi:
            irq = struct.unpack("<I", self._read(arg, 4))[0]
            if not 0 <= irq < 16:
                fail(Errno.EINVAL)
            self.platform.end_of_interrupt(irq)     # (or the guest's own port write)
            return 0
        if cmd == PhysdevOp.set_iopl:
            self.vcpu.iopl = PHYSDEV_SET_IOPL.unpack(self._read(arg, 4))["iopl"] & 3
            return 0
        if cmd == PhysdevOp.irq_status_query:
            d = PHYSDEV_IRQ_STATUS_QUERY.unpack(self._read(arg, PHYSDEV_IRQ_STATUS_QUERY.size))
            if not 0 <= d["irq"] < 16:
                fail(Errno.EINVAL)
            d["flags"] = 0
            self._write(arg, PHYSDEV_IRQ_STATUS_QUERY.pack(d))
            return 0
        fail(Errno.ENOSYS)

    def hc_rv_machine_op(self, f, cmd, a, b, *_):
        v = self.vcpu
        if cmd == RvMachineOp.WRITE_CR:
            if a not in (0, 4):
                fail(Errno.EINVAL)
            if a == 0 and b & CR0_PG and not v.paging \
                    and gdttype.table_refused(self, v.cr3 >> 12, 2):
                # paging on makes the directory NEW_BASEPTR recorded live: the same check
                # (ringvisor's start state; a Xen guest never runs unpaged)
                fail(Errno.EINVAL)
            try:
                self.set_cr(a, b)
            except GuestFault:
                fail(Errno.EINVAL)
            return 0
        if cmd == RvMachineOp.READ_CR:
            if a not in (0, 3, 4):
                fail(Errno.EINVAL)
            return self.get_cr(a)
        if cmd == RvMachineOp.LTR:
            raw = self.guest_descriptor(a) if a & ~3 else None
            if raw is None or (raw >> 40) & 0x1F not in (0x09, 0x0B) or not (raw >> 47) & 1:
                fail(Errno.EINVAL)
            base, limit, _, _ = guest_descriptor_fields(raw)
            v.tr, v.tr_base, v.tr_limit = a & 0xFFFC, base, limit
            return 0
        if cmd == RvMachineOp.VA_TO_MFN:
            try:
                return self._gfn(self.gm.phys(a))
            except (GuestPageFault, GuestBadFrame):
                fail(Errno.EFAULT)
        if cmd == RvMachineOp.IRQ_VECTOR:
            if not 0 <= a < 16:
                fail(Errno.EINVAL)
            return self.platform.irq_vector(a)
        fail(Errno.ENOSYS)

    # -- reports -------------------------------------------------------------------------------
    def report(self) -> dict:
        out = super().report()
        out["hypercalls"] = dict(self.hypercalls)
        out.update(self.events.stats)
        return out


# the counters' names of the hypercalls Xen's ABI defines (``do_hypercall``)
_NAMES = {int(h): f"{h.name} ({int(h)})" for h in Hypercall}


def hypercall_table(cls) -> dict:
    """Hypercall number -> the ``hc_<name>`` method of ``cls`` that handles it."""
    return {int(h): getattr(cls, f"hc_{h.name}") for h in Hypercall if hasattr(cls, f"hc_{h.name}")}


ParaVirt.HYPERCALLS = hypercall_table(ParaVirt)
