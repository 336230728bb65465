/* hvmreset.S: a 64 KiB firmware ROM for the reset path and for CR0.NE = 0 (the PC's
 * legacy x87 error reporting), run as `qemu-system-i386 -bios hvmreset.rom`, as
 * `ringvisor run --bios hvmreset.rom` and under `--mode hvm`; all print the same on COM1.
 * Expected values come from the SDM:
 *   - RESET (Vol. 3 §9.1.4, Table 9-1): CS F000 with base FFFF0000, so the code a near
 *     jump from the reset vector reaches runs from the ROM's copy below 4 GiB; CR0 =
 *     60000010 (NE clear); EDX the processor signature (CPUID.1:EAX); IDTR and GDTR base
 *     0, limit FFFF; after the switch to protected mode STR and SLDT read the null
 *     selectors RESET left in TR and LDTR;
 *   - the ROM is mapped twice (QEMU x86_bios_rom_init): its bytes read the same through
 *     both copies, and a store into the copy at 4 GiB does not change it;
 *   - CR0.NE = 0 (Vol. 1 §8.7, Vol. 3 §2.5): an unmasked x87 exception is reported by the
 *     next waiting instruction (FWAIT) through FERR#, which the PC routes to IRQ 13 (slave
 *     PIC input 5), not by #MF; a write to port F0 clears it and asserts IGNNE#.
 *     The PICs are programmed with everything masked, so IRQ 13 is read from the
 *     slave's IRR (QEMU 7.2 asserts if FWAIT itself interrupts the CPU); the edge stays
 *     latched there, and in protected mode, once the local APIC passes the 8259A's INTR
 *     on (RESET masks LINT0) and IRQ 13 is unmasked, it is taken through the IDT, once.
 * The ROM leaves through isa-debug-exit (port F4).
 */
        .code16
        .set ROM, 0xF0000
        .set COM1, 0x3F8
        .text
        .globl _start
_start:
        /* here by a near jump from the reset vector: CS is still F000 with base FFFF0000 */
        cli
        mov     %edx, %ebp              /* EDX after RESET */
        call    1f
1:      pop     %bx                     /* the IP of 1: (fetched from the 4 GiB copy) */
        xor     %ax, %ax
        mov     %ax, %ss
        mov     $0x7000, %sp
        mov     %ax, %ds
        mov     %ax, %es
        mov     $s_hi, %si              /* puts reads %cs: the 4 GiB copy too */
        call    puts
        mov     %bx, %ax
        call    hex16
        call    nl

        mov     $s_cr0, %si
        call    puts
        mov     %cr0, %eax
        call    hex32
        call    nl

        mov     $1, %eax
        cpuid
        cmp     %eax, %ebp
        sete    %al
        movzbw  %al, %ax
        mov     $s_edx, %si
        call    puts
        call    hex16
        call    nl

        sidt    0x9000
        sgdt    0x9008
        mov     $s_idt, %si
        call    puts
        mov     0x9000, %ax
        call    hex16
        call    space
        mov     0x9002, %ax
        call    hex16
        mov     $s_gdt, %si
        call    puts
        mov     0x9008, %ax
        call    hex16
        call    space
        mov     0x900A, %ax
        call    hex16
        call    nl

        /* the same ROM bytes through both copies: %cs (4 GiB) and F000 (below 1 MiB) */
        mov     %cs:sig, %eax
        mov     $0xF000, %dx
        mov     %dx, %es
        mov     %es:sig, %edx
        xor     %cx, %cx
        mov     %cx, %es
        mov     $s_sig, %si
        call    puts
        call    hex32
        call    space
        mov     %edx, %eax
        call    hex32
        call    nl

        ljmp    $0xF000, $low           /* from now on the copy below 1 MiB */
low:
        mov     $s_low, %si
        call    puts
        mov     %cs, %ax
        call    hex16
        call    nl

        /* CR0.NE = 0: FERR# and IRQ 13 */
        movw    $fault_mf, 16*4
        movw    %cs, 16*4+2
        mov     $0x11, %al              /* ICW1 to both: edge, cascade, ICW4 */
        out     %al, $0x20
        out     %al, $0xA0
        mov     $0x08, %al              /* ICW2 */
        out     %al, $0x21
        mov     $0x70, %al
        out     %al, $0xA1
        mov     $0x04, %al              /* ICW3: the slave on IRQ 2 */
        out     %al, $0x21
        mov     $0x02, %al
        out     %al, $0xA1
        mov     $0x01, %al              /* ICW4: 8086 mode */
        out     %al, $0x21
        out     %al, $0xA1
        mov     $0xFF, %al              /* everything masked: IRQ 13 is read from the IRR */
        out     %al, $0x21
        out     %al, $0xA1
        mov     $0x0A, %al              /* OCW3: reads of the command port show the IRR */
        out     %al, $0xA0
        movw    $0, 0x9302              /* #MF count */
        fninit
        fldcw   %cs:cw_zm_clear
        fld1
        fldz
        fdivrp  %st, %st(1)             /* 1/0: ZE, ES and B set, nothing raised yet */
        in      $0xA0, %al
        and     $0x20, %al
        movzbw  %al, %bx                /* IRQ 13 before FWAIT: 0 */
        fnstsw  %ax
        mov     %ax, %dx
        fwait                           /* NE = 0: FERR#, IRQ 13; not #MF */
        in      $0xA0, %al
        and     $0x20, %al
        movzbw  %al, %di                /* IRQ 13 after FWAIT: 20 */
        mov     $s_ferr, %si
        call    puts
        mov     %dx, %ax
        and     $0x87FF, %ax            /* (TOP: QEMU pops, the SDM leaves the stack) */
        call    hex16
        call    space
        mov     %bx, %ax
        call    hex16
        call    space
        mov     %di, %ax
        call    hex16
        call    space
        mov     0x9302, %ax
        call    hex16
        call    nl
        mov     $0, %al
        out     %al, $0xF0              /* clear the FERR# latch (asserts IGNNE#) */
        fnclex
        fninit

        /* protected mode: TR and LDTR as RESET left them; a store into the 4 GiB copy */
        lgdtl   %cs:gdtdesc
        mov     %cr0, %eax
        or      $1, %eax
        mov     %eax, %cr0
        ljmpl   $0x08, $(ROM + pm32)
        .code32
