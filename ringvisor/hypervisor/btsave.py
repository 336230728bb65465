"""A paused bt domain's context as data: what ``xl save`` carries of an unmodified kernel.

A bt domain's memory goes in the stream as a PV domain's does (foreign
mappings of its pseudo-physical frames); this is the rest, its record in
``gethvmcontext`` (``domsave``'s, with ``"kind": "bt"``, canonical JSON):

- its vCPU as a context switch leaves it, in the *guest's* terms: where the
  kernel was in translated code is saved as the guest EIP that translation
  stands for (``TranslationCache.guest_eip``, as an interrupt delivered there
  pushes it) and the virtual CS, not the monitor's ring-1 code segment; user
  code and VM86 code run as they are, their frame is saved as it is;
- the monitor's state that names no machine frame and no translation-cache
  address (``MONITOR_FIELDS``: the virtual CPU -- control registers, GDTR,
  IDTR, virtual IF and IOPL --, its virtual PIC, the halt, the CS base the
  translations assume, the counters and the adaptive sites, which are keyed by
  guest EIP, and the ring-2 stack's stand-in descriptor); an interrupt shadow (after STI or MOV SS) still covering the
  instruction it stopped at, as a flag;
- its devices (``btdevices``): the PIT's counters and the UART's registers with
  their times kept *relative* (a restore continues them from the machine's
  clock there, as the PV domains' timers), the ATA disk's registers (put back
  when the toolstack attaches the disk again), console output the ring had no
  room for yet;
- its HVM parameters (the console and xenstore rings' frames and ports), event
  channels (an inter-domain one saved unbound: the toolstack binds its
  back-ends again), the shared-info page's pending bits, its TSC, memory
  figures, CPU time and runstate.

Rebuilt, not saved: the translation cache (its units are translated again
from the guest's code as it runs: the saved vCPU resumes at the start of a
fresh translation of its guest EIP), the shadow page tables (from the guest's
own tables at the first switch to it) and the real GDT's and LDT's copies of
its descriptors.  A vCPU in the middle of a single-stepped instruction is not
saved (-EBUSY: the hypervisor finishes the step before a paused domain leaves
the CPU), nor one stopped in translated code that stands for no guest
instruction.
"""

from __future__ import annotations

from ringvisor.abi import Errno, HvmParam
from ringvisor.hw.state import VM, FpuState
from ringvisor.vmm import layout as L
from ringvisor.vmm import state as S
from ringvisor.vmm.errors import fail

from . import vcpus
from .domain import VcpuContext

MONITOR_FIELDS = ("vcpu", "platform", "guest_halted", "traps", "emulated", "stats",
                  "watchpoints", "code_base", "table_write_traps", "adaptive", "adapt_after",
                  "rstack")
# (ring_units: whether the translation cache holds units made for rings 1 and 2 -- a
# restored domain's cache is new, so none)
REBUILT = ("tc", "shadow", "gdt", "ldt", "ring_units")
# the single step (none at a save) and the interrupt shadow (a flag on the vCPU's place);
# a test checks that these three cover the monitor's STATE
BY_RULE = ("step_state", "shadow_at")
PAGE = 0x1000


class _Fields(S.View):
    STATE = MONITOR_FIELDS


def context(hv, d, ports: list[dict]) -> dict:
    """The record of paused, descheduled bt domain ``d`` (``ports``: its event channels
    as a save gives them)."""
    m, v = d.monitor, d.vcpus[0]
    c = v.ctx
    if m.step is not None:
        fail(Errno.EBUSY)
    kernel = c.cs == L.SEL_TCODE and not c.eflags & VM      # (Monitor.in_tc)
    eip = c.eip
    if kernel:
        eip = m.tc.guest_eip(c.eip)
        if eip is None:
            fail(Errno.EBUSY)
    dev = m.devices
    cycles = hv.clock.cycles()
    pit = dev.pit.get_state()
    for ch in pit["channels"]:
        ch["load_cycle"] -= cycles
    uart = dev.uart.get_state()
    if uart["timeout_at"] >= 0:
        uart["timeout_at"] -= cycles
    fpu = c.extra.get("fpu")
    st = hv.cpu.state
    return {
        "kind": "bt",
        "monitor": S.get_attrs(_Fields(m)),
        "regs": {"regs": list(c.regs), "eip": eip, "kernel": kernel,
                 "cs": m.vcpu.cs if kernel else c.cs, "eflags": c.eflags, "ss": c.ss,
                 "sregs": dict(c.sregs), "dr": list(c.extra.get("dr", [])),
                 "fpu": fpu.to_dict() if fpu is not None else None,
                 "interrupt_shadow": m.shadow_at == (c.cs, c.eip)},
        "devices": {"pit": pit, "uart": uart,
                    "disk": dev.disk.get_state() if dev.disk is not None else None,
                    "console": bytes(dev.console.pending) if dev.console else b"",
                    "early": bytes(dev.early)},
        "params": dict(m.params),
        "events": {**d.events.get_state(), "ports": ports},
        "shared_info": hv.mem.read(m.si_phys, PAGE),
        "tsc": (hv.cpu.tsc() - st.tsc_offset + m.tsc_offset) & 0xFFFFFFFFFFFFFFFF,
        "vcpu": {"online": v.online, "blocked": v.blocked, "cpu_time_ns": v.cpu_time_ns,
                 "runstate": [v.runstate, *v.runstate_ns]},
        "domain": {"nr_ram_pages": d.nr_ram_pages, "max_pages": d.max_pages,
                   "cpu_time_ns": d.cpu_time_ns},
    }


