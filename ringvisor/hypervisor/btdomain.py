"""A bt domain: an unmodified kernel as one domain of the hypervisor, under binary translation.

``BinaryTranslation`` (``ringvisor.vmm.bt``) runs one unmodified kernel that
owns the PC.  Here the same monitor runs one domain beside para-virtual
ones, so the chapter's structures run side by side on one machine (VMware's
binary translation, Xen's para-virtualization).  What changes when the
machine is shared:

- memory is pseudo-physical: the guest's physical addresses go through its
  P2M (frames from the hypervisor's pool), so its page walks, shadows and
  the frames its translations come from are machine frames;
- its translation cache is its own: contiguous frames from the pool (code
  is written by machine address), mapped at the region's ``TC`` window
  while the domain is on the CPU (``map_region``, as Xen maps per-domain
  areas of its own region at a context switch);
- its devices are its own (``btdevices``: PIC, PIT, UART on the console
  ring, isa-debug-exit); the machine's interrupts and the hypervisor's timer
  are the hypervisor's to route (``dispatch``);
- its vCPU starts in the Multiboot entry state (``boot``): the registers the
  builder's ``setvcpucontext`` gives (the loader's), flat segments of the
  loader's GDT, protected mode without paging;
- stopping is the domain's, not the machine's: a halt with interrupts off,
  a triple fault or a monitor stop crashes this domain, the others go on.

Saving, restoring and migrating a bt domain carry its vCPU in the guest's
terms, its devices and the monitor's state, not its translations or shadows
(``btsave``).
"""

from __future__ import annotations

import struct
from contextlib import contextmanager

from ringvisor.abi import Errno, HvmParam
from ringvisor.hw.boot import multiboot
from ringvisor.vmm import layout as L
from ringvisor.vmm.bt import BinaryTranslation
from ringvisor.vmm.descriptors import monitor_descriptors
from ringvisor.vmm.errors import MonitorStop
from ringvisor.vmm.guestmem import GuestBadFrame, GuestPageFault
from ringvisor.vmm.errors import HypercallError

from .btdevices import DomainDevices

TC_PAGES = 256                  # each bt domain's translation cache: 1 MiB
PTE_FLAGS = 0x63                # present, writable, accessed, dirty; supervisor (the region's)
IF = 1 << 9


