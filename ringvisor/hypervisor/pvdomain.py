"""A para-virtual domain: today's PV monitor, as one domain among many.

``ParaVirt`` (``ringvisor.vmm.paravirt``) runs one PV kernel that owns the
machine.  Here the same monitor runs one domain of the hypervisor, with what
changes when the machine is shared:

- memory is pseudo-physical: every frame number the guest names goes through
  its P2M (``_frame``, ``_guest_address``: -EPERM/-EINVAL when it names a
  frame that is not its own), the shadow page tables hold machine frames, and
  the guest is *auto-translated* (``XENFEAT_auto_translated_physmap``: its
  page tables hold pseudo-physical numbers; ``RV_VA_TO_MFN`` answers one);
- the region, the real IDT and the physical timer are the hypervisor's; the
  domain's timers, event channels and start-of-day pages are its own, from
  the hypervisor's frames;
- physical interrupts and the hypervisor's timer are the hypervisor's to
  route (``external``); port I/O is emulated only for a domain with I/O
  privilege (Domain 0), a DomU has none (Xen: #GP);
- the start state is Xen's ``vcpu_guest_context`` (``boot``), set by whoever
  builds the domain; until the guest gives a GDT of its own it runs on flat
  ring-1 and ring-3 segments the hypervisor keeps at Xen's ``FLAT_*``
  selectors;
- the management hypercalls (domctl, sysctl, xsm_op, memory_op,
  grant_table_op) exist, each checked by the security module; a DomU's
  ``console_io`` goes to the hypervisor's console (``xl dmesg``), as Xen's;
- stopping is the domain's, not the machine's: a shutdown or a crash ends
  this domain and the others go on;
- a domain has up to ``max_vcpus`` vCPUs.  What is a vCPU's own in the monitor
  (``VCPU_FIELDS``: its virtual CPU -- control registers, GDTR, LDTR, virtual
  IF --, its GDT and LDT shadows, trap table, callbacks, kernel stack, timers,
  halt) is *loaded* for the vCPU that runs and parked in the vCPU's ``slot``
  while another runs (``load_vcpu``, at the context switch): the hypercalls
  act on the loaded vCPU, as Xen's act on ``current``.  The domain's own
  (memory, shadows, event channels, grants) is shared.  vCPU 0 starts when
  its context is set; the guest starts the others (``VCPUOP_initialise``
  with a ``vcpu_guest_context``, ``VCPUOP_up``/``down``/``is_up``).
"""

from __future__ import annotations

import struct
from contextlib import contextmanager

from ringvisor.abi import (EVTCHN_BIND_VCPU, VCPU_GUEST_CONTEXT, VCPU_INFO,
                           VCPU_RUNSTATE_INFO, PV_CONSOLE_VA, PV_XENSTORE_VA, SCHED_REMOTE_SHUTDOWN, SCHED_SHUTDOWN,
                           VCPU_SET_PERIODIC_TIMER, XEN_HVM_PARAM, DomId, Errno, FlatSel,
                           EvtchnOp, Hypercall, HvmOp, HvmParam, Misc, SchedOp, Shutdown, Sif,
                           VcpuOp, Vgcf, XenFeat, XenVer)
from ringvisor.vmm import gdttype, layout as L
from ringvisor.vmm.descriptors import compress
from ringvisor.vmm.gdt import GuestGdt
from ringvisor.vmm.ldt import GuestLdt
from ringvisor.vmm.errors import HypercallError
from ringvisor.vmm.paravirt import ParaVirt, hypercall_table
from ringvisor.vmm.vcpu import CR0_PG, VirtualCpu

from . import blkback, control, grant, memory, vcpuinfo, vcpus

# Xen's flat segments (xen-x86_32.h), present while the guest has no GDT of its own
FLAT = {FlatSel.RING1_CS: 0x00CF9A000000FFFF, FlatSel.RING1_DS: 0x00CF92000000FFFF,
        FlatSel.RING3_CS: 0x00CFFA000000FFFF, FlatSel.RING3_DS: 0x00CFF2000000FFFF}
