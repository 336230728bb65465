"""Hardware conformance guests: protected-mode semantics the CPU must get exactly right.

Each guest in ``tests/hwguests/`` is a small Multiboot kernel that prints one
result per line on COM1 and leaves through port 0xf4 (0 = pass).  Every guest
runs on three platforms:

* ``qemu``   -- the reference, ``qemu-system-i386 -kernel`` (TCG);
* ``jit`` / ``interp`` -- ringvisor's CPU through ``ringvisor.hw.machine.run_image``.

The expected lines below are derived from the Intel SDM (section references
are to the combined volumes 1-3, Intel 64 and IA-32 Architectures Software
Developer's Manual) and were checked on QEMU 7.2 TCG.  Saved EIPs are printed
relative to the instruction under test ("eip=+0": the fault points at the
faulting instruction; "eip=+n": a trap points at the next instruction), so
nothing depends on link addresses.  Values that the SDM leaves undefined
(undefined flags, the upper half of pushed selectors, #DF's saved CS:EIP, ...)
are never printed.

QEMU TCG deviates from the SDM in a few places; those are *not* tested (see
``QEMU_DEVIATIONS``).
"""

from __future__ import annotations

import functools
import shutil

import pytest

from hwtests import KERNELS, PLATFORMS, build_kernel, output_lines, run_platform
from ringvisor.tools.qemu import QemuTimeout, find_qemu, guest_exit_code, run_qemu

# Flipped by the lead once ringvisor.hw.machine.run_image exists.
EMULATOR_READY = True

# Behaviour where QEMU 7.2 TCG differs from the SDM; deliberately not tested.
QEMU_DEVIATIONS = """
* Data accesses through DS/ES/FS/GS/SS do not check the segment limit, the
  write permission of a read-only data segment, or a null selector (SDM 5.3,
  5.5, 6.15 #GP/#SS): no #GP(0)/#SS(0) is raised.
* A far CALL through a call gate to a *conforming* more-privileged code segment
  sets CPL to the segment's DPL (CS.RPL = 0) instead of leaving CPL unchanged
  (SDM 5.8.6 "the CPL is not changed and no stack switch occurs").
* RDMSR/WRMSR of an unimplemented MSR return 0 / are ignored instead of #GP(0)
  (SDM vol. 2 RDMSR); WRMSR of reserved EFER bits is ignored; RDMSR of
  IA32_TSC_AUX reads 0 even after a WRMSR (RDTSCP returns the value written).
"""

# --------------------------------------------------------------------------
# privilege (tests/hwguests/privilege)
# GDT: 0x08 code0, 0x10 data0, 0x18 code3, 0x20 data3, 0x28 TSS, 0x30 code1,
# 0x38 data1, 0x40 call gate DPL3 -> 0x08 (2 params), 0x48 call gate DPL3 ->
# 0x30, 0x50 call gate DPL0, 0x58 conforming readable code DPL0.
# TSS: SS0:ESP0 = 0x10:0x280000, SS1:ESP1 = 0x39:0x2a0000.
# The ring-3 stack pointer is 0x28fffc when the tested code runs (the runner
# pushed a return address below 0x290000); ring 1 uses 0x29effc.
# --------------------------------------------------------------------------
EXPECTED_PRIVILEGE = [
    "privilege: start",
    "TSS ss0:esp0=0x10:0x280000 ss1:esp1=0x39:0x2a0000",
    # IRET to an outer level (SDM vol. 2 IRET, RETURN-TO-OUTER-PRIVILEGE-LEVEL):
    # ES/FS/GS/DS holding a data or non-conforming code segment with DPL < new
    # CPL are loaded with the null selector.  ES=0x10 (DPL 0 data) and FS=0x08
    # (DPL 0 non-conforming code) are nulled; DS=0x23 and GS=0x20 (DPL 3 data)
    # survive, GS keeping its RPL 0.
    "iret to ring 3: ds=0x23 es=0x10 fs=0x8 gs=0x20 -> ring 3 ds=0x23 es=0x0 fs=0x0 gs=0x20 cs=0x1b ss=0x23",
    # A conforming code segment (ES=0x58) is exempt; DPL 1 data (FS=0x39) and
    # DPL 0 data (GS=0x10) are nulled.
    "iret to ring 3: ds=0x23 es=0x58 fs=0x39 gs=0x10 -> ring 3 ds=0x23 es=0x58 fs=0x0 gs=0x0 cs=0x1b ss=0x23",
    # INT n from ring 3 through a DPL 3 interrupt gate (SDM 6.12.1, fig. 6-4):
    # stack switch to SS0:ESP0 from the TSS, push SS, ESP, EFLAGS, CS, EIP
    # (5 dwords: ring-0 ESP = 0x280000 - 20 = 0x27ffec); EIP is the return
    # address after the 2-byte INT 0x80; EFLAGS = IF|ZF|PF|bit1 = 0x246 (flags
    # from "cmp eax,eax" with IF=1); an interrupt gate clears IF in the handler.
    "int 0x80 (interrupt gate) from ring 3: count=1 ring0 esp=0x27ffec handler cs=0x8 ss=0x10 IF=0; "
    "frame eip=+2 cs=0x1b eflags=0x246 esp=0x28fffc ss=0x23",
    # A trap gate leaves IF alone (SDM 6.12.1.3).
    "int 0x81 (trap gate) from ring 3: count=1 handler IF=1 frame eflags=0x246",
    # Same from ring 1: the saved SS:ESP and CS are the ring-1 ones.
    "int 0x80 (interrupt gate) from ring 1: count=1 ring0 esp=0x27ffec handler cs=0x8 ss=0x10 IF=0; "
    "frame eip=+2 cs=0x31 eflags=0x246 esp=0x29effc ss=0x39",
    # Far CALL through a call gate with parameter count 2 (SDM 5.8.5, fig. 5-13):
    # new stack from SS0:ESP0; pushed: caller SS, caller ESP (0x28fffc - 8 =
    # 0x28fff4 after pushing 2 params), the 2 parameters copied in order, CS,
    # EIP -> ring-0 ESP = 0x280000 - 24 = 0x27ffe8.
    "call gate ring 3 -> 0: cs=0x8 ss=0x10 esp=0x27ffe8 stack: eip=+0 cs=0x1b params=0x22222222,0x11111111 "
    "esp=0x28fff4 ss=0x23",
    # RET imm16 to the outer level releases the parameters on both stacks
    # (caller ESP back to 0x28fffc) and nulls ES, which the ring-0 code had
    # loaded with the DPL 0 selector 0x10 (SDM vol. 2 RET).
    "lret 8 to ring 3: esp=0x28fffc es=0x0",
    # Call gate to a DPL 1 segment: stack from SS1:ESP1 (0x2a0000 - 16 for
    # SS, ESP, CS, EIP), CS RPL becomes the new CPL 1.
    "call gate ring 3 -> 1: cs=0x31 ss=0x39 esp=0x29fff0 stack: cs=0x1b esp=0x28fffc ss=0x23",
    # INT n / INT3 / INTO from CPL 3 through a DPL 0 gate: #GP with error code
    # vector*8 + 2 (IDT bit), faulting EIP (SDM 6.12.1.1, 6.13).
    "ring 3 int 0x31 (DPL 0 gate): #13 err=0x18a eip=+0",
    "ring 3 int3 (DPL 0 gate): #13 err=0x1a eip=+0",
    "ring 3 into OF=1 (DPL 0 gate): #13 err=0x22 eip=+0",
    # CALL through a call gate whose DPL < CPL: #GP(gate selector)
    # (SDM vol. 2 CALL, CALL-GATE).
    "ring 3 lcall DPL 0 call gate: #13 err=0x50 eip=+0",
    # Direct far CALL to a non-conforming segment with DPL != CPL:
    # #GP(code segment selector).
    "ring 3 lcall ring 0 code segment: #13 err=0x8 eip=+0",
    # The #GP frame pushed on the ring-0 stack carries the ring-3 SS:ESP.
    "exception frame from ring 3: cs=0x1b ss=0x23 esp=0x28fffc",
    "privilege: done",
]

