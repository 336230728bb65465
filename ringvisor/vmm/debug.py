"""The guest's own debugging under a monitor: single-step, breakpoints, DR6.

A kernel debugs itself with EFLAGS.TF and RF and the debug registers (SDM
Vol. 3 ch. 17).  Its DR0-DR7 are virtual (``VirtualCpu.dr``); what they ask
for, the hardware does wherever it sees what the guest does:

- the guest's breakpoints are loaded into the real DR0-DR3/DR7 (addresses
  below the hypervisor region; not I/O breakpoints, whose port I/O traps anyway
  and whose hits the monitor owes (``watch_port``), nor DR7.GD: the guest's MOV DRn traps anyway, and the monitor raises
  its general-detect #DB, ``general_detect``), so the data accesses of the guest's own code, and the
  execution of code that runs as itself (all of it under trap-and-emulate,
  user code under binary translation), raise real #DBs;
- TF and RF are the guest's in the real EFLAGS, so the hardware single-steps
  the guest's code and lets RF spare one instruction breakpoint.

What the hardware cannot see, the monitor does itself:

- an instruction the monitor emulates (a #GP trapped under trap-and-emulate, a
  callout) completes with the trap the hardware would have raised after it:
  single-step if TF was set when it began, a data breakpoint if the reads and
  writes the monitor made for it touched a watched address (``completed``);
- binary translation runs kernel code at other addresses: an instruction
  breakpoint there is a check compiled into the translation, and stepping
  runs one-instruction translations (``bt``).

Each #DB the guest gets updates its DR6 as the hardware updates DR6 (a
single step sets BS; a breakpoint replaces B0-B3: ``hw/cpu.py`` ``step``), and
the real DR6 is reset after each real #DB, so it only ever shows the event
at hand.
"""

from __future__ import annotations

from ringvisor.hw.faults import DB
from ringvisor.hw.state import CR4_DE, RF
from ringvisor.hw.controlregs import DR7_GD, debug_register, debug_register_value, general_detect

from .errors import GuestFault
from .guestmem import GuestPageFault

from . import layout as L
from .frame import Frame

DR6_B = 0xF                    # B0-B3: which breakpoint matched
DR6_BS = 1 << 14               # the single-step trap
DR6_INIT = 0xFFFF0FF0          # DR6 with no event (reserved bits read as 1)
EXEC, WRITE, IO, ACCESS = 0, 1, 2, 3     # DR7 R/W encodings


def breakpoints(dr: list[int]) -> list[tuple[int, int, int, int]]:
    """The breakpoints DR7 enables: (index, first byte, R/W, length), the address
    aligned down to the length as the hardware matches it (SDM Vol. 3 §17.2.4-5) --
    but an instruction breakpoint's is its address, one byte: its LEN should be 00,
    and another is ignored, as on the bare PC (``hw/cpu.py: update_debug``) and QEMU."""
    dr7 = dr[7]
    out = []
    for i in range(4):
        if (dr7 >> (2 * i)) & 3:
            rw = (dr7 >> (16 + 4 * i)) & 3
            length = (1, 2, 8, 4)[(dr7 >> (18 + 4 * i)) & 3] if rw != EXEC else 1
            out.append((i, dr[i] & ~(length - 1) & 0xFFFFFFFF, rw, length))
    return out