def apply(hv, d, st: dict) -> None:
    """Give new, paused bt domain ``d`` (its memory in place) the record ``st``.  A
    malformed record raises (``domsave.set_context``: -EINVAL)."""
    m = d.monitor
    if st.get("kind") != "bt":
        raise ValueError("not a bt domain's context")
    params = {int(k): int(v) for k, v in st["params"].items()}
    for ring in (HvmParam.CONSOLE_PFN, HvmParam.STORE_PFN):
        if ring in params:
            m._frame(params[ring])                    # a ring outside its memory: -EPERM
    si = bytes(st["shared_info"])
    if len(si) != PAGE:
        raise ValueError("shared info page")
    if not isinstance(st["monitor"], dict):
        raise ValueError("monitor state")
    # (a domain saved before rings 1 and 2 ran under bt has no ring-2 stack stand-in)
    S.set_attrs(_Fields(m), {"rstack": 0, **st["monitor"]})
    m.params = params
    hv.mem.write(m.si_phys, si)
    d.events.set_state(st["events"])
    _devices(hv, m, st["devices"])
    st_cpu = hv.cpu.state
    m.tsc_offset = int(st["tsc"]) - (hv.cpu.tsc() - st_cpu.tsc_offset)
    dom = st["domain"]
    d.nr_ram_pages, d.max_pages = int(dom["nr_ram_pages"]), int(dom["max_pages"])
    d.cpu_time_ns = int(dom["cpu_time_ns"])
    # its physmap is new: no shadow, no translation from before (the units made below
    # are made with its frames tracked)
    hv.forget_mappings(d)
    _vcpu(hv, d, st["regs"], st["vcpu"])


def _devices(hv, m, dev: dict) -> None:
    devices = m.devices
    cycles = hv.clock.cycles()
    pit = dev["pit"]
    for ch in pit["channels"]:
        ch["load_cycle"] = int(ch["load_cycle"]) + cycles
    devices.pit.set_state(pit)
    uart = dict(dev["uart"])
    if int(uart.get("timeout_at", -1)) >= 0:
        uart["timeout_at"] = int(uart["timeout_at"]) + cycles
    devices.uart.set_state(uart)
    devices.saved_disk = dev["disk"]                  # (for the toolstack's attach)
    devices.early = bytearray(dev["early"])
    m.connect_console()
    if devices.console is not None:
        devices.console.pending = bytearray(dev["console"])


def _vcpu(hv, d, r: dict, rec: dict) -> None:
    m, v = d.monitor, d.vcpus[0]
    extra = {"dr": [int(x) for x in r["dr"]]} if r["dr"] else {}
    if r["fpu"] is not None:
        extra["fpu"] = FpuState.from_dict(r["fpu"])
    c = VcpuContext(regs=[int(x) for x in r["regs"]][:8], eip=int(r["eip"]),
                    cs=int(r["cs"]), eflags=int(r["eflags"]), ss=int(r["ss"]),
                    sregs={int(k): int(s) for k, s in r["sregs"].items()}, extra=extra)
    if len(c.regs) != 8:
        raise ValueError("registers")
    if r["kernel"]:
        # a fresh translation of the guest EIP, in the segment translations run in
        c.cs = m.kernel_cs(int(r["cs"]))
        c.eip = m.kernel_entry(int(r["eip"]))
    m.shadow_at = (c.cs, c.eip) if r["interrupt_shadow"] else None
    d.ctx = c
    v.initialised = True
    v.online, v.blocked = bool(rec["online"]), bool(rec["blocked"])
    v.cpu_time_ns = int(rec["cpu_time_ns"])
    vcpus.context_set(hv, v)
    v.runstate_ns = [int(x) for x in rec["runstate"][1:5]]