# --------------------------------------------------------------------------
# faults (tests/hwguests/faults)
# Extra GDT: 0x48 data P=0, 0x50 execute-only code, 0x58 read-only data,
# 0x68 data with base 0x100000.  IDT 0x81: not present.
# Paging part: PT for 4..8 MiB: 0x401000 supervisor read-only, 0x402000
# supervisor R/W, 0x403000 user read-only, 0x405000 supervisor (code); the
# other pages there are not present; PDE for 32 MiB+ not present.
# --------------------------------------------------------------------------
EXPECTED_FAULTS = [
    "faults: start",
    # #DE is a fault (SDM 6.15 int 0): saved EIP = the DIV/IDIV; the quotient
    # of INT_MIN / -1 and of 0x1000 / 0x10 (8-bit) does not fit -> #DE;
    # registers are unchanged (faults restore state).
    "DE div by zero: #0 eip=+0",
    "DE idiv INT_MIN/-1: #0 eip=+0",
    "DE idiv operands kept: eax=0x80000000 edx=0xffffffff",
    "DE div8 quotient overflow: #0 eip=+0",
    "DE none 100/7: no exception",
    "div 100/7: q=14 r=2",
    # Single-step (SDM 17.3.1.4): a trap after each instruction executed with
    # TF=1, none after the POPF that sets TF.  Instructions: nop (1 byte),
    # inc eax (1), mov ecx,5 (5), add eax,ecx (2) -> saved EIPs +1,+2,+7,+9
    # (the handler clears TF at +9).  DR6.BS (bit 14) is set (SDM 17.2.3).
    "DB single-step: traps=4 eips=+1,+2,+7,+9 dr6.bs=1",
    # Instruction breakpoint DR0/DR7.L0, R/W=00: a fault before the
    # instruction (saved EIP = it), DR6.B0 (SDM 17.3.1.1); the instruction runs
    # after the handler disarms DR7.
    "DB exec breakpoint: count=1 eip=+0 b0-3=0x1 ran=0x1234",
    # Data write breakpoint DR1, R/W=01 LEN=11: a trap after the write, saved
    # EIP = next instruction, DR6.B1; the write happened (SDM 17.3.1.2).
    "DB write watchpoint: count=1 eip=next+0 b0-3=0x2 value=0x5678",
    # #BP and #OF are traps: saved EIP follows INT3 (1 byte), INT 3 (CD 03,
    # 2 bytes) and INTO (1 byte) (SDM 6.15 int 3, int 4).  INTO with OF=0
    # does nothing.
    "BP int3: #3 eip=+1",
    "BP int $3 (cd 03): #3 eip=+2",
    "OF into OF=1: #4 eip=+1",
    "OF into OF=0: no exception",
    # BOUND: #BR (fault) when the signed index is outside [lower, upper];
    # the upper bound is inclusive (SDM vol. 2 BOUND).
    "BR bound 11 in [0,10]: #5 eip=+0",
    "BR bound -1 in [0,10]: #5 eip=+0",
    "BR bound 10 in [0,10]: no exception",
    # #UD (fault): UD2; LOCK on an instruction that is not lockable or whose
    # destination is not memory (SDM vol. 2 LOCK); MOV to CS (SDM vol. 2 MOV).
    "UD ud2: #6 eip=+0",
    "UD lock nop: #6 eip=+0",
    "UD lock add reg,reg: #6 eip=+0",
    "UD lock add mem: no exception",
    "lock add mem result: 8",
    "UD mov to cs: #6 eip=+0",
    # #NM (SDM 6.15 int 7, table 2-2): x87 instruction with CR0.TS=1 or
    # CR0.EM=1; WAIT only when MP=1 and TS=1.  SSE with CR4.OSFXSR=0 -> #UD.
    "NM fninit TS=1: #7 eip=+0",
    "NM fld1 EM=1: #7 eip=+0",
    "NM wait TS=1 MP=1: #7 eip=+0",
    "NM wait TS=1 MP=0: no exception",
    "UD xorps CR4.OSFXSR=0: #6 eip=+0",
    # Segment loads (SDM vol. 2 MOV / "Protected Mode Exceptions", 6.13 error
    # code = selector with the RPL bits replaced by EXT=0, IDT=0, TI):
    # not-present data segment -> #NP(sel), into SS -> #SS(sel); a software
    # INT to a not-present gate -> #NP(vector*8 + 2).
    "NP mov fs, not-present data: #11 err=0x48 eip=+0",
    "NP int 0x81, not-present gate: #11 err=0x40a eip=+0",
    "SS mov ss, not-present data: #12 err=0x48 eip=+0",
    # Null into SS -> #GP(0); index beyond the GDT limit, system descriptor,
    # execute-only code in a data register, read-only data or RPL/DPL != CPL
    # in SS, JMP to a data segment, RPL > DPL in DS -> #GP(selector); JMP to
    # the null selector -> #GP(0) (SDM vol. 2 JMP).
    "GP mov ss, null: #13 err=0x0 eip=+0",
    "GP mov fs, beyond GDT limit: #13 err=0x800 eip=+0",
    "GP mov fs, TSS descriptor: #13 err=0x28 eip=+0",
    "GP mov fs, execute-only code: #13 err=0x50 eip=+0",
    "ok mov fs, readable code: no exception",
    "GP mov ss, read-only data: #13 err=0x58 eip=+0",
    "GP mov ss, RPL 3 at CPL 0: #13 err=0x10 eip=+0",
    "GP mov ss, DPL 3 at CPL 0: #13 err=0x20 eip=+0",
    "GP ljmp to data segment: #13 err=0x10 eip=+0",
    "GP ljmp to null selector: #13 err=0x0 eip=+0",
    "GP mov ds, RPL 3 > DPL 0: #13 err=0x10 eip=+0",
    "ok mov fs, DPL 3 data at CPL 0: no exception",
    # CPL 3: DPL 0 data into DS -> #GP(sel); HLT and MOV from CR0 are
    # privileged -> #GP(0).
    "GP ring 3 mov ds, DPL 0 data: #13 err=0x10 eip=+0",
    "GP ring 3 hlt: #13 err=0x0 eip=+0",
    "GP ring 3 mov cr0: #13 err=0x0 eip=+0",
    # IRET with NT=1 is a task return through the TSS back link; a back link
    # that is not a busy TSS -> #TS(back-link selector) (SDM 7.3, table 7-1).
    "TS iret NT=1, back link to data segment: #10 err=0x10 eip=+0",
    # #GP whose IDT gate is not present: delivering it raises #NP (both
    # contributory) -> #DF with error code 0 (SDM 6.15 int 8, table 6-5);
    # #DF's saved CS:EIP are undefined and not printed.
    "DF #GP through not-present gate: #8 err=0x0",
    # #PF (SDM 4.7, 6.15 int 14): error code P (bit 0) = protection violation
    # vs not present, W/R (bit 1) = write, U/S (bit 2) = CPL 3; I/D stays 0
    # without PAE+NXE or SMEP.  CR2 = the faulting linear address.  A
    # supervisor write to a read-only page is allowed with CR0.WP=0
    # (SDM 4.6.1).
    "PF read not-present: #14 err=0x0 eip=+0 cr2=0x400123",
    "PF write not-present: #14 err=0x2 eip=+0 cr2=0x400456",
    "PF read, PDE not present: #14 err=0x0 eip=+0 cr2=0x2000010",
    "PF supervisor write read-only, WP=0: no exception",
    "WP=0 write landed: 0x22222222",
    "PF supervisor write read-only, WP=1: #14 err=0x3 eip=+0 cr2=0x40100c",
    "WP=1 write suppressed: 0x0",
    # Instruction fetch from a not-present page: saved EIP = CR2 = target.
    "PF fetch not-present: #14 err=0x0 eip=+0 cr2=0x404000",
    # CR2 is linear: FS base 0x100000 + offset 0x300123.
    "PF read via fs base 0x100000 + 0x300123: #14 err=0x0 eip=+0 cr2=0x400123",
    "PF user read supervisor page: #14 err=0x5 eip=+0 cr2=0x402010",
    "PF user write supervisor page: #14 err=0x7 eip=+0 cr2=0x402014",
    "PF user write read-only page: #14 err=0x7 eip=+0 cr2=0x403018",
    "PF user read read-only page: no exception",
    "user read value: 0x33333333",
    "PF user read not-present: #14 err=0x4 eip=+0 cr2=0x400020",
    "PF user write not-present: #14 err=0x6 eip=+0 cr2=0x400024",
    "PF user fetch supervisor page: #14 err=0x5 eip=+0 cr2=0x405000",
    "faults: done",
]

