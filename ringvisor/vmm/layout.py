"""Where the monitor lives: the hypervisor region at the top of every address space.

The guest owns machine physical memory ``[0, guest_ram)``; the monitor owns the
``MONITOR_RAM`` bytes above it.  The top 4 MiB of the linear address space
(one page-directory entry) map the monitor's tables, stack, native entry points
and translation cache; they are supervisor pages, and every segment the guest
can load is held by the hardware short of them (ring compression: the rest of
a data segment is emulated, ``segcut.py``), so neither guest ring 1 nor guest
ring 3 can reach them.  Physical-only pages (shadow page tables) need
no linear mapping: the monitor is Python and reaches them directly.

Offsets below are from the region's linear base ``MLIN`` and, identically,
from its physical base (``guest_ram``).
"""

MLIN = 0xFFC00000                # the hypervisor region's linear base (last PDE)
GUEST_LIMIT = MLIN - 1           # highest linear address a guest segment may reach
MONITOR_RAM = 8 << 20            # machine memory the monitor keeps for itself

GDT = 0x000000                   # the real GDT: 8192 descriptors (64 KiB)
GDT_ENTRIES = 8192
IDT = 0x010000                   # the real IDT: 256 gates
TSS = 0x011000                   # the real TSS (ring-0 stack = the monitor's); a hypervisor's
TSS_STRIDE = 0x80                # processor p has its own at TSS + p * TSS_STRIDE (pcpus.py)
ENTRY = 0x012000                 # native entry points: vector v at ENTRY + 8 * v
ENTRY_SIZE = 0x1000
STACK = 0x014000                 # the monitor's ring-0 stack; a hypervisor's processor p has
STACK_TOP = 0x01C000             # its own, the PCPU_STACK bytes below STACK_TOP - p * PCPU_STACK
PCPU_STACK = 0x1000              # (8 processors: STACK to STACK_TOP)
MONITOR_PT = 0x01C000            # the page table behind the region's PDE
VOID = 0x01D000                  # a page of 0xFF, for guest frames that do not exist
PV_START_INFO = 0x020000         # para-virtualization: the pages the guest sees at fixed
PV_SHARED_INFO = 0x021000        # addresses just below the region (start_info, shared_info,
PV_BOOT_STACK = 0x022000         # its boot stack); physical-only here
HVM_EPT_ROM_PT = 0x02F000        # (hvm, run --bios: the EPT page table of the ROM's lowest 2 MiB)
HVM_VMXON = 0x030000             # hardware-assisted virtualization: the VMXON region,
HVM_VMCS = 0x031000              # the guest's VMCS, the MSR bitmaps and the host's page
HVM_MSR_BITMAP = 0x032000        # directory (4 MiB pages mapping machine memory 1:1)
HVM_HOST_PD = 0x033000
HVM_EPT_PML4 = 0x034000          # the guest's EPT (hvmept.py): PML4, PDPT, four page
HVM_EPT_PDPT = 0x035000          # directories (one per GiB), two page tables, and the
HVM_EPT_PD = 0x036000            # identity page directory a guest with paging off runs on
HVM_EPT_PT = 0x03A000
HVM_EPT_IDMAP = 0x03C000
HVM_EPT_DEVICE_PT = 0x03D000     # EPT page tables for pass-through device pages (hvmmmio.py)
HVM_EPT_DEVICE_PTS = 3
LDT = 0x040000                   # the real LDT: the guest's, compressed (ldt.py; 64 KiB)
LDT_ENTRIES = 8192
TC = 0x100000                    # the translation cache (binary translation)
TC_SIZE = 0x200000
MAPPED = 0x400000                # everything above is physical-only
POOL = 0x400000                  # shadow page tables
POOL_PAGES = 1024

# The monitor's descriptors sit at the top of the real GDT (as Xen reserves its
# own); guest descriptors keep their indexes below.
FIRST_RESERVED = 8184
SEL_MCODE = FIRST_RESERVED * 8          # ring 0 code, flat
SEL_MDATA = SEL_MCODE + 8               # ring 0 data, flat
SEL_MTSS = SEL_MCODE + 16               # the monitor's TSS
SEL_TCODE = (SEL_MCODE + 24) | 1        # ring 1 code over everything: translated code runs here
SEL_RSTACK = (SEL_MCODE + 32) | 1       # bt: the guest's ring-2 stack segment, as DPL 1 (returns.real_ss)

# Real IDT vectors the monitor uses for itself.
PIC_BASE = 0x50                  # the physical PICs deliver IRQ n at PIC_BASE + n
GSI_BASE = 0x60                  # the physical IO-APIC's inputs 16-23 at GSI_BASE + n - 16 (platform.py)
CALLOUT = 0xF0                   # translated code calls the monitor (gate DPL 1)
CHAIN = 0xF1                     # translated code asks for the translation of a target
HV_TIMER = 0xF2                  # the hypervisor's own one-shot timer (para-virtualization)
APIC_NOTIFY = 0xF3               # the guest's virtual local APIC wants the monitor (vapic.py)