FLAT_AT = {sel & ~7: raw for sel, raw in FLAT.items()}     # by the descriptor's offset
MAX_GDT_ENTRIES = Misc.FIRST_RESERVED_GDT_ENTRY      # Xen keeps the entries above for itself
MIN_PERIOD_NS = 1_000_000                             # Xen refuses shorter periodic timers
MULTIBOOT_MAGIC = 0x2BADB002
VCPU_INFO_TIME = VCPU_INFO.offset("time")
VCPU_INFO_CR2 = VCPU_INFO.offset("arch.cr2")
# what is a vCPU's own in the monitor: loaded for the vCPU that runs, parked in its slot
VCPU_FIELDS = ("vcpu", "gdt", "ldt", "trap_table", "callbacks", "gdt_frames", "kstack", "timer",
               "time_version", "halting", "guest_halted", "frame", "step", "shadow_at")

# hypercalls the toolstack (Domain 0's user space) may make through its interface;
# the others act on the calling vCPU and make no sense from user space
TOOLSTACK_HYPERCALLS = frozenset({
    Hypercall.domctl, Hypercall.sysctl, Hypercall.xsm_op, Hypercall.memory_op,
    Hypercall.grant_table_op, Hypercall.event_channel_op, Hypercall.xen_version,
    Hypercall.sched_op, Hypercall.hvm_op, Hypercall.rv_blkback_op})
# the shared rings the toolstack sets up, and where the guest finds them
RINGS = ((HvmParam.CONSOLE_PFN, PV_CONSOLE_VA), (HvmParam.STORE_PFN, PV_XENSTORE_VA))


def install_flat(mem, base: int) -> None:
    """Write the flat ring-1/ring-3 descriptors at Xen's FLAT_* selectors of the real GDT."""
    for sel, raw in FLAT.items():
        mem.write(base + L.GDT + (sel & ~7), struct.pack("<Q", compress(raw)))