# --------------------------------------------------------------------------
# paging (tests/hwguests/paging)
# PD at 0x300000: PDE1 -> PT1 (P|RW|U = 0x007), PDE8 = 4 MiB page at
# 0xc00000 (PS|P|RW = 0x083), PDE9 -> PT2 with U=0, PDE10 -> PT3 with R/W=0.
# PT1: 0x500000 -> 0xa00000, 0x501000 -> 0xa01000/0xa02000, 0x502000 and
# 0x503000 -> 0xa03000, 0x504000 read-only -> 0xa04000, 0x506000 -> 0xa07000,
# 0x507000 -> 0xa09000.  A and D start clear.
# --------------------------------------------------------------------------
EXPECTED_PAGING = [
    "paging: start",
    "cr0.pg=1 cr4.pse=1 cr3=0x300000",
    # SDM 4.8: the processor sets A in every paging-structure entry it uses
    # and D in the entry that maps the page on a write; a PDE that references
    # a page table has no D bit (bit 6 ignored).
    "4K pte before: 0x003 pde: 0x007",
    "4K read 0x500000: 0xa0a0a0a0 pte: 0x023 pde: 0x027",
    "4K write 0x500004: phys 0xa00004=0x12345678 pte: 0x063 pde: 0x027",
    # 4 MiB page (CR4.PSE, PDE.PS): the PDE gets A, then D.
    "4M pde before: 0x083",
    "4M read 0x2001234: 0xc4c4c4c4 pde: 0x0a3",
    "4M write 0x2002000: phys 0xc02000=0x44444444 pde: 0x0e3",
    # After INVLPG / a CR3 load the new translation is used (SDM 4.10.4.1).
    "remap 0x501000: before=0x11111111 after invlpg=0x22222222 after cr3 reload=0x11111111",
    "alias 0x502000/0x503000: 0xdeadbeef 0xfeedface phys=0xfeedface",
    # A dword at 0x506ffe takes bytes 0xa07ffe-f and 0xa09000-1 (little
    # endian): 33 44 11 22 -> 0x22114433; a word at 0x506fff: 44 11; a dword
    # write at 0x506ffd splits as 88 77 66 | 55.
    "cross-page read32=0x22114433 read16=0x1144; after write32 at 0x506ffd: 0x667788bb 0xeeff2255",
    # CR0.WP=1: supervisor write to a read-only page -> #PF P|W = 0x3; no
    # write, D stays clear.  WP=0: the write happens and sets D (SDM 4.6.1).
    "WP=1 supervisor write to read-only page: #14 err=0x3 eip=+0 cr2=0x504008",
    "  value=0x0 pte.D=0",
    "WP=0 supervisor write to read-only page: no exception",
    "  value=0x88888888 pte.D=1",
    # Access rights combine over the PDE and PTE (SDM 4.6.1): U/S=0 in the
    # PDE makes the page supervisor (user read -> P|U = 0x5), R/W=0 in the
    # PDE makes it read-only (user write -> P|W|U = 0x7, read allowed;
    # supervisor write allowed with WP=0, #PF 0x3 with WP=1).
    "user read, PDE U=0 PTE U=1: #14 err=0x5 eip=+0 cr2=0x2400010",
    "user write, PDE R/W=0 PTE R/W=1: #14 err=0x7 eip=+0 cr2=0x2800010",
    "user read, PDE R/W=0 PTE R/W=1: no exception",
    "  value=0x66666666",
    "supervisor write, PDE R/W=0, WP=0: no exception",
    "  value=0x99999999",
    "supervisor write, PDE R/W=0, WP=1: #14 err=0x3 eip=+0 cr2=0x280001c",
    # CR0 reads back PE|ET (ET is hardwired to 1 on P6 and later, SDM 2.5).
    "paging off: cr0=0x11",
    "paging: done",
]

