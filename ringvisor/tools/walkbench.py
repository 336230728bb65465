"""What a page walk costs with 32-bit paging and with PAE paging, side by side.

``python -m ringvisor.tools.walkbench [ROUNDS]`` maps the same 4 MiB of a machine
both ways (a page directory and a page table; a PDPT, a page directory and a page
table of 64-bit entries), then, alternately for each mode, flushes the TLB and reads
one dword from each of the 1024 pages: every read is a TLB miss, so the walk
(``Mmu.walk``: the entries read, the rights combined, the accessed bit already set)
is what is timed, in CPU time.  A TLB hit costs the same in both modes (the entries
are the same), so this is PAE's whole cost on the engine; ``ringvisor bench`` gives
the cost of a workload's own mix of hits and misses.
"""

from __future__ import annotations

import sys
import time

from ringvisor.hw.machine import Machine
from ringvisor.hw.state import CR0_PE, CR0_PG, CR4_PAE
from ringvisor.hw.controlregs import write_cr

PAGES = 1024
PD32, PT32 = 0x400000, 0x401000
PDPT, PDPAE, PTPAE = 0x402000, 0x403000, 0x404000


def machine() -> Machine:
    m = Machine(8, "jit")
    mem = m.mem
    mem.write(PD32, (PT32 | 7).to_bytes(4, "little"))
    mem.write(PT32, b"".join(((i << 12) | 0x27).to_bytes(4, "little") for i in range(PAGES)))
    mem.write(PDPT, (PDPAE | 1).to_bytes(8, "little") + bytes(24))
    mem.write(PDPAE, b"".join(((PTPAE + (i << 12)) | 0x27).to_bytes(8, "little") for i in range(2)))
    mem.write(PTPAE, b"".join(((i << 12) | 0x27).to_bytes(8, "little") for i in range(PAGES)))
    m.cpu.state.cr0 |= CR0_PE
    return m


def set_mode(m: Machine, pae: bool) -> None:
    cpu = m.cpu
    write_cr(cpu, 0, cpu.state.cr0 & ~CR0_PG)
    write_cr(cpu, 4, CR4_PAE if pae else 0)
    write_cr(cpu, 3, PDPT if pae else PD32)
    write_cr(cpu, 0, cpu.state.cr0 | CR0_PG)


def walks_per_second(m: Machine, rounds: int) -> float:
    mmu, flush = m.cpu.mmu, m.cpu.tlb_flush
    t = time.process_time()
    for _ in range(rounds):
        flush()
        for page in range(0, PAGES << 12, 0x1000):
            mmu.read(page, 4, False)
    return rounds * PAGES / (time.process_time() - t)


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 200
    m = machine()
    rates = {False: [], True: []}
    for _ in range(5):                       # alternately: a shared machine's load drifts
        for pae in (False, True):
            set_mode(m, pae)
            rates[pae].append(walks_per_second(m, rounds))
    best32, bestpae = max(rates[False]), max(rates[True])
    print(f"32-bit paging: {best32 / 1e3:,.0f} k walks/s ({1e6 / best32:.2f} us per walk)")
    print(f"PAE paging:    {bestpae / 1e3:,.0f} k walks/s ({1e6 / bestpae:.2f} us per walk)")
    print(f"PAE walk / 32-bit walk: {best32 / bestpae:.2f} (best of 5 alternating runs of "
          f"{rounds} x {PAGES} misses)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
