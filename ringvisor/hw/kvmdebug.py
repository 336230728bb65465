"""The host debugger's hold on a KVM vCPU: ``HostDebug`` as ``KVM_SET_GUEST_DEBUG``.

On the emulated CPU the host debugger (``hostdebug.py``) is checked by the
CPU itself.  Under ``--mode kvm`` the host's processor runs the guest, so the
same breakpoints, watchpoints and single steps are asked of KVM, as QEMU's
``kvm_update_guest_debug`` does (``target/i386/kvm/kvm.c``):

* software breakpoints are ``int3`` bytes written into guest memory for the
  length of a run, with ``KVM_GUESTDBG_USE_SW_BP`` so that their #BP exits to
  us (``KVM_EXIT_DEBUG``, exception 3) instead of reaching the guest's IDT.
  They are taken out again when the run ends, so between runs -- whenever a
  debugger can look -- guest memory holds the guest's own bytes;
* hardware breakpoints and watchpoints take the processor's four debug
  registers (``KVM_GUESTDBG_USE_HW_BP``, DR0-DR3 and DR7 as SDM Vol. 3 §17.2.4
  lays them out); KVM keeps the guest's own DR0-DR7 aside meanwhile.  A
  watched range is cut into aligned pieces of 1, 2 or 4 bytes, one register
  each.  x86 has no read-only data breakpoint (R/W 10b is I/O, 11b reads *or*
  writes), so ``rwatch`` is refused, as QEMU refuses it under KVM;
* a single step is ``KVM_GUESTDBG_SINGLESTEP`` (KVM sets TF and hides it from
  the guest);
* a #DB or #BP that is not the debugger's -- the guest's own TF, ICEBP, an
  ``int3`` of its own -- goes back to the guest (``KVM_GUESTDBG_INJECT_DB`` /
  ``INJECT_BP``), with its DR6 bits.

Not every KVM does all of it: kvm-pvm (a software KVM) single-steps and
reports instruction breakpoints in debug registers, but fails to emulate a
planted ``int3`` and never reports a data breakpoint.  :func:`limits` probes it
once with tiny guests; where software breakpoints fail, breakpoints take debug
registers instead, and where data breakpoints fail, watchpoints are refused
with the reason (gdb can still watch by single-stepping:
``set can-use-hw-watchpoints 0``).
"""

from __future__ import annotations

import functools

from . import kvm as K
from .hostdebug import HostEvent

INT3 = 0xCC
DR6_BS = 0x4000               # single step (SDM Vol. 3 §17.2.3)
DR6_HITS = 0xF                # B0-B3: which debug register matched
# DR7 (SDM Vol. 3 §17.2.4): G0-G3 enable, R/W and LEN per register; GE and bit 10 (always
# 1) as QEMU sets them
DR7_BASE = 0x600
DR7_RW = {"exec": 0, "write": 1, "access": 3}
DR7_LEN = {1: 0, 2: 1, 4: 3}
SLOTS = 4


def dr7_slot(n: int, rw: str, length: int) -> int:
    """DR7's bits enabling debug register ``n`` (globally) for ``rw`` over ``length`` bytes."""
    return 2 << (2 * n) | DR7_RW[rw] << (16 + 4 * n) | DR7_LEN[length] << (18 + 4 * n)


def pieces(first: int, length: int) -> list[tuple[int, int]]:
    """A watched range as naturally aligned pieces of 1, 2 or 4 bytes (a debug register
    matches an aligned range: SDM Vol. 3 §17.2.5)."""
    out, a, end = [], first, first + length
    while a < end:
        n = 4
        while a % n or a + n > end:
            n //= 2
        out.append((a, n))
        a += n
    return out


def plan(breakpoints, watchpoints, software: bool) -> list[tuple[int, str, int, int]]:
    """The debug registers a set of breakpoints and watchpoints takes: (address, R/W,
    length, the watched range's first byte).  A ValueError says why they do not fit."""
    slots = [] if software else [(a, "exec", 1, a) for a in sorted(breakpoints)]
    for first, last, kind in watchpoints:
        if kind == "read":
            raise ValueError("x86 debug registers cannot break on reads alone (R/W 11b is "
                             "reads or writes): use awatch")
        slots += [(a, kind, n, first) for a, n in pieces(first, last - first + 1)]
    if len(slots) > SLOTS:
        raise ValueError(f"the processor has {SLOTS} debug registers: these breakpoints and "
                         f"watchpoints need {len(slots)}")
    return slots