# --------------------------------------------------------------------------
# pic_pit (tests/hwguests/pic_pit): 8259A and 8254 data sheets.
# --------------------------------------------------------------------------
EXPECTED_PIC_PIT = [
    "pic_pit: start",
    "slave IMR readback: 0xa5",                     # OCW1 reads back
    # Read-back command 0xe2 (status of counter 0): bits 5:4 RW=11 (lsb/msb),
    # bits 3:1 mode 2, bit 0 binary -> 0x34 (output and null-count masked).
    "PIT ch0 status (mode 2): 0x34",
    "PIT counter decreasing: yes",
    "PIT read-back count within 1..divisor: yes",  # mode 2 counts N..1
    "master IMR: 0xfe",
    "got 5 ticks",
    # OCW3 0x0b reads ISR: IRQ0 in service inside its handler, clear after EOI.
    "ISR in handler: 0x01, ISR after EOI: 0x00",
    # A masked IRQ still sets its IRR bit (edge) but is not delivered; it is
    # delivered as soon as it is unmasked.
    "masked: IRR bit0 set=yes, ticks while masked=0",
    "unmasked: pending interrupt delivered: yes",
    # Without EOI, IRQ0 stays in service and blocks the next IRQ0; a specific
    # EOI (OCW2 0x60) releases it.
    "without EOI: IRR bit0 set=yes, further ticks=0, ISR=0x01",
    "after specific EOI: pending interrupt delivered: yes, ISR=0x00",
    "PIT ch0 status (mode 3): 0x36",
    "mode 3: got 3 more ticks",
    "pic_pit: done",
]

# --------------------------------------------------------------------------
# uart (tests/hwguests/uart): 16550A data sheet.  stdin = b"ringvisor\n".
# --------------------------------------------------------------------------
EXPECTED_UART = [
    "uart: start",
    "LSR & (THRE|TEMT): 0x60",                      # transmitter idle
    "IIR: 0x01 IER: 0x00 LCR: 0x03",                # no interrupt pending
    "scratch: 0x5a 0xa5",
    "divisor latch: DLL=0x0c DLM=0x02, restored DLL=0x01, LCR=0x03",
    # RDA interrupt on IRQ4 (IER.ERBFI, MCR.OUT2), IIR = 0x04 in the handler.
    "received 10 bytes: ringvisor\\x0a",
    "IIR in the IRQ4 handler: 0x04",
    "IIR after receive: 0x01",
    # THRE interrupt: IIR = 0x02 when ETBEI is set with THR empty; reading IIR
    # clears it.
    "ETBEI: IIR=0x02 then 0x01",
    # FCR bit 0: FIFOs enabled -> IIR bits 7:6 = 11.
    "FIFO enabled IIR=0xc1, disabled IIR=0x01",
    # Loopback (MCR bit 4): DTR->DSR (0x20), RTS->CTS (0x10), OUT1->RI (0x40),
    # OUT2->DCD (0x80); transmitted bytes come back in RBR.
    "loopback MSR: all=0xf0 none=0x00 DTR->0x20 RTS->0x10 OUT1->0x40 OUT2->0x80",
    "loopback data: DR before=0, got 0x5a 0x00 0xff (DR each time: 0x7), DR after=0",
    "uart: done",
]

# --------------------------------------------------------------------------
# sysinsn (tests/hwguests/sysinsn)
# GDT: 0x40 LDT (2 entries; LDT entry 1 = DPL 3 data, selector 0x0f),
# 0x48 second code0, 0x50 code0 base 0x10000, 0x58 execute-only, 0x60
# read-only data, 0x68 limit 0x1234 (bytes), 0x70 limit 1 (4 KiB units),
# 0x78 call gate DPL 3, 0x80 conforming readable code DPL 0.  Every
# descriptor has its accessed bit preset.
# --------------------------------------------------------------------------
EXPECTED_SYSINSN = [
    "sysinsn: start",
    # The kernel chose the table addresses; MSW = CR0[15:0] = PE|ET.
    "ring 0: gdtr=0x200000/0x7ff idtr=0x200800/0x7ff ldtr=0x40 tr=0x28 msw=0x11",
    # LMSW loads PE/MP/EM/TS but cannot clear PE; CLTS clears TS.
    "lmsw 0xe -> msw=0x1f, clts -> 0x17, lmsw 0 -> 0x11 (PE stays set)",
    # POPF at CPL 0 changes IF and IOPL.
    "ring 0 popf 0x3202 -> eflags=0x3202, popf 0x2 -> 0x2",
    # LAR: access rights = descriptor dword 1 AND 0x00FxFF00 (bits 19:16
    # undefined: masked here); valid for code/data, LDT, TSS, call gates;
    # fails (ZF=0) for null, beyond limit, or DPL < max(CPL, RPL) unless
    # conforming code (SDM vol. 2 LAR).  TSS 0x28 is busy after LTR (type 0xb).
    "ring 0 lar 0x08: zf=1 ar=0x00c09b00",
    "ring 0 lar 0x10: zf=1 ar=0x00c09300",
    "ring 0 lar 0x1b: zf=1 ar=0x00c0fb00",
    "ring 0 lar 0x28: zf=1 ar=0x00008b00",
    "ring 0 lar 0x40: zf=1 ar=0x00008200",
    "ring 0 lar 0x78: zf=1 ar=0x0000ec00",
    "ring 0 lar 0x83: zf=1 ar=0x00c09f00",
    "ring 0 lar 0x0f: zf=1 ar=0x00c0f300",
    "ring 0 lar 0x00: zf=0",
    "ring 0 lar 0x800: zf=0",
    "ring 0 lar 0x13: zf=0",
    "ring 0 lar 0x58: zf=1 ar=0x00c09900",
    # LSL: byte-granular limit, or (limit << 12) | 0xfff with G=1; not valid
    # for call gates (SDM vol. 2 LSL).
    "ring 0 lsl 0x08: zf=1 limit=0xffffffff",
    "ring 0 lsl 0x28: zf=1 limit=0x2068",
    "ring 0 lsl 0x68: zf=1 limit=0x1234",
    "ring 0 lsl 0x70: zf=1 limit=0x1fff",
    "ring 0 lsl 0x40: zf=1 limit=0xf",
    "ring 0 lsl 0x78: zf=0",
    "ring 0 lsl 0x00: zf=0",
    # VERR: readable code or data; VERW: writable data; both fail on system
    # descriptors, null, and privilege (conforming code exempt for VERR).
    "ring 0 verr/verw 0x08: 1 0",
    "ring 0 verr/verw 0x58: 0 0",
    "ring 0 verr/verw 0x10: 1 1",
    "ring 0 verr/verw 0x60: 1 0",
    "ring 0 verr/verw 0x28: 0 0",
    "ring 0 verr/verw 0x80: 1 0",
    "ring 0 verr/verw 0x13: 0 0",
    "ring 0 verr/verw 0x23: 1 1",
    "ring 0 verr/verw 0x00: 0 0",
    # MOV Sreg to memory always writes 16 bits; PUSH Sreg decrements ESP by
    # 4 (upper half of the slot implementation-dependent, masked).
    "mov ds -> m16 keeps the upper half: 0xaaaa0010; push ds: esp-4=yes low16=0x10",
    "mov fs, LDT selector 0xf -> fs=0xf",
    # Far JMP/CALL/RET at CPL 0 between two code segments; far CALL pushes
    # the old CS.  With CS base 0x10000, EIP (and what CALL pushes) is the
    # offset = linear - 0x10000.
    "ljmp 0x48: cs=0x48; lcall 0x08: cs=0x8 pushed cs=0x48; after lret cs=0x48; back cs=0x8",
    "cs base 0x10000: cs=0x50, call pushed linear-0x10000: yes",
    "SYSENTER_CS: 0x0:0x8 SYSENTER_ESP: 0x0:0x27f800 SYSENTER_EIP matches: yes",
    "cpuid max leaf >= 1: yes",
    "wbinvd ok",
    "invd ok",
    # SGDT/SIDT/SLDT/STR/SMSW are not privileged (CR4.UMIP=0).
    "ring 3: gdtr=0x200000/0x7ff idtr=0x200800/0x7ff ldtr=0x40 tr=0x28 msw=0x11 cpuid max>=1: yes",
    "ring 3 lar 0x10: zf=0",
    "ring 3 lar 0x1b: zf=1 ar=0x00c0fb00",
    "ring 3 lar 0x80: zf=1 ar=0x00c09f00",
    "ring 3 lar 0x78: zf=1 ar=0x0000ec00",
    "ring 3 lar 0x28: zf=0",
    "ring 3 lar 0x0f: zf=1 ar=0x00c0f300",
    "ring 3 lsl 0x23: zf=1 limit=0xffffffff",
    "ring 3 lsl 0x10: zf=0",
    "ring 3 verr/verw 0x23: 1 1",
    "ring 3 verr/verw 0x08: 0 0",
    "ring 3 verr/verw 0x80: 1 0",
    # POPF at CPL 3 with IOPL 0: IF and IOPL silently unchanged (SDM vol. 2
    # POPF); CLI/STI -> #GP(0) when CPL > IOPL (CR4.PVI=0).
    "ring 3 IOPL 0 popf: entry=0x202, 0x3002 -> 0x202, 0x0202 -> 0x202, 0x0002 -> 0x202",
    "ring 3 IOPL 0 cli: #13 err=0x0 eip=+0",
    "ring 3 IOPL 0 sti: #13 err=0x0 eip=+0",
    # I/O at CPL > IOPL consults the TSS I/O bitmap (SDM vol. 1 19.5): port
    # 0x3ff allowed; 0x3fb, 0x3fa denied; a word at 0x3ff also needs 0x400's
    # bit -> #GP(0).
    "ring 3 in/out 0x3ff (bitmap allows): no exception",
    "  read 0x5a, scratch now 0xc3",
    "ring 3 in 0x3fb (bitmap denies): #13 err=0x0 eip=+0",
    "ring 3 inw 0x3ff (0x400 denied): #13 err=0x0 eip=+0",
    "ring 3 out 0x3fa (bitmap denies): #13 err=0x0 eip=+0",
    # IOPL 3: CLI/STI/POPF may change IF, POPF cannot change IOPL at CPL 3,
    # any port is allowed (LCR = 0x03).
    "ring 3 IOPL 3 cli/sti/popf/in: no exception",
    "  after cli 0x3002, after sti 0x3202, popf 0x0002 -> 0x3002, in 0x3fb=0x03",
    # SYSENTER: CS = SYSENTER_CS, SS = +8, ESP = SYSENTER_ESP, IF/VM/RF
    # cleared.  SYSEXIT: CS = SYSENTER_CS+16 | 3, SS = +24 | 3, ESP = ECX,
    # EIP = EDX; EFLAGS untouched, so IF stays 0 (SDM vol. 2).
    "sysenter: cs=0x8 ss=0x10 esp=0x27f800 eflags=0x2 (entry 0x202)",
    "sysexit: cs=0x1b ss=0x23 esp=0x28fffc eflags=0x2",
    # Privileged instructions at CPL 3 -> #GP(0).
    "ring 3 rdmsr: #13 err=0x0 eip=+0",
    "ring 3 wbinvd: #13 err=0x0 eip=+0",
    "ring 3 clts: #13 err=0x0 eip=+0",
    "ring 3 lgdt: #13 err=0x0 eip=+0",
    "ring 3 lmsw: #13 err=0x0 eip=+0",
    "ring 3 invlpg: #13 err=0x0 eip=+0",
    "ring 3 mov dr7: #13 err=0x0 eip=+0",
    "ring 3 ltr: #13 err=0x0 eip=+0",
    "sysinsn: done",
]


