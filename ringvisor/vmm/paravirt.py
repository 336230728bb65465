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
                    EVTCHN_SEND, EVTCHN_STATUS, EVTCHN_UNMASK, HYPERCALL_VECTOR, MMU_UPDATE,
                    MMUEXT_OP, PHYSDEV_IRQ_STATUS_QUERY, PHYSDEV_SET_IOPL, PV_BOOT_STACK_TOP,
                    PV_BOOT_STACK_VA, PV_SHARED_INFO_VA, PV_START_INFO_VA, SCHED_SHUTDOWN,
                    SHARED_INFO, START_INFO, START_INFO_MAGIC, TRAP_INFO, CallbackOp, CallbackType,
                    ConsoleIO, DomId, Errno, EvtchnOp, Hypercall, Mmu, Mmuext, PhysdevOp,
                    RvMachineOp, SchedOp, Shutdown, Sif, Uvmf, VcpuOp, Virq, VmAssistCmd,
                    VmAssistType, XenVer)
from ringvisor.hw.faults import CpuFault
from ringvisor.hw.machine import Stop

from . import emulate as E
from . import gdttype
from . import layout as L
from .descriptors import compress, guest_descriptor_fields
from .evtchn import EvtchnError, EventChannels
from .frame import Frame
from .guestmem import GuestBadFrame, GuestPageFault
from .errors import GuestFault, MonitorStop
from .monitor import Monitor
from .platform import HypervisorTimer

KEEP = object()                  # a hypercall that set the guest's registers itself (iret)
MAX_BATCH = 1024                 # entries per mmu_update / mmuext_op call
MAX_CONSOLE = 4096
TS = 1 << 3

IO_EMULATORS = {m: E.EMULATORS[m] for m in (E.M.IN, E.M.OUT, E.M.INSB, E.M.INSW, E.M.INSD,
                                            E.M.OUTSB, E.M.OUTSW, E.M.OUTSD) if m in E.EMULATORS}


class HypercallError(Exception):
    def __init__(self, errno: Errno) -> None:
        super().__init__(errno.name)
        self.errno = errno


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


def _fail(errno: Errno):
    raise HypercallError(errno)