class KvmDebug:
    """One vCPU's guest debugging: what a run asks of KVM, and what its debug exits mean.

    ``host`` is the CPU's HostDebug (the debugger's breakpoints and watchpoints), ``mem``
    the guest's memory, ``translate`` a linear address to a physical one (None: unmapped).
    """

    def __init__(self, vcpu, mem, host, translate) -> None:
        self.vcpu, self.mem, self.host, self.translate = vcpu, mem, host, translate
        self.planted: dict[int, tuple[int, int]] = {}   # linear -> (physical, the guest's byte)
        self.slots: list[tuple[int, str, int, int]] = []
        self.stepping = False
        self.control = 0                  # what KVM was last told (0: no guest debugging)

    def limits(self) -> dict[str, str]:
        return limits() if self.host.breakpoints or self.host.watchpoints else {}

    def check(self, breakpoints, watchpoints) -> None:
        """Would these fit?  A ValueError with the reason if not."""
        lim = limits() if breakpoints or watchpoints else {}
        if watchpoints and "watchpoints" in lim:
            raise ValueError(lim["watchpoints"])
        plan(breakpoints, [(f, f + n - 1, k) for f, n, k in watchpoints],
             "breakpoints" not in lim)

    def arm(self, step: bool = False, breakpoints: bool = True) -> None:
        """Before KVM_RUN: plant the breakpoints (none during a step) and tell KVM."""
        host = self.host
        lim = self.limits()
        software = "breakpoints" not in lim
        bps = host.breakpoints if breakpoints and not step else set()
        watch = host.watchpoints if "watchpoints" not in lim else []
        self.slots = plan(bps, watch, software)
        if software:
            for lin in bps:
                phys = self.translate(lin)
                if phys is None or not self.mem.is_ram(phys):
                    continue              # not mapped now: it cannot run before the next stop
                old = self.mem.read(phys, 1)[0]
                self.mem.write(phys, bytes([INT3]))
                self.planted[lin] = (phys, old)
        control = 0
        if self.planted or self.slots or step:
            control = K.GUESTDBG_ENABLE
            control |= K.GUESTDBG_USE_SW_BP if self.planted else 0
            control |= K.GUESTDBG_USE_HW_BP if self.slots else 0
            control |= K.GUESTDBG_SINGLESTEP if step else 0
        self.stepping = step
        self._tell(control)

    def _tell(self, control: int, inject: int = 0) -> None:
        if control == self.control == 0 and not inject:
            return
        regs = [0] * 8
        dr7 = DR7_BASE if self.slots else 0
        for n, (addr, rw, length, _) in enumerate(self.slots):
            regs[n] = addr
            dr7 |= dr7_slot(n, rw, length)
        regs[7] = dr7
        self.vcpu.set_guest_debug(control | inject, regs)
        self.control = control

    def disarm(self) -> None:
        """After the run: the guest's own bytes back where it left the int3s alone."""
        for phys, old in self.planted.values():
            if self.mem.read(phys, 1)[0] == INT3:
                self.mem.write(phys, bytes([old]))
        self.planted.clear()

    def debug_exit(self, d, linear_pc: int) -> HostEvent | None:
        """A KVM_EXIT_DEBUG: the debugger's event, or None when it was the guest's own
        #DB or #BP, which is then given back to the guest."""
        if d.exception == K.BP_VECTOR:
            if linear_pc in self.planted:
                return HostEvent("breakpoint", linear_pc)
            self._tell(self.control, K.GUESTDBG_INJECT_BP)
            return None
        event = None
        for n, (addr, rw, _, first) in enumerate(self.slots):
            if d.dr6 & (1 << n):
                event = HostEvent("breakpoint", addr) if rw == "exec" else HostEvent(rw, first)
                if rw != "exec":
                    break                 # a watchpoint's stop says which range it was
        if event is None and self.stepping and d.dr6 & DR6_BS:
            event = HostEvent("step", linear_pc)
        if event is not None:
            return event
        # the guest's own #DB: its DR6 bits (none of ours) go with it
        regs = self.vcpu.debugregs()
        regs.dr6 = d.dr6 & ~DR6_HITS if self.slots else d.dr6
        self.vcpu.set_debugregs(regs)
        self._tell(self.control, K.GUESTDBG_INJECT_DB)
        return None


# -- what this host's KVM reports (probed once) ----------------------------------------------
PROBE_BREAK = bytes.fromhex("90 90 b041 e610 f4")               # nop; nop; mov al, 'A'; out; hlt
PROBE_WATCH = bytes.fromhex("a300400000 90 b041 e610 f4")       # mov [0x4000], eax; nop; ...


@functools.cache
def limits() -> dict[str, str]:
    """What of guest debugging this host's KVM does not do: {"breakpoints" | "watchpoints":
    why}, one line each (empty on a VT-x or SVM host)."""
    out = {}

    def plant(vcpu, mem):
        mem[0x1001] = INT3
        vcpu.set_guest_debug(K.GUESTDBG_ENABLE | K.GUESTDBG_USE_SW_BP)
    reason, _, d = K.probe_run(PROBE_BREAK, plant)
    if not (reason == K.EXIT_DEBUG and d.exception == K.BP_VECTOR and d.pc == 0x1001):
        out["breakpoints"] = (f"this host's KVM does not report a planted int3 "
                              f"(KVM_EXIT_{K.EXIT_NAMES.get(reason, reason)}): breakpoints "
                              f"take debug registers")

    def watch(vcpu, mem):
        vcpu.set_guest_debug(K.GUESTDBG_ENABLE | K.GUESTDBG_USE_HW_BP,
                             [0x4000, 0, 0, 0, 0, 0, 0, DR7_BASE | dr7_slot(0, "write", 4)])
    reason, _, d = K.probe_run(PROBE_WATCH, watch)
    if not (reason == K.EXIT_DEBUG and d.exception == K.DB_VECTOR and d.dr6 & 1):
        out["watchpoints"] = (f"this host's KVM does not report data breakpoints (a watched "
                              f"write ran on to KVM_EXIT_{K.EXIT_NAMES.get(reason, reason)}): "
                              f"no hardware watchpoints under kvm here (gdb can watch by "
                              f"stepping: set can-use-hw-watchpoints 0)")
    return out