# --------------------------------------------------------------------------
# smc (tests/hwguests/smc): values computed from what the guest patches in.
# --------------------------------------------------------------------------
def smc_expected() -> list[str]:
    m = 0xFFFFFFFF
    vals = [(i * 2654435761) & m for i in range(200)]
    xor = 0
    for v in vals:
        xor ^= v
    h = 0
    for i in range(1, 51):
        h = (h * 31 + i * 0x01010101) & m
    s1 = sum(i * 0x10001 + 7 for i in range(64)) & m
    s2 = sum(i * 3 + 1 for i in range(64))
    return [
        "smc: start",
        f"patched immediate x200: sum=0x{sum(vals) & m:08x} xor=0x{xor:08x} last=0x{vals[-1]:08x}",
        # smc_loop(n) adds the immediate patched in by the previous iteration:
        # 0 + n + (n-1) + ... + 2
        f"self-patching loop: n=100 -> {sum(range(2, 101))}, n=7 -> {sum(range(2, 8))}",
        f"next-instruction patch: 0xcafe0001 0xcafe0002, x50 hash=0x{h:08x}",
        "patch 3 instructions ahead: 0x00001001 0x00002001",
        "opcode patch: inc->101 dec->99 nop->100 inc->101",
        # mov $0x12345678; xor/inc/inc -> 2; mov at +3; template 4*10+3
        "generated code: 0x12345678 2 0x9abcdef0 43",
        f"alias: write via 0x500000 run at 0x310000 sum=0x{s1:08x}; "
        f"write via 0x310010 run at 0x500010 sum={s2}",
        "smc: done",
    ]


# --------------------------------------------------------------------------
# alu (tests/hwguests/alu): an independent Python model of the guest's
# computations (C semantics: unsigned wrap-around, truncating division;
# instruction semantics from SDM vol. 2 for the inline-asm parts).
# --------------------------------------------------------------------------
M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1


def _s8(x: int) -> int:
    x &= 0xFF
    return x - 0x100 if x & 0x80 else x


def _s16(x: int) -> int:
    x &= 0xFFFF
    return x - 0x10000 if x & 0x8000 else x


def _s32(x: int) -> int:
    x &= M32
    return x - (1 << 32) if x & 0x80000000 else x


def _s64(x: int) -> int:
    x &= M64
    return x - (1 << 64) if x >> 63 else x