class ParaVirt(Monitor):
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
        if self.platform.physical_irq(vector):
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

    # -- the guest's tables, as the hypercalls gave them --------------------------------------
    def kernel_cs_view(self, f: Frame) -> int:
        """A para-virtualized kernel knows it runs at ring 1: its frames hold the real CS
        (Xen's FLAT_RING1_CS has RPL 1), and its IRET is a hypercall."""
        return f.cs

    def guest_gate(self, vector: int, soft: bool) -> tuple[int, int, bool, int]:
        v = self.vcpu
        if vector == 14:
            self.mem.write32(self.o_cr2, v.cr2)
        entry = self.trap_table.get(vector)
        ext = 0 if soft else 1
        if not self.trap_table:
            raise MonitorStop(f"paravirt: the guest took vector {vector:#x} at "
                              f"{self.frame.eip:#010x} before it registered a trap table "
                              "(is the kernel built para-virtualized, by ringvisor pvcc?)")
        if entry is None:
            raise GuestFault(13, vector * 8 + 2 + ext)
        flags, cs, eip = entry
        if soft and (flags & 3) < v.cpl:
            raise GuestFault(13, vector * 8 + 2)
        return cs, eip, bool(flags & 4), 4              # (Xen's trap table: 32-bit frames)

    # -- the GDT's frames are typed (gdttype) ---------------------------------------------
    def gdt_typed(self) -> set[int]:
        """The guest's frame numbers of its GDT (those no mapping may make writable)."""
        return set(self.gdt_frames)

    def address_spaces(self) -> list[int]:
        """The CR3 of every vCPU whose virtual paging is on."""
        return [self.vcpu.cr3] if self.vcpu.paging else []

    def guest_gdt_bytes(self, offset: int, n: int) -> bytes:
        frames = self.gdt_frames
        if not frames:
            return super().guest_gdt_bytes(offset, n)
        i, o = offset >> 12, offset & 0xFFF
        if o + n <= 0x1000 and i < len(frames):        # (a descriptor: within one frame)
            return self.mem.read((frames[i] << 12) + o, n)
        out = bytearray()
        while n:
            i, o = offset >> 12, offset & 0xFFF
            if i >= len(self.gdt_frames):
                raise GuestFault(13, 0)
            chunk = min(n, 0x1000 - o)
            out += self.mem.read((self.gdt_frames[i] << 12) + o, chunk)
            offset += chunk
            n -= chunk
        return bytes(out)

    def known_tables(self, vector: int) -> tuple | None:
        # the trap table's entry stands for the gate (``Delivery._deliver_known``); not for
        # #PF, whose gate also publishes CR2 (``guest_gate``)
        entry = self.trap_table.get(vector)
        if entry is None or vector == 14:
            return None
        entry = tuple(entry)            # (a restored state holds lists)
        if self.kstack is not None:
            return entry, entry[1], self.kstack[1], self.kstack[0]
        v = self.vcpu                   # (no stack_switch: the TSS's, as ``kernel_stack``)
        tss = (v.tr_base + 4) & 0xFFFFFFFF
        got = self._peek8(tss, tss) if v.tr_limit >= 9 else None
        if got is None:
            return None
        return entry, entry[1], got[0] & 0xFFFFFFFF, (got[0] >> 32) & 0xFFFF

    def known_descriptors(self, a: int, b: int) -> tuple[int, int] | None:
        frames, ram = self.gdt_frames, self.mem.ram
        if not frames:
            return super().known_descriptors(a, b)
        # (each selector's frame and offset; both inside the frames and RAM)
        ia, ib, n, top = a >> 12, b >> 12, len(frames), len(ram) - 0x1000
        if ia >= n or ib >= n or frames[ia] << 12 > top or frames[ib] << 12 > top:
            return None
        pa, pb = frames[ia] << 12 | a & 0xFF8, frames[ib] << 12 | b & 0xFF8
        return int.from_bytes(ram[pa:pa + 8], "little"), int.from_bytes(ram[pb:pb + 8], "little")

    def kernel_stack(self, ext: int) -> tuple[int, int]:
        if self.kstack is not None:
            return self.kstack
        return super().kernel_stack(ext)

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

    def do_hypercall(self, f: Frame | None, nr: int, args: tuple):
        """Run hypercall ``nr``: its result (0 or positive, or -errno), or KEEP."""
        name = _NAMES.get(nr)
        if name is None:
            try:
                name = f"{Hypercall(nr).name} ({nr})"
            except ValueError:
                name = f"#{nr}"
        self.hypercalls[name] += 1
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

    def _frame(self, mfn: int) -> int:
        """The machine address of one of the guest's own frames (or -EPERM)."""
        if not 0 <= mfn < self.guest_ram >> 12:
            _fail(Errno.EPERM)
        return mfn << 12

    def _check_pte(self, val: int) -> None:
        """A page-table entry the guest may write: it maps nothing beyond its RAM."""
        if val & 1 and (val & 0xFFFFF000) >= self.guest_ram:
            _fail(Errno.EPERM)

    def _guest_address(self, gpa: int) -> int:
        """The machine address of a guest physical address the guest passed (or -EINVAL)."""
        if not 0 <= gpa < self.guest_ram:
            _fail(Errno.EINVAL)
        return gpa

    def _gfn(self, ma: int) -> int:
        """The guest's frame number for machine address ``ma`` (what RV_VA_TO_MFN returns)."""
        return ma >> 12

    def _write_table_entry(self, ma: int, val: int) -> None:
        if ma & 3:
            _fail(Errno.EINVAL)
        ma = self._guest_address(ma)
        self._check_pte(val)
        if gdttype.entry_refused(self, ma, val):
            _fail(Errno.EINVAL)               # a GDT frame mapped writable (Xen's mod_l1_entry)
        self.mem.write32(ma, val & 0xFFFFFFFF)
        self.guest_written(ma, 4)

    def hc_set_trap_table(self, f, ptr, *_):
        if ptr == 0:
            self.trap_table.clear()
            return 0
        for i in range(257):
            e = TRAP_INFO.unpack(self._read(ptr + i * TRAP_INFO.size, TRAP_INFO.size))
            if e["address"] == 0:
                return 0
            # the kernel's selectors have RPL 0; it runs at ring 1 (Xen fixes them the same way)
            self.trap_table[e["vector"]] = (e["flags"] & 7, self._kernel_code(e["cs"]), e["address"])
        _fail(Errno.E2BIG)

    def _batch(self, items: int, count: int, done_ptr: int, dom: int, layout, op) -> int:
        """Apply ``op`` to ``count`` structures at ``items``, stopping at the first refusal;
        how many were done goes to ``done_ptr`` (Xen's batched MMU interface)."""
        self._own(dom)
        if count > MAX_BATCH:
            _fail(Errno.EINVAL)
        done = 0
        try:
            for i in range(count):
                op(layout.unpack(self._read(items + i * layout.size, layout.size)))
                done += 1
        finally:
            if done_ptr:
                self._write(done_ptr, struct.pack("<I", done))
        return 0

    def hc_mmu_update(self, f, reqs, count, done_ptr, dom, *_):
        return self._batch(reqs, count, done_ptr, dom, MMU_UPDATE, self._mmu_update)

    def _mmu_update(self, e: dict) -> None:
        cmd, ma, val = e["ptr"] & 3, e["ptr"] & ~3, e["val"]
        if ma >> 32 or val >> 32:
            _fail(Errno.EINVAL)
        if cmd in (Mmu.NORMAL_PT_UPDATE, Mmu.PT_UPDATE_PRESERVE_AD):
            if cmd == Mmu.PT_UPDATE_PRESERVE_AD and not ma & 3:
                val = (val & ~0x60) | (self.mem.read32(self._guest_address(ma)) & 0x60)
            self._write_table_entry(ma, val)
        elif cmd == Mmu.MACHPHYS_UPDATE:
            self._machphys_update(ma >> 12, val)
        else:
            _fail(Errno.ENOSYS)

    def _machphys_update(self, mfn: int, gfn: int) -> None:
        # pseudo-physical = machine here: the only valid entry is the identity
        if mfn != gfn or mfn >= self.guest_ram >> 12:
            _fail(Errno.EINVAL)

    def hc_mmuext_op(self, f, ops, count, done_ptr, dom, *_):
        return self._batch(ops, count, done_ptr, dom, MMUEXT_OP,
                           lambda op: self._mmuext(op["cmd"], op["arg1"], op["arg2"]))

    def _mmuext(self, cmd: int, arg1: dict, arg2: dict) -> None:
        if cmd in (Mmuext.PIN_L1_TABLE, Mmuext.PIN_L2_TABLE):
            ppn = self._frame(arg1["mfn"]) >> 12
            if ppn in self.pinned:
                _fail(Errno.EINVAL)
            self.pinned.add(ppn)
        elif cmd == Mmuext.UNPIN_TABLE:
            ppn = self._frame(arg1["mfn"]) >> 12
            if ppn not in self.pinned:
                _fail(Errno.EINVAL)
            self.pinned.discard(ppn)
        elif cmd == Mmuext.NEW_BASEPTR:
            self._frame(arg1["mfn"])                 # the guest's own frame (-EPERM otherwise)
            self.set_cr(3, arg1["mfn"] << 12)
        elif cmd in (Mmuext.TLB_FLUSH_LOCAL, Mmuext.TLB_FLUSH_MULTI, Mmuext.TLB_FLUSH_ALL):
            self.cpu.tlb_flush()       # the shadows saw every table store: nothing stale
        elif cmd in (Mmuext.INVLPG_LOCAL, Mmuext.INVLPG_MULTI, Mmuext.INVLPG_ALL):
            self.invlpg(arg1["linear_addr"] & 0xFFFFFFFF)
        elif cmd in (Mmuext.FLUSH_CACHE, Mmuext.FLUSH_CACHE_GLOBAL):
            pass
        elif cmd == Mmuext.CLEAR_PAGE:
            ma = self._frame(arg1["mfn"])
            self.mem.write(ma, bytes(0x1000))
            self.guest_written(ma, 0x1000)
        elif cmd == Mmuext.COPY_PAGE:
            dst, src = self._frame(arg1["mfn"]), self._frame(arg2["src_mfn"])
            self.mem.write(dst, self.mem.read(src, 0x1000))
            self.guest_written(dst, 0x1000)
        else:
            _fail(Errno.ENOSYS)

    def _own(self, dom: int) -> None:
        if dom not in (DomId.SELF, 0):
            _fail(Errno.ESRCH)

    def hc_set_gdt(self, f, frames_ptr, entries, *_):
        if not 0 < entries <= L.FIRST_RESERVED:
            _fail(Errno.EINVAL)
        n = (entries * 8 + 0xFFF) >> 12
        mfns = struct.unpack(f"<{n}I", self._read(frames_ptr, 4 * n))
        frames = [self._frame(m) >> 12 for m in mfns]
        if gdttype.mapped_writable(self, set(mfns)):
            _fail(Errno.EINVAL)    # a frame mapped writable cannot become a GDT (Xen's set_gdt)
        self.gdt.hold()
        self.gdt_frames = frames
        self.load_gdt(0, entries * 8 - 1)
        return 0

    def hc_update_descriptor(self, f, ma_lo, ma_hi, d_lo, d_hi, *_):
        if ma_hi or ma_lo & 7:
            _fail(Errno.EINVAL)
        ma_lo = self._guest_address(ma_lo)
        for i, fr in enumerate(self.gdt_frames):
            if fr << 12 <= ma_lo < (fr + 1) << 12:
                index = (i << 9) + ((ma_lo & 0xFFF) >> 3)
                if index * 8 + 7 > self.vcpu.gdt_limit:
                    _fail(Errno.EINVAL)
                raw = d_lo | d_hi << 32
                self.mem.write(ma_lo, struct.pack("<Q", raw))
                self.mem.write(self.base + L.GDT + index * 8, struct.pack("<Q", compress(raw)))
                return 0
        _fail(Errno.EINVAL)

    def hc_stack_switch(self, f, ss, esp, *_):
        raw = self.guest_descriptor(ss) if ss & ~3 else None
        if raw is None or (raw >> 43) & 1 or not (raw >> 41) & 1 or (raw >> 45) & 3 != 0:
            _fail(Errno.EINVAL)      # a writable data segment of the guest kernel
        self.kstack = (ss & ~3, esp)
        return 0

    def _kernel_code(self, sel: int) -> int:
        """A code selector of the guest kernel's own (with RPL 1), or -EINVAL."""
        raw = self.guest_descriptor(sel & 0xFFFF) if sel & 0xFFFC else None
        if raw is None or not (raw >> 43) & 1 or not (raw >> 44) & 1 or (raw >> 45) & 3 != 0:
            _fail(Errno.EINVAL)
        return (sel & 0xFFFC) | 1

    def hc_set_callbacks(self, f, ev_cs, ev_eip, fs_cs, fs_eip, *_):
        ev, fs = (self._kernel_code(ev_cs), ev_eip), (self._kernel_code(fs_cs), fs_eip)
        self.callbacks[CallbackType.event], self.callbacks[CallbackType.failsafe] = ev, fs
        return 0

    def hc_callback_op(self, f, cmd, arg, *_):
        if cmd == CallbackOp.register:
            cb = CALLBACK_REGISTER.unpack(self._read(arg, CALLBACK_REGISTER.size))
            if cb["type"] not in (CallbackType.event, CallbackType.failsafe):
                _fail(Errno.EINVAL)
            self.callbacks[cb["type"]] = (self._kernel_code(cb["address"]["cs"]), cb["address"]["eip"])
            return 0
        if cmd == CallbackOp.unregister:
            t = struct.unpack("<H", self._read(arg, 2))[0]
            if self.callbacks.pop(t, None) is None:
                _fail(Errno.EINVAL)
            return 0
        _fail(Errno.ENOSYS)

    def hc_fpu_taskswitch(self, f, set_, *_):
        v = self.vcpu
        v.cr0 = v.cr0 | TS if set_ else v.cr0 & ~TS
        return 0

    def hc_update_va_mapping(self, f, va, lo, hi, flags, *_):
        v = self.vcpu
        if hi or va >= L.MLIN or va & ~0xFFF in self.fixed or not v.paging:
            _fail(Errno.EINVAL)
        pde = self.mem.read32(self._frame(v.cr3 >> 12) + (va >> 22) * 4)
        if not pde & 1 or pde & 0x80:
            _fail(Errno.EINVAL)
        self._frame(pde >> 12)
        self._write_table_entry((pde & 0xFFFFF000) + ((va >> 12) & 0x3FF) * 4, lo)
        kind = flags & Uvmf.FLUSHTYPE_MASK
        if kind == Uvmf.INVLPG:
            self.invlpg(va)
        elif kind == Uvmf.TLB_FLUSH:
            self.cpu.tlb_flush()
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
        _fail(Errno.ENOSYS)

    def hc_console_io(self, f, cmd, count, buf, *_):
        if cmd == ConsoleIO.write:
            if count > MAX_CONSOLE:
                _fail(Errno.EINVAL)
            self.console_write(self._read(buf, count))
            return 0
        if cmd == ConsoleIO.read:
            return 0
        _fail(Errno.ENOSYS)

    def console_write(self, data: bytes) -> None:
        """``console_io`` output: the machine's console (a lone guest owns it)."""
        self.machine.output(data)

    def hc_vm_assist(self, f, cmd, type_, *_):
        if cmd not in (VmAssistCmd.enable, VmAssistCmd.disable):
            _fail(Errno.EINVAL)
        if type_ != VmAssistType.writable_pagetables:
            _fail(Errno.EINVAL)
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
            _fail(Errno.EINVAL)
        self.vcpu.vif = bool(eflags & (1 << 9))      # Xen: the mask follows the frame's IF
        st.regs[0] = eax
        return KEEP

    def hc_vcpu_op(self, f, cmd, vcpu, arg, *_):
        if vcpu != 0:
            _fail(Errno.ENOENT)
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
        _fail(Errno.ENOSYS)

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
                _fail(Errno.EINVAL)
            self.stop(Stop("shutdown", 0 if reason == Shutdown.poweroff else 1,
                           f"the guest shut down ({why})"))
            return 0
        if cmd == SchedOp.shutdown_code:
            return 0
        _fail(Errno.ENOSYS)

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
        _fail(Errno.ENOSYS)

    def hc_physdev_op(self, f, cmd, arg, *_):
        if cmd == PhysdevOp.eoi:
            irq = struct.unpack("<I", self._read(arg, 4))[0]
            if not 0 <= irq < 16:
                _fail(Errno.EINVAL)
            self.platform.end_of_interrupt(irq)     # (or the guest's own port write)
            return 0
        if cmd == PhysdevOp.set_iopl:
            self.vcpu.iopl = PHYSDEV_SET_IOPL.unpack(self._read(arg, 4))["iopl"] & 3
            return 0
        if cmd == PhysdevOp.irq_status_query:
            d = PHYSDEV_IRQ_STATUS_QUERY.unpack(self._read(arg, PHYSDEV_IRQ_STATUS_QUERY.size))
            if not 0 <= d["irq"] < 16:
                _fail(Errno.EINVAL)
            d["flags"] = 0
            self._write(arg, PHYSDEV_IRQ_STATUS_QUERY.pack(d))
            return 0
        _fail(Errno.ENOSYS)

    def hc_rv_machine_op(self, f, cmd, a, b, *_):
        v = self.vcpu
        if cmd == RvMachineOp.WRITE_CR:
            if a not in (0, 4):
                _fail(Errno.EINVAL)
            try:
                self.set_cr(a, b)
            except GuestFault:
                _fail(Errno.EINVAL)
            return 0
        if cmd == RvMachineOp.READ_CR:
            if a not in (0, 3, 4):
                _fail(Errno.EINVAL)
            return self.get_cr(a)
        if cmd == RvMachineOp.LTR:
            raw = self.guest_descriptor(a) if a & ~3 else None
            if raw is None or (raw >> 40) & 0x1F not in (0x09, 0x0B) or not (raw >> 47) & 1:
                _fail(Errno.EINVAL)
            base, limit, _, _ = guest_descriptor_fields(raw)
            v.tr, v.tr_base, v.tr_limit = a & 0xFFFC, base, limit
            return 0
        if cmd == RvMachineOp.VA_TO_MFN:
            try:
                return self._gfn(self.gm.phys(a))
            except (GuestPageFault, GuestBadFrame):
                _fail(Errno.EFAULT)
        if cmd == RvMachineOp.IRQ_VECTOR:
            if not 0 <= a < 16:
                _fail(Errno.EINVAL)
            return self.platform.irq_vector(a)
        _fail(Errno.ENOSYS)

    # -- reports -------------------------------------------------------------------------------
    def report(self) -> dict:
        out = super().report()
        out["hypercalls"] = dict(self.hypercalls)
        out.update(self.events.stats)
        return out


def pv_region(mem, base: int) -> None:
    """The region as para-virtualization wants it: hypercalls come from ring 1 (the
    ``int $0x82`` gate is DPL 1); no translated code here, so no ring-1 code segment
    over the whole address space either."""
    off = L.MLIN + L.ENTRY + 8 * HYPERCALL_VECTOR
    mem.write(base + L.IDT + 8 * HYPERCALL_VECTOR,
              struct.pack("<HHBBH", off & 0xFFFF, L.SEL_MCODE, 0, 0x8E | 1 << 5, off >> 16))
    mem.write(base + L.GDT + (L.SEL_TCODE & ~7), bytes(8))


# the counters' names of the hypercalls Xen's ABI defines (``do_hypercall``)
_NAMES = {int(h): f"{h.name} ({int(h)})" for h in Hypercall}


def hypercall_table(cls) -> dict:
    """Hypercall number -> the ``hc_<name>`` method of ``cls`` that handles it."""
    return {int(h): getattr(cls, f"hc_{h.name}") for h in Hypercall if hasattr(cls, f"hc_{h.name}")}


ParaVirt.HYPERCALLS = hypercall_table(ParaVirt)