class DomainMonitor(ParaVirt):
    name = "domain"

    def __init__(self, hv, dom, ram_pages: int, cmdline: str, pages: dict[str, int],
                 shadow_pool: list[int], timer, events) -> None:
        super().__init__(hv.machine, ram_pages << 12, cmdline, base=hv.base,
                         shadow_pool=shadow_pool, pages=pages, timer=timer, events=events)
        self.hv = hv
        self.dom = dom
        self.name = f"d{dom.domid}"
        self.gm.p2m = dom.p2m                   # the live P2M: pseudo-physical is not machine
        self.gm.readonly = set()                # machine frames mapped read-only (grants)
        self.io_privileged = dom.io_privileged
        self.argmem = None                      # the toolstack's memory while it calls
        self.params: dict[int, int] = {}        # HVM_PARAM_* the toolstack set
        # what this domain's clock and TSC lag the machine's: 0 unless it was restored
        # (hypervisor/domsave.py), when they continue from where they were saved
        self.time_offset_ns = 0
        self.tsc_offset = 0
        self.loaded = 0                         # the vCPU whose state is in the fields

    STATE = ParaVirt.STATE + ("time_offset_ns", "tsc_offset")
    WIRING = ParaVirt.WIRING + ("loaded",)

    # -- its vCPUs ---------------------------------------------------------------------------
    def new_vcpu_slot(self, timer) -> dict:
        """A new vCPU's own state, as a fresh monitor has it (down, no context)."""
        gdt, ldt = GuestGdt(self), GuestLdt(self)
        gdt.tracking = False                    # (its GDT comes by set_gdt, as vCPU 0's)
        return {"vcpu": VirtualCpu(), "gdt": gdt, "ldt": ldt, "trap_table": {}, "callbacks": {},
                "gdt_frames": [], "kstack": None, "timer": timer, "time_version": 0,
                "halting": False, "guest_halted": False, "frame": None, "step": None,
                "shadow_at": None}

    def load_vcpu(self, k: int) -> None:
        """Make vCPU ``k``'s state the monitor's (the one before it goes to its slot)."""
        if k == self.loaded:
            return
        vs = self.dom.vcpus
        vs[self.loaded].slot = {name: getattr(self, name) for name in VCPU_FIELDS}
        slot, vs[k].slot = vs[k].slot, None
        for name, value in slot.items():
            setattr(self, name, value)
        self.gm.vcpu = self.vcpu
        self.loaded = k
        self.point_at_vcpu_info()

    def point_at_vcpu_info(self) -> None:
        """The loaded vCPU's vcpu_info (its shared-info slot, or where it registered one)
        is where its mask, pending flags, time and CR2 are read and written."""
        self.events.select(self.loaded)
        base = self.events.info(self.loaded)
        self.o_time, self.o_cr2 = base + VCPU_INFO_TIME, base + VCPU_INFO_CR2

    @contextmanager
    def on_vcpu(self, k: int):
        """Act on vCPU ``k`` (another vCPU's hypercall, the toolstack's domctl), then put
        back the one that was loaded."""
        was = self.loaded
        self.load_vcpu(k)
        try:
            yield self.dom.vcpus[k]
        finally:
            self.load_vcpu(was)

    @property
    def caller(self):
        """The domain on whose behalf a hypercall runs (Domain 0 for the toolstack's)."""
        return self.dom

    # -- its time: the machine's, less what it missed while saved ----------------------------
    def system_ns(self) -> int:
        return self.machine.clock.now_ns() - self.time_offset_ns

    def guest_tsc(self) -> int:
        # the CPU's TSC offset is the running domain's (the context switch sets it)
        st = self.cpu.state
        return (self.cpu.tsc() - st.tsc_offset + self.tsc_offset) & 0xFFFFFFFFFFFFFFFF

    def _timer(self, timeout: int) -> None:
        """The guest's deadlines are in its own system time; the timer runs on the
        machine's."""
        super()._timer(timeout + self.time_offset_ns if timeout else 0)

    # -- the start of day ----------------------------------------------------------------
    def start_info(self) -> dict:
        d = self.dom
        info = super().start_info()
        info["nr_pages"] = d.nr_ram_pages
        info["flags"] = (Sif.PRIVILEGED | Sif.INITDOMAIN) if d.privileged else 0
        p = self.params
        info["store_mfn"], info["store_evtchn"] = p.get(HvmParam.STORE_PFN, 0), \
            p.get(HvmParam.STORE_EVTCHN, 0)
        if not d.privileged:
            info["console"] = {"domU": {"mfn": p.get(HvmParam.CONSOLE_PFN, 0),
                                        "evtchn": p.get(HvmParam.CONSOLE_EVTCHN, 0)}}
        return info

    def boot(self, ctx: dict, vcpu: int = 0) -> None:
        """Take the start state Xen's ``vcpu_guest_context`` gives (setvcpucontext,
        VCPUOP_initialise) for vCPU ``vcpu``; vCPU 0's is the domain's start of day too."""
        if ctx["gdt_ents"] > MAX_GDT_ENTRIES:
            raise HypercallError(Errno.EINVAL)
        n = (ctx["gdt_ents"] * 8 + 0xFFF) >> 12
        gdt = ctx["gdt_frames"][:n]
        if n and gdttype.mapped_writable(self, set(gdt)):
            raise HypercallError(Errno.EINVAL)   # (Xen's arch_set_info_guest: its set_gdt)
        with self.on_vcpu(vcpu) as target:
            cr = ctx["ctrlreg"]
            # then its CR3 takes the root type, validated against the GDTs as they will be
            # (its own the context's): -EINVAL if its tree maps one writable (a context
            # with paging off is checked when paging goes on, as a recorded NEW_BASEPTR)
            typed = self.gdt_typed([self._frame(g) >> 12 for g in gdt])
            if cr[0] & CR0_PG and gdttype.table_refused(self, cr[3] >> 12, 2, typed):
                raise HypercallError(Errno.EINVAL)
            self._load_context(ctx, target)
            if vcpu == 0:
                self._start_of_day(ctx)
            else:
                self.events.vcpu_masked(vcpu, True)   # events masked, as vCPU 0 starts
        target.initialised = True
        target.online = bool(ctx["flags"] & Vgcf.online)   # (Xen's arch_set_info_guest)

    def _start_of_day(self, ctx: dict) -> None:
        d, r = self.dom, ctx["user_regs"]
        self.map_rings()
        if not d.nr_ram_pages:
            # a domain the toolstack built: its kernel's RAM is what the builder gave it
            # less the ring pages start_info names apart (Xen's builder writes
            # start_info.nr_pages; here the hypervisor does, from the domain's memory)
            d.nr_ram_pages = d.tot_pages - sum(p in self.params for p, _ in RINGS)
            self.guest_ram = d.nr_ram_pages << 12
        if r["eax"] == MULTIBOOT_MAGIC:
            self.cmdline = self._multiboot_cmdline(r["ebx"])
        self.write_start_info()

    def _load_context(self, ctx: dict, target) -> None:
        """The loaded vCPU's registers, tables and callbacks from ``ctx``."""
        v = self.vcpu
        r = ctx["user_regs"]
        cr = ctx["ctrlreg"]
        v.cr0, v.cr3, v.cr4 = cr[0] | 1, cr[3], cr[4]
        v.gdt_base, v.gdt_limit = 0, 0
        self.gdt_frames = []
        if ctx["gdt_ents"]:
            n = (ctx["gdt_ents"] * 8 + 0xFFF) >> 12
            self.gdt_frames = [self._frame(g) >> 12 for g in ctx["gdt_frames"][:n]]
            v.gdt_limit = ctx["gdt_ents"] * 8 - 1
        v.vif, v.iopl, v.cpl = False, 0, 0
        v.cs, v.ss = r["cs"] & ~3, r["ss"] & ~3
        if ctx["kernel_ss"]:
            self.kstack = (ctx["kernel_ss"] & ~3, ctx["kernel_sp"])
        for kind, cs, eip in ((0, ctx["event_callback_cs"], ctx["event_callback_eip"]),
                              (1, ctx["failsafe_callback_cs"], ctx["failsafe_callback_eip"])):
            if eip:
                self.callbacks[kind] = ((cs & 0xFFFC) | 1, eip)
        for t in ctx["trap_ctxt"]:
            if t["address"]:
                self.trap_table[t["vector"]] = (t["flags"] & 7, (t["cs"] & 0xFFFC) | 1, t["address"])
        c = target.ctx
        c.regs = [r["eax"], r["ecx"], r["edx"], r["ebx"], r["esp"], r["ebp"], r["esi"], r["edi"]]
        c.eip, c.eflags = r["eip"], self.real_eflags(r["eflags"])
        c.cs, c.ss = self.kernel_cs(r["cs"]), (r["ss"] & 0xFFFC) | 1
        c.sregs = {i: (sel | 1 if sel & 0xFFFC else 0)
                   for i, sel in ((0, r["es"]), (3, r["ds"]), (4, r["fs"]), (5, r["gs"]))}
        # (its shadow directory is selected when it is switched in)

    def map_region(self) -> None:
        """Switched in: Xen's flat segments in the real GDT, and no ring-1 code segment over
        the whole address space (a bt domain's translated code runs in one: ``btdomain``)."""
        install_flat(self.mem, self.base)
        self.mem.write(self.base + L.GDT + (L.SEL_TCODE & ~7), bytes(8))
        self.mem.write(self.base + L.GDT + (L.SEL_RSTACK & ~7), bytes(8))   # (nor a bt ring-2 stack)

    def switched_in(self, f) -> None:
        """The events that became pending while it was off the CPU are delivered now."""
        v = self.vcpu
        v.vif = not self.events.upcall_mask
        if v.vif and self.events.upcall_pending:
            self.upcall(f)
        self.events.upcall_mask = not v.vif

    def physmap_changed(self) -> None:
        """Its P2M changed under existing mappings: its shadows start again."""
        self.shadow.flush()

    def close(self) -> None:
        """The domain stopped: its vCPUs' timers go."""
        for v in self.dom.vcpus:
            v.timer.close()

    def map_rings(self) -> None:
        """The shared rings the toolstack set up, at the fixed addresses the guest finds
        them (a frame the domain does not have is -EPERM)."""
        for param, va in RINGS:
            if param in self.params:
                self.fixed[va] = (self._frame(self.params[param]), True)

    def _multiboot_cmdline(self, info: int) -> str:
        """start_info.cmd_line: the command line the Multiboot loader left (the builder's)."""
        try:
            flags, = struct.unpack("<I", self.mem.read(self._guest_address(info), 4))
            if not flags & 4:
                return ""
            ptr, = struct.unpack("<I", self.mem.read(self._guest_address(info + 16), 4))
            out = bytearray()
            while len(out) < 1023:
                b = self.mem.read(self._guest_address(ptr + len(out)), 1)
                if b == b"\0":
                    break
                out += b
            return out.decode("latin-1")
        except HypercallError:
            return ""                         # (no memory there: no command line)

    def context(self) -> dict:
        """The loaded vCPU's state as ``vcpu_guest_context`` (getvcpucontext; the domain
        is paused)."""
        v, c = self.vcpu, self.dom.vcpus[self.loaded].ctx
        regs = dict(zip(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"), c.regs))
        regs.update(eip=c.eip, cs=c.cs, ss=c.ss, eflags=v.eflags_view(c.eflags),
                    es=c.sregs.get(0, 0), ds=c.sregs.get(3, 0), fs=c.sregs.get(4, 0),
                    gs=c.sregs.get(5, 0), saved_upcall_mask=int(self.events.upcall_mask))
        traps = [{"vector": vec, "flags": fl, "cs": cs, "address": eip}
                 for vec, (fl, cs, eip) in sorted(self.trap_table.items())][:256]
        ev = self.callbacks.get(0, (0, 0))
        fs = self.callbacks.get(1, (0, 0))
        ks = self.kstack or (0, 0)
        online = Vgcf.online if self.dom.vcpus[self.loaded].online else 0
        return {"flags": online | (0 if c.cs & 3 == 3 else Vgcf.in_kernel), "user_regs": regs,
                "trap_ctxt": traps,
                "gdt_frames": [self._gfn(f << 12) for f in self.gdt_frames][:16],
                "gdt_ents": (v.gdt_limit + 1) // 8 if self.gdt_frames else 0,
                "kernel_ss": ks[0], "kernel_sp": ks[1],
                "ctrlreg": [v.cr0, 0, v.cr2, v.cr3, v.cr4, 0, 0, 0],
                "event_callback_cs": ev[0], "event_callback_eip": ev[1],
                "failsafe_callback_cs": fs[0], "failsafe_callback_eip": fs[1]}

    def pinned_gfns(self) -> set[int]:
        """Frames the hypervisor uses for the domain's sake (its GDT, its rings, the
        vcpu_infos it registered): the domain may not give them back while it does (Xen's
        page references; a freed frame would take the hypervisor's writes elsewhere)."""
        out = self.gdt_typed()
        out |= {self.params[p] for p, _ in RINGS if p in self.params}
        out |= {v.vcpu_info_at[0] for v in self.dom.vcpus if v.vcpu_info_at is not None}
        return out

    def gdt_typed(self, loaded: list[int] | None = None) -> set[int]:
        """The GDT frames of every vCPU, up or down (a vCPU that went down keeps its GDT,
        as in Xen), as the domain's frame numbers; with ``loaded``, those (machine
        frames) in place of the loaded vCPU's (the GDT a new context gives it)."""
        frames = list(self.gdt_frames if loaded is None else loaded)   # and every other's
        for v in self.dom.vcpus:
            if v.slot is not None:
                frames += v.slot["gdt_frames"]
        return {self.dom.rev[f] for f in frames if f in self.dom.rev}

    def address_spaces(self) -> list[int]:
        out = super().address_spaces()          # the loaded vCPU's, and every other's
        for v in self.dom.vcpus:
            if v.slot is not None and v.slot["vcpu"].paging:
                out.append(v.slot["vcpu"].cr3)
        return out

    # -- pseudo-physical memory ------------------------------------------------------------
    def _frame(self, gfn: int) -> int:
        mfn = self.dom.p2m.get(gfn)
        if mfn is None:
            raise HypercallError(Errno.EPERM)
        return mfn << 12

    def _guest_address(self, gpa: int) -> int:
        mfn = self.dom.p2m.get(gpa >> 12)
        if mfn is None or not 0 <= gpa < 1 << 32:
            raise HypercallError(Errno.EINVAL)
        return mfn << 12 | (gpa & 0xFFF)

    def _gfn(self, ma: int) -> int:
        gpfn = self.dom.rev.get(ma >> 12)
        if gpfn is None:
            raise HypercallError(Errno.EFAULT)
        return gpfn

    def _check_pte(self, val: int) -> None:
        if val & 1 and (val >> 12) not in self.dom.p2m:
            raise HypercallError(Errno.EPERM)

    def _write_table_entry(self, ma: int, val: int) -> None:
        super()._write_table_entry(ma, val)
        if val & 3 == 3 and self._frame(val >> 12) >> 12 in self.gm.readonly:
            self.hv.forget_mappings(self.dom)       # a writable entry can never reach it

    def _machphys_update(self, mfn: int, gfn: int) -> None:
        """Set the M2P entry of a frame the domain owns (Xen's ownership check)."""
        if self.hv.frames.owner.get(mfn) != self.dom.domid or gfn not in self.dom.p2m \
                or self.dom.p2m[gfn] != mfn:
            raise HypercallError(Errno.EINVAL)
        self.hv.frames.m2p[mfn] = gfn

    def shadow_key(self) -> int:
        v = self.vcpu
        if not v.paging:
            return super().shadow_key()
        mfn = self.dom.p2m.get(v.cr3 >> 12)
        return -2 if mfn is None else mfn          # (an unbacked CR3 faults at the first walk)

    # -- the guest's descriptor tables --------------------------------------------------
    def guest_descriptor(self, sel: int) -> int | None:
        """Xen's flat selectors are the guest's too, whatever its GDT: a kernel may name
        FLAT_KERNEL_CS/SS in set_callbacks, set_trap_table, stack_switch or an iret frame
        (Mini-OS does, for all four)."""
        if not sel & 4 and (sel & ~7) in FLAT_AT:
            return FLAT_AT[sel & ~7]
        return super().guest_descriptor(sel)

    def load_gdt(self, base: int, limit: int) -> None:
        super().load_gdt(base, limit)
        install_flat(self.mem, self.base)     # Xen's flat segments stay, whatever the GDT

    def hc_set_gdt(self, f, frames_ptr, entries, *rest):
        if entries > MAX_GDT_ENTRIES:
            raise HypercallError(Errno.EINVAL)
        return super().hc_set_gdt(f, frames_ptr, entries, *rest)

    # -- the machine is the hypervisor's ---------------------------------------------------
    def external(self, vector: int) -> bool:
        return self.hv.external(vector)

    def console_write(self, data: bytes) -> None:
        self.hv.guest_console(self.dom, data)

    def stop(self, stop) -> None:
        self.hv.crash(self.dom, stop.message or stop.reason)

    # -- hypercalls with the machine shared -------------------------------------------------
    def _read(self, lin: int, n: int) -> bytes:
        return (self.argmem or self.gm).read(lin, n)

    def _write(self, lin: int, data: bytes) -> None:
        (self.argmem or self.gm).write(lin, data)

    def hc_domctl(self, f, ptr, *_):
        return control.domctl(self, ptr)

    def hc_sysctl(self, f, ptr, *_):
        return control.sysctl(self, ptr)

    def hc_xsm_op(self, f, ptr, *_):
        return control.xsm_op(self, ptr)

    def hc_memory_op(self, f, cmd, arg, *_):
        return memory.memory_op(self, cmd, arg)

    def hc_grant_table_op(self, f, cmd, uop, count, *_):
        return grant.grant_table_op(self, cmd, uop, count)

    def hc_hvm_op(self, f, cmd, arg, *_):
        """The ring parameters: set by the builder before the domain starts, read by anyone
        who may see the domain."""
        if cmd not in (HvmOp.set_param, HvmOp.get_param):
            raise HypercallError(Errno.ENOSYS)
        a = XEN_HVM_PARAM.unpack(self._read(arg, XEN_HVM_PARAM.size))
        target = self.hv.lookup(self.dom if a["domid"] == DomId.SELF else a["domid"])
        if target is None:
            raise HypercallError(Errno.ESRCH)
        if a["index"] not in set(HvmParam):
            raise HypercallError(Errno.EINVAL)
        m = target.monitor
        if cmd == HvmOp.set_param:
            self.hv.check(self.caller, target, "domain", "setvcpucontext")
            if target.started or a["value"] >> 32:
                raise HypercallError(Errno.EINVAL)
            if a["index"] in (HvmParam.CONSOLE_PFN, HvmParam.STORE_PFN):
                m._frame(a["value"])                 # a frame it has
            m.params[a["index"]] = a["value"]
            return 0
        if target is not self.dom:
            self.hv.check(self.caller, target, "domain", "getvcpucontext")
        a["value"] = m.params.get(a["index"], 0)
        self._write(arg, XEN_HVM_PARAM.pack(a))
        return 0

    def hc_xen_version(self, f, cmd, arg, *rest):
        if cmd == XenVer.get_features:
            idx = struct.unpack("<I", self._read(arg, 4))[0]
            bits = 1 << XenFeat.auto_translated_physmap | (1 << XenFeat.dom0 if self.dom.privileged else 0)
            self._write(arg + 4, struct.pack("<I", bits if idx == 0 else 0))
            return 0 if idx < 32 else -Errno.EINVAL
        return super().hc_xen_version(f, cmd, arg, *rest)

    def hc_console_io(self, f, cmd, count, buf, *rest):
        self.hv.check(self.caller, None, "xen", "writeconsole")
        return super().hc_console_io(f, cmd, count, buf, *rest)

    def hc_sched_op(self, f, cmd, arg, *rest):
        if cmd == SchedOp.shutdown:
            reason = SCHED_SHUTDOWN.unpack(self._read(arg, SCHED_SHUTDOWN.size))["reason"]
            if reason not in set(Shutdown):
                raise HypercallError(Errno.EINVAL)
            self.hv.shutdown(self.dom, reason)
            return 0
        if cmd == SchedOp.remote_shutdown:
            r = SCHED_REMOTE_SHUTDOWN.unpack(self._read(arg, SCHED_REMOTE_SHUTDOWN.size))
            target = self.hv.lookup(r["domain_id"])
            if target is None:
                raise HypercallError(Errno.ESRCH)
            self.hv.check(self.caller, target, "domain", "shutdown")
            if r["reason"] not in set(Shutdown):
                raise HypercallError(Errno.EINVAL)
            self.hv.shutdown(target, r["reason"])
            return 0
        if cmd == SchedOp.yield_:
            self.hv.yield_cpu(self.dom)
            return 0
        if self.argmem is not None:
            raise HypercallError(Errno.EINVAL)       # the toolstack has no vCPU to block
        return super().hc_sched_op(f, cmd, arg, *rest)

    def hc_vcpu_op(self, f, cmd, vcpu, arg, *rest):
        """VCPUOP_* on a vCPU of this domain (Xen's ``do_vcpu_op``: -ENOENT for one it
        does not have)."""
        d = self.dom
        if not 0 <= vcpu < len(d.vcpus):
            raise HypercallError(Errno.ENOENT)
        v = d.vcpus[vcpu]
        if cmd == VcpuOp.initialise:
            ctx = VCPU_GUEST_CONTEXT.unpack(self._read(arg, VCPU_GUEST_CONTEXT.size))
            if v.initialised:
                raise HypercallError(Errno.EEXIST)
            self.boot(ctx, vcpu)
            if v.online:
                vcpus.up(self.hv, v)
            return 0
        if cmd == VcpuOp.up:
            if not v.initialised:
                raise HypercallError(Errno.EINVAL)   # no context yet (Xen: -EINVAL)
            vcpus.up(self.hv, v)
            return 0
        if cmd == VcpuOp.down:
            vcpus.down(self.hv, v)
            return 0
        if cmd == VcpuOp.is_up:
            return int(v.online)
        if cmd == VcpuOp.get_runstate_info:
            # (any vCPU of its own, Xen's too; times in its system time, ns)
            self._write(arg, VCPU_RUNSTATE_INFO.pack(vcpuinfo.runstate_info(
                v, self.hv.clock.now_ns(), self.time_offset_ns)))
            return 0
        if cmd == VcpuOp.register_vcpu_info:
            return vcpuinfo.register_vcpu_info(self, v, arg)
        if cmd == VcpuOp.register_runstate_memory_area:
            return vcpuinfo.register_runstate_area(self, v, arg)
        if cmd == VcpuOp.set_periodic_timer:
            period = VCPU_SET_PERIODIC_TIMER.unpack(self._read(arg, 8))["period_ns"]
            if period < MIN_PERIOD_NS:
                raise HypercallError(Errno.EINVAL)
            v.timer.set_periodic(period)
            return 0
        if cmd == VcpuOp.stop_periodic_timer:
            v.timer.stop_periodic()
            return 0
        if cmd in (VcpuOp.set_singleshot_timer, VcpuOp.stop_singleshot_timer) and \
                vcpu != self.loaded:
            raise HypercallError(Errno.EINVAL)       # only the calling vCPU's (Xen)
        return super().hc_vcpu_op(f, cmd, 0, arg, *rest)

    def hc_event_channel_op(self, f, cmd, arg, *rest):
        if cmd == EvtchnOp.bind_vcpu:
            b = EVTCHN_BIND_VCPU.unpack(self._read(arg, EVTCHN_BIND_VCPU.size))
            self.events.bind_vcpu(b["port"], b["vcpu"])
            return 0
        return super().hc_event_channel_op(f, cmd, arg, *rest)

    def hc_rv_blkback_op(self, f, cmd, arg, *rest):
        return blkback.blkback_op(self, cmd, arg)

    # -- the toolstack's calls ---------------------------------------------------------------
    def call(self, nr: int, args: tuple, argmem) -> int:
        """A hypercall of Domain 0's user space: validated and checked exactly as the
        guest's own, with pointers into ``argmem`` (its memory) instead of the kernel's."""
        if nr not in TOOLSTACK_HYPERCALLS:
            return -Errno.ENOSYS
        self.argmem, self.hv.caller = argmem, self.dom
        try:
            result = self.do_hypercall(None, nr, args)
        finally:
            self.argmem, self.hv.caller = None, None
        return result if isinstance(result, int) else 0


DomainMonitor.HYPERCALLS = hypercall_table(DomainMonitor)