class BtDomainMonitor(BinaryTranslation):
    name = "domain-bt"
    virtual_apic = False            # a domain gets no local APIC (the 8259A's output is its INTR)
    pae = False                     # (its saved context, ``ctrlreg``, carries no PDPTEs)
    # a domain's memory is its P2M's: it stops where it would leave protected mode (as a
    # para-virtualized one does), and its real-mode part holds nothing to save
    real_mode = False
    STATE = tuple(n for n in BinaryTranslation.STATE if n != "real")
    WIRING = BinaryTranslation.WIRING + ("real",)

    def __init__(self, hv, dom, pages: dict[str, int], shadow_pool: list[int],
                 tc_frames: list[int]) -> None:
        super().__init__(hv.machine, 0, len(tc_frames) << 12, tc_phys=tc_frames[0] << 12,
                         base=hv.base, shadow_pool=shadow_pool)
        self.hv, self.dom = hv, dom
        self.name = f"d{dom.domid}"
        self.gm.p2m = dom.p2m                   # the live P2M: pseudo-physical is not machine
        self.gm.readonly = set()                # (frames granted read-only: it maps none)
        self.devices = DomainDevices(hv, dom, self.name)
        self.platform = self.devices.platform
        self.tc_frames = tc_frames
        self.si_phys = pages["shared_info"]     # (getdomaininfo's shared_info_frame)
        self.params: dict[int, int] = {}        # HVM_PARAM_* the builder set (its console ring)
        self.tsc_offset = 0
        self.cmdline = ""

    # -- what the hypervisor asks of every domain's monitor -------------------------------
    def _frame(self, gfn: int) -> int:
        mfn = self.dom.p2m.get(gfn)
        if mfn is None:
            raise HypercallError(Errno.EPERM)
        return mfn << 12

    def pinned_gfns(self) -> set[int]:
        """Frames the hypervisor uses for the domain's sake: its console ring."""
        return {v for p, v in self.params.items() if p in (HvmParam.CONSOLE_PFN, HvmParam.STORE_PFN)}

    def boot(self, ctx: dict) -> None:
        """setvcpucontext: the Multiboot entry state with the builder's registers."""
        r = ctx["user_regs"]
        v, d = self.vcpu, self.dom
        if ctx["ctrlreg"][0] & 0x80000001 != 1:
            raise HypercallError(Errno.EINVAL)     # protected mode, paging off, as Multiboot
        v.cr0, v.cr3, v.cr4 = ctx["ctrlreg"][0], 0, 0
        v.gdt_base, v.gdt_limit = multiboot.GDT_ADDR, multiboot.GDT_LIMIT
        v.idt_base, v.idt_limit = 0, 0x3FF
        v.vif, v.iopl, v.cpl = False, 0, 0
        v.cs, v.ss = r["cs"] & 0xFFFC, r["ss"] & 0xFFFC
        self.connect_console()
        c = d.ctx
        c.regs = [r["eax"], r["ecx"], r["edx"], r["ebx"], r["esp"], r["ebp"], r["esi"], r["edi"]]
        c.eip, c.cs = self.kernel_entry(r["eip"]), self.kernel_cs(v.cs)
        c.eflags, c.ss = self.real_eflags(r["eflags"] & ~IF), v.ss | 1
        c.sregs = {i: r[n] & 0xFFFC for i, n in ((0, "es"), (3, "ds"), (4, "fs"), (5, "gs"))}
        c.extra = {"dr": [0] * 8}
        d.vcpus[0].initialised = d.vcpus[0].online = True

    def connect_console(self) -> None:
        """Its UART writes into the console ring the builder set up (HVM_PARAM_CONSOLE_*),
        once it knows both the ring's frame and its port."""
        if HvmParam.CONSOLE_PFN in self.params and HvmParam.CONSOLE_EVTCHN in self.params:
            self.devices.connect_console(self._frame(self.params[HvmParam.CONSOLE_PFN]),
                                         self.params[HvmParam.CONSOLE_EVTCHN])

    def load_vcpu(self, k: int) -> None:
        """(A bt domain has one vCPU: always loaded.)"""

    @contextmanager
    def on_vcpu(self, k: int):
        yield self.dom.vcpus[k]

    def context(self) -> dict:
        raise HypercallError(Errno.EOPNOTSUPP)     # (no vcpu_guest_context for a bt vCPU)

    def map_region(self) -> None:
        """Switched in: the ring-1 code segment its translations run in (a PV domain has
        none), its translation cache at the region's TC window (the CR3 load that follows
        flushes the TLB), and the x87's view of translated code is its."""
        tcode = L.SEL_TCODE & ~3
        self.mem.write(self.base + L.GDT + tcode, struct.pack("<Q", monitor_descriptors()[tcode]))
        # (and its ring-2 stack's stand-in, which another domain's may have replaced)
        self.mem.write(self.base + L.GDT + (L.SEL_RSTACK & ~7), struct.pack("<Q", self.rstack))
        pt = self.base + L.MONITOR_PT + (L.TC >> 12) * 4
        self.mem.write(pt, b"".join(struct.pack("<I", (f << 12) | PTE_FLAGS)
                                    for f in self.tc_frames))
        self.cpu.connect_fpu_origin(self.fpu_origin)

    def switched_in(self, f) -> None:
        """What its devices raised while it was off the CPU is taken now (a memory it
        cannot reach stops it, as in ``Monitor.handle``)."""
        try:
            self.deliver_interrupts(f)
        except (GuestBadFrame, GuestPageFault) as e:
            raise MonitorStop(f"{self.name}: {e}") from None

    def physmap_changed(self) -> None:
        """Its P2M changed under existing mappings (Domain 0 took frames from it): its
        shadows start again, and translations whose guest pages now map other frames (or
        none) go, as after a CR3 load."""
        self.shadow.flush()
        self.follow_mappings(list(self.tc.by_page))

    def close(self) -> None:
        self.devices.close()

    # -- the machine is the hypervisor's ----------------------------------------------------
    def dispatch(self, vector: int, f) -> None:
        if vector == L.HV_TIMER or L.PIC_BASE <= vector < L.PIC_BASE + 16:
            self.hv.external(vector)               # Domain 0's interrupt, or the scheduler's
            self.traps["hypervisor interrupt"] += 1
            return
        super().dispatch(vector, f)

    def stop(self, stop) -> None:
        self.hv.crash(self.dom, stop.message or stop.reason)

    def report(self) -> dict:
        out = super().report()
        if self.devices.console is not None:
            out["console"] = dict(self.devices.console.stats)
        return out