class GuestDebug:
    """The debugging machinery of the monitor core (mixed into ``Monitor``)."""

    db_hits = 0                  # B0-B3 matched by accesses the monitor made for the guest
    db_owed = 0                  # DR6 bits of the #DB the instruction just emulated owes
    watchpoints: tuple = ()      # the guest's enabled data breakpoints (``breakpoints``)

    # -- the guest's debug registers ------------------------------------------------------
    def read_dr(self, n: int) -> int:
        """MOV from DRn at (virtual) CPL 0."""
        return self.vcpu.dr[debug_register(self.vcpu.cr4, n)]

    def general_detect(self, n: int) -> None:
        """Before MOV to or from DRn at (virtual) CPL 0: DR4/DR5's #UD, then the #DB
        fault DR7.GD asks for (DR6.BD set, GD cleared: ``hw.controlregs.general_detect``)."""
        debug_register(self.vcpu.cr4, n)
        if general_detect(self.vcpu.dr):
            raise GuestFault(DB)

    def write_dr(self, n: int, value: int) -> None:
        """MOV to DRn at (virtual) CPL 0."""
        n = debug_register(self.vcpu.cr4, n)
        self.vcpu.dr[n] = debug_register_value(n, value)
        if n != 6:
            self.load_debug()

    def load_debug(self) -> None:
        """Give the hardware the guest's breakpoints (those it can watch for it: not the
        I/O ones, not any in the hypervisor region, where the guest cannot be)."""
        v, st = self.vcpu, self.cpu.state
        bps = breakpoints(v.dr)
        dr7 = v.dr[7] & ~(DR7_GD | 0xFF)
        for i, addr, rw, length in bps:
            if rw != IO and addr + length - 1 < L.MLIN:
                dr7 |= v.dr[7] & 3 << (2 * i)
        st.dr[0:4] = v.dr[0:4]
        st.dr[7] = dr7
        self.watchpoints = tuple(b for b in bps if b[2] in (WRITE, ACCESS))
        self.cpu.update_debug()
        self.debug_changed()

    def debug_changed(self) -> None:
        """The guest's breakpoints changed (binary translation recompiles its checks)."""

    # -- what the monitor does for the guest ----------------------------------------------
    def watch_port(self, port: int, size: int) -> None:
        """Port I/O the monitor emulates (all of the guest's traps): its I/O breakpoints
        (R/W = 10 under its CR4.DE) are owed after the instruction (SDM Vol. 3 §17.2.5;
        a REP INS/OUTS owes them after the slice it emulates, not after each iteration)."""
        v = self.vcpu
        if not v.dr[7] & 0xFF or not v.cr4 & CR4_DE:
            return
        for i, addr, rw, length in breakpoints(v.dr):
            lo = addr & 0xFFFF
            if rw == IO and port <= lo + length - 1 and lo <= port + size - 1:
                self.db_hits |= 1 << i

    def watch(self, lin: int, size: int, write: bool) -> None:
        """An access the monitor makes as part of an instruction it emulates: a data
        breakpoint on it is owed after the instruction (SDM Vol. 3 §17.2.5)."""
        last = lin + size - 1
        for i, addr, rw, length in self.watchpoints:
            if (write or rw == ACCESS) and lin <= addr + length - 1 and addr <= last:
                self.db_hits |= 1 << i
        host = self.cpu.mmu.host
        if host is not None:
            # the host debugger's watchpoints see it too: the guest's own attempt faulted
            # and made no access (``Cpu.step``), this one completes the instruction
            host.watched(lin, size, write)

    def completed(self, f: Frame, tf: bool, keeps_rf: bool = False) -> None:
        """An instruction the monitor emulated has completed: it owes the traps the
        hardware raises after an instruction (single-step if TF was set when it began,
        data breakpoints on what it accessed), unless it entered a handler; and RF,
        which spared it, is cleared (an IRET sets it instead: ``keeps_rf``)."""
        bits = self.db_hits | (DR6_BS if tf else 0)
        self.db_hits = 0
        if bits and not self.delivered:
            self.db_owed = bits
        if not keeps_rf:
            f.eflags &= ~RF

    def held_debug(self, f: Frame, here: tuple, bits: int, eip: int, length: int) -> None:
        """The instruction right after a MOV SS or POP SS (at guest ``eip``, ``length``
        bytes; real CS:EIP ``here``) faulted into the monitor, and the processor dropped
        the data breakpoints the load matched (``bits``), as it does for a fault.  What the
        monitor made of the instruction decides their fate as natively (SDM Vol. 3
        §6.8.3): it runs again (a shadow fill): held again; it completed (emulated): its
        #DB carries them; it entered a handler as an INT n, INT3 or INTO (the frame holds
        the EIP after it): the #DB follows at the handler's first instruction; it raised
        a fault of the guest's: dropped."""
        if not self.delivered:
            if (f.cs, f.eip) == here:
                st = self.cpu.state
                st.interrupt_shadow = st.stack_shadow = True
                st.pending_db = bits
            else:
                self.db_owed |= bits
            return
        st = self.cpu.state
        try:
            ret = self.gm.read_u((self.real_descriptor_base(f.ss) + st.regs[4]) & 0xFFFFFFFF, 4,
                                 False)
        except GuestPageFault:
            return
        if ret == (eip + length) & 0xFFFFFFFF:
            self.debug_exception(f, bits)

    def deliver_debug(self, f: Frame) -> None:
        """The #DB an emulated instruction owes, before any interrupt is taken (SDM
        Vol. 3 Table 6-2: traps on the previous instruction come first)."""
        bits, self.db_owed, self.db_hits = self.db_owed, 0, 0
        if bits and not self.delivered:
            self.debug_exception(f, bits)

    def debug_exception(self, f: Frame, bits: int) -> None:
        """Reflect a #DB with the guest's DR6 updated as the hardware updates DR6."""
        v = self.vcpu
        v.dr[7] &= ~DR7_GD               # the handler may use DR0-DR7 (SDM Vol. 3 §17.2.4)
        if bits & DR6_B:
            v.dr[6] = (v.dr[6] & ~DR6_B) | (bits & DR6_B)
        if bits & DR6_BS:
            v.dr[6] |= DR6_BS
        self.traps["#DB"] += 1
        self.deliver(f, DB, None, False, self.guest_eip(f))

    def real_debug_exception(self, f: Frame) -> None:
        """A #DB the hardware raised in guest code: its DR6 bits are the guest's."""
        st = self.cpu.state
        bits, st.dr[6] = st.dr[6] & (DR6_B | DR6_BS), DR6_INIT
        self.debug_exception(f, bits)