def _tdiv(a: int, b: int) -> int:
    """C / IDIV quotient: truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _tmod(a: int, b: int) -> int:
    return a - b * _tdiv(a, b)


class _Lcg:
    def __init__(self, seed: int) -> None:
        self.s = seed

    def __call__(self) -> int:
        self.s = (self.s * 1103515245 + 12345) & M32
        return self.s


def _lcg64(x: int) -> int:
    return (x * 6364136223846793005 + 1442695040888963407) & M64


def alu_mix64() -> int:
    x, acc = 0x0123456789ABCDEF, 0
    for i in range(200):
        x = _lcg64(x)
        acc ^= x >> (i % 61)
        acc = (acc + (x << (i % 7))) & M64
        acc = ((acc << 13) | (acc >> 51)) & M64
        if x >> 63:
            acc = (acc - i * 0x9E3779B97F4A7C15) & M64
    return acc


def alu_div64() -> int:
    x, h = 0x243F6A8885A308D3, 0
    for i in range(40):
        x = _lcg64(x)
        d = (x >> (i % 40 + 3)) | 1
        q, r = x // d, x % d
        sn, sd = _s64(x), (d >> 1) | 1
        if i & 1:
            sd = -sd
        assert not (sn == -(1 << 63) and sd == -1)
        sq = _tdiv(sn, sd)
        sr = sn - sd * sq
        h = (h * 31 + (q ^ r) + (sq & M64) + ((sr & M64) << 7)) & M64
        h ^= x // 1000000007
    return h


def alu_div32() -> int:
    h, rnd = 0, _Lcg(42)
    for i in range(1, 151):
        a = rnd()
        b = (rnd() >> (i % 31)) | 1
        sa, sb = _s32(a), _s32(b)
        if sb == -1:
            sb = 1
        h = (h * 33 + a // b + a % b) & M32
        h ^= (_tdiv(sa, sb) + _tmod(sa, sb) * 7) & M32
        h = (h + a // 7 + a % 10 + _tdiv(sa, 3) + _tmod(sa, -5) + _tdiv(sa, 16)
             + _tmod(sa, 8)) & M32
    return h


def _rol32(v: int, c: int) -> int:
    return ((v << c) | (v >> (32 - c))) & M32 if c else v


def _ror32(v: int, c: int) -> int:
    return ((v >> c) | (v << (32 - c))) & M32 if c else v


def alu_shifts() -> int:
    h, rnd = 0, _Lcg(7)
    for i in range(128):
        v = rnd()
        n = (rnd() >> 8) & 63
        c = n & 31                  # SHL/SHR/SAR/ROL/ROR/SHLD/SHRD/RCL/RCR: count AND 1FH
        h = (h + (v << c)) & M32
        h ^= v >> c
        h = (h + (_s32(v) >> c)) & M32
        h ^= ((v << c) | (v >> ((32 - c) & 31))) & M32
        r1, r2, r3 = (v << c) & M32, v >> c, (_s32(v) >> c) & M32
        h = (h * 3 + r1 + (r2 ^ r3) + _rol32(v, c) * 5 + (_ror32(v, c) ^ 0x5555AAAA)) & M32
        hi = rnd()
        d1 = ((v << c) | (hi >> (32 - c))) & M32 if c else v      # SHLD
        d2 = ((v >> c) | (hi << (32 - c))) & M32 if c else v      # SHRD
        h ^= (d1 + (d2 << 1)) & M32
        # RCL/RCR rotate the 33-bit value CF:dest; a 0 count leaves CF alone
        t = ((i & 1) << 32) | v
        tl = ((t << c) | (t >> (33 - c))) & ((1 << 33) - 1) if c else t
        tr = ((t >> c) | (t << (33 - c))) & ((1 << 33) - 1) if c else t
        h = (h + ((tl & M32) ^ ((tr & M32) >> 3) ^ ((tl >> 32) << 4) ^ ((tr >> 32) << 9))) & M32
        w = (hi << 32) | v
        h ^= ((w >> n) + (((w << n) & M64) >> 32)) & M32
    return h


def alu_bits() -> int:
    h, rnd = 0, _Lcg(99)
    bitmap = [0] * 8
    for i in range(120):
        v = rnd() >> (i % 29)
        if not v:
            v = 0x80000000 >> (i % 32)
        ctz = (v & -v).bit_length() - 1         # BSF
        clz = 32 - v.bit_length()               # 31 - BSR
        h = (h + ctz * 3 + clz * 5) & M32
        h ^= int.from_bytes(v.to_bytes(4, "little"), "big")     # BSWAP
        h = (h + (bin(v).count("1") << (i % 8))) & M32
        h = (h * 7 + ctz + ((31 - clz) << 5)) & M32
        pos = rnd() % 256
        word, bit = pos // 32, 1 << (pos % 32)  # BTS/BTR/BTC m32, r32 address a bit string
        old = 1 if bitmap[word] & bit else 0
        if i % 3 == 0:
            bitmap[word] |= bit
        elif i % 3 == 1:
            bitmap[word] &= ~bit
        else:
            bitmap[word] ^= bit
        h = (h + old + (((v >> (i % 32)) & 1) << 1)) & M32     # BT r32, r32: offset mod 32
    for k in range(8):
        h = (h * 131 + bitmap[k]) & M32
    return h


def alu_cmp() -> int:
    h = cnt_s = cnt_u = 0
    rnd = _Lcg(1234)
    for i in range(150):
        a, b = rnd(), rnd()
        if i % 5 == 0:
            b = a
        sa, sb = _s32(a), _s32(b)
        cnt_s += sa < sb
        cnt_u += a < b
        ab = -(sa & 0x7FFFFFFF) if sa < 0 else sa
        h = (h * 17 + min(sa, sb) + max(a, b) + ab + (sa >= sb) * 2 + (a <= b) * 4
             + (a == b) * 8) & M32
        cm = b if sa > sb else a                            # CMOVG
        s = (a > b) | ((sa > sb) << 1) | ((a <= b) << 2)    # SETA, SETG, SETBE
        h ^= (cm + s) & M32
        pu, ps = a * b, (sa * sb) & M64                     # MUL / IMUL 64-bit products
        h = (h + ((pu & M32) ^ (pu >> 32) ^ (ps & M32) ^ (ps >> 32))) & M32
        h = (h + (((sa * -77) & M32) ^ (((sa * sb) >> 32) & M32))) & M32
        x = (a | (b << 32) | (i << 64)) + (b | (a << 32))                           # ADD/ADC/ADC
        y = ((a | (b << 32) | (i << 64)) - (b | (a << 32))) & ((1 << 96) - 1)      # SUB/SBB/SBB
        h ^= ((x & M32) + ((x >> 32) & M32) * 3 + ((x >> 64) & M32) * 5 + (y & M32) * 7
              + ((y >> 32) & M32) * 11 + ((y >> 64) & M32) * 13) & M32
    return (h ^ (cnt_s << 16) ^ cnt_u) & M32


def _daa(al: int, cf: int, af: int) -> tuple[int, int, int]:
    """SDM vol. 2 DAA."""
    old_al, old_cf, cf = al, cf, 0
    if (al & 0xF) > 9 or af:
        cf = old_cf | int(al + 6 > 0xFF)
        al, af = (al + 6) & 0xFF, 1
    else:
        af = 0
    if old_al > 0x99 or old_cf:
        al, cf = (al + 0x60) & 0xFF, 1
    else:
        cf = 0
    return al, cf, af


def _das(al: int, cf: int, af: int) -> tuple[int, int, int]:
    """SDM vol. 2 DAS."""
    old_al, old_cf, cf = al, cf, 0
    if (al & 0xF) > 9 or af:
        cf = old_cf | int(al < 6)
        al, af = (al - 6) & 0xFF, 1
    else:
        af = 0
    if old_al > 0x99 or old_cf:
        al, cf = (al - 0x60) & 0xFF, 1
    return al, cf, af


def alu_narrow() -> int:
    h, rnd = 0, _Lcg(555)
    for i in range(120):
        v = rnd()
        c, uc, w, uw = _s8(v), (v >> 8) & 0xFF, _s16(v >> 3), (v >> 11) & 0xFFFF
        h = (h + c + uc + w + uw) & M32
        m16 = (uw * 3 + (c & 0xFFFF)) & 0xFFFF
        h = (h * 5 + m16 + (_tdiv(w, uc | 1) & 0xFFFF)) & M32
        h ^= ((_s8(v) & M32) + (M32 if v & 0x80000000 else 0)) & M32    # CBW+CWDE, CDQ
        prod = (v & 0xFFFF) * (((v >> 16) | 1) & 0xFFFF)                 # MUL r16
        h = (h + (prod & 0xFFFF) + ((prod >> 16) << 16)) & M32
        b1 = ((i % 10) << 4) | ((i // 10) % 10)
        b2 = (((i * 7) % 10) << 4) | ((i * 3) % 10)
        al, cf, af = _daa((b1 + b2) & 0xFF, int(b1 + b2 > 0xFF), int((b1 & 0xF) + (b2 & 0xF) > 0xF))
        h = (h + al + (cf << 8) + (af << 9)) & M32
        al, cf, af = _das((b1 - b2) & 0xFF, int(b1 < b2), int((b1 & 0xF) < (b2 & 0xF)))
        h = (h + al * 3 + (cf << 10) + (af << 11)) & M32
        aam = (((v & 0xFF) // 10) << 8) | ((v & 0xFF) % 10)              # AAM
        aad = ((v & 0xFF) + ((v >> 8) & 0xFF) * 10) & 0xFF                # AAD
        h ^= (aam + (aad << 16)) & M32
        mem, add = (v + i) & M32, v                                       # XADD
        expect = mem if i & 1 else (mem + 1) & M32
        if expect == mem:                                                 # CMPXCHG
            ok, mem = 1, i * 3
        else:
            ok, expect = 0, mem
        xv, mem = mem, i                                                  # XCHG
        h = (h + add + expect * 3 + ok * 5 + mem * 7 + xv) & M32
    return h


def _fnv(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & M32
    return h


def alu_strings() -> int:
    sbuf = bytes((i * 7 + (i >> 3)) & 0xFF for i in range(512))
    dbuf = bytearray(512)
    dbuf[0:256] = (0xA5C3E1F0).to_bytes(4, "little") * 64     # REP STOSD
    dbuf[261:461] = sbuf[3:203]                                 # REP MOVSB: EDI/ESI end at 461/203
    dbuf[460:508] = sbuf[100:148]                               # REP MOVSD
    for k in range(40):                                         # STD; REP MOVSB (backwards)
        dbuf[59 - k] = dbuf[49 - k]
    for k in range(30):
        dbuf[200 + k] = sbuf[k * 3]
    h = _fnv(dbuf)
    idx = sbuf.find(0x7F)                                       # REPNE SCASB: EDI past the match
    found, left = (idx + 1, 512 - idx - 1) if idx >= 0 else (512, 0)
    dbuf[0:300] = sbuf[0:300]
    dbuf[222] ^= 1
    diff, left2 = 223, 300 - 223                                # REPE CMPSB stops after index 222
    for k in range(64):                                         # LODSB / XOR / STOSB / LOOP
        dbuf[k] = sbuf[k] ^ 0x5A
    h ^= _fnv(dbuf[:64])
    return (h + 461 * 3 + 203 * 5 + found * 7 + left * 11 + diff * 13 + left2 * 17) & M32


def _sw(k: int, v: int) -> int:
    table = [v + 1, v * 3, v ^ 0xDEADBEEF, v >> 3, v << 5, ~v, v - 12345, v * v,
             (v << 16) | (v >> 16), v // 3, v % 1000, v & 0xFF00FF, v | 0x10101, -v,
             v + (v >> 1), 0x12345678]
    return (table[k] if k < 16 else v) & M32


def alu_switch() -> int:
    h, rnd = 1, _Lcg(4321)
    for _ in range(200):
        h = (h * 3 + _sw(rnd() % 18, h)) & M32
    return h


def alu_recursion() -> int:
    def fib(n: int) -> int:
        a, b = 0, 1
        for _ in range(n):
            a, b = b, a + b
        return a

    def ack(m: int, n: int) -> int:
        if m == 0:
            return n + 1
        return ack(m - 1, 1) if n == 0 else ack(m - 1, ack(m, n - 1))

    arr = [i * i + 1 for i in range(64)]

    def dsum(lo: int, hi: int) -> int:
        if hi - lo == 1:
            return arr[lo]
        mid = (lo + hi) // 2
        return (dsum(lo, mid) * 31 + dsum(mid, hi)) & M32

    def gcd(a: int, b: int) -> int:
        while b:
            a, b = b, a % b
        return a

    g = sum(gcd(i * 1071, 462 + i) for i in range(1, 40))
    return (fib(15) * 1000003 + ack(2, 3) * 7919 + dsum(0, 64) + g) & M32


def alu_expected() -> list[str]:
    return [
        "alu: start",
        f"mix64: 0x{alu_mix64():016x}",
        f"div64: 0x{alu_div64():016x}",
        f"div32: 0x{alu_div32():08x}",
        f"shifts: 0x{alu_shifts():08x}",
        f"bits: 0x{alu_bits():08x}",
        f"cmp: 0x{alu_cmp():08x}",
        f"narrow: 0x{alu_narrow():08x}",
        f"strings: 0x{alu_strings():08x}",
        f"switch: 0x{alu_switch():08x}",
        f"recursion: 0x{alu_recursion():08x}",
        "alu: done",
    ]


# --------------------------------------------------------------------------
# cpufeat (tests/hwguests/cpufeat), on QEMU with -cpu qemu32,+smep,+umip,+rdtscp
# --------------------------------------------------------------------------
EXPECTED_CPUFEAT = [
    "cpufeat: start",
    # CPUID.(EAX=07H,ECX=0):EBX[7] SMEP, ECX[2] UMIP; CPUID.80000001H:EDX[27]
    # RDTSCP (SDM vol. 2 CPUID, Table 3-8)
    "cpuid max>=7: yes leaf 7: smep=1 umip=1",
    "cpuid 80000001: rdtscp=1",
    # CR4.UMIP (SDM vol. 3 2.5): SGDT, SIDT, SMSW, STR, SLDT at CPL > 0 -> #GP(0);
    # at CPL 0, or with UMIP clear, they run (the "Red Pill" is back without it)
    *[f"umip=0 ring 3 {i}: no exception" for i in ("sgdt", "sidt", "smsw", "str", "sldt")],
    "umip=0 ring 0 sgdt: no exception base=0x200000",
    *[f"umip=1 ring 3 {i}: #13 err=0x0 eip=+0" for i in ("sgdt", "sidt", "smsw", "str", "sldt")],
    "umip=1 ring 0 sgdt: no exception base=0x200000",
    # CR4.SMEP (SDM vol. 3 4.6.1): a supervisor-mode fetch from a user-mode page is
    # #PF with P=1 and I/D=1 (4.7: I/D reported because SMEP is on), CR2 the
    # fetched address; data reads of user pages are unaffected (SMAP is off)
    "smep=0 ring 0 fetch from a user page: no exception",
    "smep=0 ring 0 read of a user page: 0xc3",
    "smep=1 ring 0 fetch from a user page: #14 err=0x11 eip=+0 cr2=0x410000",
    "smep=1 ring 0 read of a user page: 0xc3",
    # a kernel code page made a user page, then not present, then a supervisor page
    # again, each time with INVLPG (4.10.4.1: the next fetch uses the new entry): it
    # runs, faults under SMEP, faults as not present, runs again
    "smep=1 ring 0 fetch from a supervisor page: no exception",
    "smep=1 ring 0 fetch after the page became a user page: #14 err=0x11 eip=+0 cr2=0x411000",
    # not present: P=0, and I/D still reported because SMEP is on (4.7)
    "smep=1 ring 0 fetch after the page went away: #14 err=0x10 eip=+0 cr2=0x411000",
    "smep=1 ring 0 fetch from a supervisor page: no exception",
    # RDTSCP: EDX:EAX = TSC (later than the RDTSC before it), ECX = IA32_TSC_AUX
    "rdtscp: ecx=0x1234 later=yes",
    "cpufeat: done",
]


# --------------------------------------------------------------------------
# smap (tests/hwguests/smap), on QEMU with -cpu qemu32,+smap
# --------------------------------------------------------------------------
def _smap_fault(what: str, err: int) -> str:
    # a supervisor-mode data access to a user-mode page with CR4.SMAP=1 and
    # EFLAGS.AC=0 is #PF with P=1, U/S=0, W/R the access's (SDM vol. 3 4.6.1, 4.7);
    # CR2 is the accessed address
    return f"{what}: #14 err=0x{err:x} eip=+0 cr2=0x410004"


EXPECTED_SMAP = [
    "smap: start",
    # CPUID.(EAX=07H,ECX=0):EBX[20] SMAP (SDM vol. 2 CPUID, Table 3-8)
    "cpuid leaf 7: smap=1",
    # STAC/CLAC: #UD if CPL > 0 (SDM vol. 2 STAC, CLAC), whatever CR4.SMAP is
    "ring 3 stac: #6 eip=+0",
    "ring 3 clac: #6 eip=+0",
    # at CPL 0 they set and clear EFLAGS.AC
    "ring 0 stac: ac=1",
    "ring 0 clac: ac=0",
    # CR4.SMAP=0: ring 0 reads and writes user pages
    "smap=0 ac=0 read: no exception",
    "read: 0x1234",
    "smap=0 ac=0 write: no exception",
    _smap_fault("smap=1 ac=0 read", 0x1),
    _smap_fault("smap=1 ac=0 write", 0x3),
    # SMAP governs data accesses only: a fetch is SMEP's business (off here)
    "smap=1 ac=0 fetch: no exception",
    "smap=1 ac=0 fetch, first touch: no exception",
    # EFLAGS.AC=1 at CPL < 3: explicit accesses are allowed
    "smap=1 ac=1 read: no exception",
    "read: 0x5a5a0000",
    "smap=1 ac=1 write: no exception",
    # AC cleared again: the same page faults again (no permission outlives AC)
    _smap_fault("smap=1 ac=0 again read", 0x1),
    _smap_fault("smap=1 ac=0 again write", 0x3),
    # POPF at CPL 0 writes AC as STAC/CLAC do (SDM vol. 2 POPF)
    "smap=1 popf ac=1 write: no exception",
    _smap_fault("smap=1 popf ac=0 write", 0x3),
    "smap=0 ac=0 read again: no exception",
    "read: 0x5a5a0000",
    "smap: done",
]


def expected_lines(name: str) -> list[str]:
    if name.startswith("alu-"):
        return alu_expected()
    return {
        "privilege": EXPECTED_PRIVILEGE,
        "faults": EXPECTED_FAULTS,
        "paging": EXPECTED_PAGING,
        "pic_pit": EXPECTED_PIC_PIT,
        "uart": EXPECTED_UART,
        "smc": smc_expected(),
        "sysinsn": EXPECTED_SYSINSN,
        "cpufeat": EXPECTED_CPUFEAT,
        "smap": EXPECTED_SMAP,
    }[name]


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------

def _need_toolchain() -> None:
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("guest toolchain (gcc, ld) not installed")


def _need_platform(platform: str) -> None:
    if platform == "qemu":
        if find_qemu() is None:
            pytest.skip("qemu-system-i386 not installed")
    elif not EMULATOR_READY:
        pytest.skip("emulator not wired yet")


@functools.lru_cache(maxsize=None)
def _run(name: str, platform: str) -> tuple[str, int]:
    kernel = KERNELS[name]
    return run_platform(platform, build_kernel(name), kernel.cmdline, kernel.stdin,
                        qemu_args=kernel.qemu_args)


def _platform_param(p: str):
    return pytest.param(p, marks=pytest.mark.qemu) if p == "qemu" else p


@pytest.mark.parametrize("platform", [_platform_param(p) for p in PLATFORMS])
@pytest.mark.parametrize("name", list(KERNELS))
def test_guest(name: str, platform: str) -> None:
    _need_toolchain()
    _need_platform(platform)
    out, code = _run(name, platform)
    assert output_lines(out) == expected_lines(name), out
    assert code == 0, f"guest exit code {code}; output:\n{out}"


@pytest.mark.qemu
@pytest.mark.parametrize("engine", ["jit", "interp"])
@pytest.mark.parametrize("name", list(KERNELS))
def test_emulator_matches_qemu(name: str, engine: str) -> None:
    """Byte-for-byte the same serial output and exit code as QEMU."""
    _need_toolchain()
    _need_platform("qemu")
    _need_platform(engine)
    assert _run(name, engine) == _run(name, "qemu")


def test_alu_images_differ() -> None:
    """-O0/-O2/-O3 really are different programs (same output)."""
    _need_toolchain()
    images = {build_kernel(n).read_bytes() for n in ("alu-O0", "alu-O2", "alu-O3")}
    assert len(images) == 3


def test_guest_exit_code_mapping() -> None:
    assert guest_exit_code(1) == 0
    assert guest_exit_code(3) == 1
    assert guest_exit_code(0x7F * 2 + 1) == 0x7F
    assert guest_exit_code(0) is None        # triple fault with -no-reboot
    assert guest_exit_code(-9) is None       # killed


@pytest.mark.qemu
def test_qemu_timeout_is_reported() -> None:
    _need_toolchain()
    _need_platform("qemu")
    with pytest.raises(QemuTimeout, match="did not exit within"):
        run_qemu(build_kernel("hang"), timeout=2)