pm32:
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $0x7000, %esp
        str     %bx
        sldt    %cx
        mov     $0xFFFF0000 + sig, %edi
        movl    $0x12345678, (%edi)
        mov     (%edi), %edx
        mov     $(ROM + s_pm), %esi
        call    puts32
        movzwl  %bx, %eax
        call    hex32_32
        call    space32
        movzwl  %cx, %eax
        call    hex32_32
        call    space32
        mov     %edx, %eax
        call    hex32_32
        mov     $'\n', %al
        call    putc32

        /* the IRQ 13 FERR# raised above is still requested (the PIC latched its edge):
         * with the local APIC passing the 8259A's INTR on (software-enabled, LINT0
         * ExtINT, as a BIOS leaves it: RESET masks it) and IRQ 13 unmasked, it is taken
         * through the IDT, once */
        movl    $0x1FF, 0xFEE000F0      /* spurious vector register: APIC enabled */
        movl    $0x700, 0xFEE00350      /* LVT LINT0: ExtINT, unmasked */
        mov     $(ROM + irq13_32), %eax
        mov     %ax, 0x8000 + 0x75*8    /* an interrupt gate, 32-bit, to 08:irq13_32 */
        movw    $0x08, 0x8000 + 0x75*8 + 2
        movw    $0x8E00, 0x8000 + 0x75*8 + 4
        shr     $16, %eax
        mov     %ax, 0x8000 + 0x75*8 + 6
        lidt    ROM + idtdesc
        movl    $0, 0x9310
        mov     $0xFB, %al              /* unmask the cascade, then IRQ 13 */
        out     %al, $0x21
        mov     $0xDF, %al
        out     %al, $0xA1
        sti                             /* STI; HLT: taken once HLT has begun (QEMU */
        hlt                             /* checks interrupts only between blocks) */
        cli
        mov     $(ROM + s_taken), %esi
        call    puts32
        mov     0x9310, %eax
        call    hex32_32
        mov     $'\n', %al
        call    putc32

        mov     $(ROM + s_done), %esi
        call    puts32
        mov     $0, %al
        outb    %al, $0xF4
1:      hlt
        jmp     1b

irq13_32:
        push    %eax
        incl    0x9310
        mov     $0x20, %al              /* EOI: slave, then master */
        out     %al, $0xA0
        out     %al, $0x20
        pop     %eax
        iret

putc32: push    %edx
        mov     $COM1, %dx
        out     %al, %dx
        pop     %edx
        ret
puts32: push    %eax
1:      mov     (%esi), %al
        test    %al, %al
        jz      2f
        call    putc32
        inc     %esi
        jmp     1b
2:      pop     %eax
        ret
space32:
        push    %eax
        mov     $' ', %al
        call    putc32
        pop     %eax
        ret
hex32_32:
        push    %ecx
        push    %eax
        mov     $8, %ecx
1:      rol     $4, %eax
        push    %eax
        and     $0xF, %al
        add     $'0', %al
        cmp     $'9', %al
        jbe     2f
        add     $('a' - '9' - 1), %al
2:      call    putc32
        pop     %eax
        loop    1b
        pop     %eax
        pop     %ecx
        ret
        .code16

/* --- handlers --------------------------------------------------------------- */
fault_mf:
        incw    0x9302
        fnclex
        iret

/* --- COM1 output ----------------------------------------------------------------- */
        .include "com1.inc"

/* --- data ----------------------------------------------------------------------- */
        .p2align 3
gdt:    .quad   0
        .quad   0x00CF9A000000FFFF      /* 08: 32-bit code, base 0, 4 GiB */
        .quad   0x00CF92000000FFFF      /* 10: 32-bit data, base 0, 4 GiB */
gdt_end:
gdtdesc:
        .word   gdt_end - gdt - 1
        .long   ROM + gdt
idtdesc:
        .word   0x75 * 8 + 7
        .long   0x8000
cw_zm_clear:
        .word   0x037B                  /* every exception masked but ZE */
sig:    .ascii  "RVRS"

s_hi:     .asciz "reset: ip at 4 GiB "
s_cr0:    .asciz "cr0 "
s_edx:    .asciz "edx = cpuid.1 "
s_idt:    .asciz "idtr "
s_gdt:    .asciz " gdtr "
s_sig:    .asciz "rom both copies "
s_low:    .asciz "low copy cs "
s_ferr:   .asciz "ne=0: sw, irq13 before/after fwait, #MF count "
s_pm:     .asciz "tr ldtr, rom after store "
s_taken:  .asciz "irq13 taken in protected mode "
s_done:   .asciz "done\n"

        .org    0xFFF0
reset:  jmp     _start                  /* near: CS keeps its RESET base FFFF0000 */
        .org    0x10000
