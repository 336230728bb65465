/* realmode.S: a 64 KiB firmware ROM that checks real-address mode from RESET on.
 *
 * Run as `qemu-system-i386 -bios realmode.rom` and `ringvisor run --bios realmode.rom`;
 * both must print the same lines on COM1.  Expected values come from the SDM:
 *   - RESET state (Vol. 3 Table 9-1): CS=F000, first fetch at FFFFFFF0, CR0 = 60000010;
 *   - real-mode addressing (Vol. 3 §20.1.1): linear = segment * 16 + offset;
 *   - interrupts through the IVT (Vol. 3 §20.1.4): FLAGS, CS, IP pushed, IF/TF cleared;
 *   - faults (#DE, #UD, #BR) push the address of the faulting instruction, no error code;
 *   - the switch to protected mode and back (Vol. 3 §9.9), the descriptor cache keeping
 *     a 4 GiB limit loaded in protected mode ("unreal" mode).
 * POST codes go to port 0x80 (one a stage); the ROM leaves through isa-debug-exit (0xf4).
 */
        .code16
        .set ROM, 0xF0000
        .set COM1, 0x3F8
        .text
        .globl _start
_start:
        cli
        mov     %cs, %ax                /* F000 after the far jump from the reset vector */
        mov     %ax, %bx
        xor     %ax, %ax
        mov     %ax, %ss
        mov     $0x7000, %sp
        mov     %ax, %ds
        mov     %ax, %es
        push    %bx
        mov     $s_cs, %si
        call    puts
        pop     %ax
        call    hex16
        call    nl
        mov     $0x01, %al
        outb    %al, $0x80

        /* CR0 at reset (SMSW: the low word) */
        mov     $s_msw, %si
        call    puts
        smsw    %ax
        and     $0xFFF1, %ax            /* PE MP EM TS ET NE, the rest */
        call    hex16
        call    nl

        /* segment * 16 + offset: 1000:0010 and 1001:0000 are the same byte */
        mov     $0x1000, %ax
        mov     %ax, %ds
        movw    $0xBEEF, 0x10
        mov     $0x1001, %ax
        mov     %ax, %es
        mov     %es:0, %dx
        xor     %ax, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     $s_alias, %si
        call    puts
        mov     %dx, %ax
        call    hex16
        call    nl

        /* 16-bit address arithmetic wraps at 64 KiB: [bx+si] with bx+si = 0x10005 */
        movw    $0x1234, 0x0005
        mov     $0xFFFF, %bx
        mov     $0x0006, %si
        mov     (%bx,%si), %ax
        mov     $s_wrap, %si
        push    %ax
        call    puts
        pop     %ax
        call    hex16
        call    nl

        /* operand- and address-size prefixes in 16-bit code */
        movl    $0x12345678, %eax
        movl    $0x11111111, %ecx
        addl    %ecx, %eax
        movl    $0x9000, %esi
        movl    $3, %ebx
        addr32 movl %eax, (%esi,%ebx,4)
        movl    0x900C, %edx
        mov     $s_o32, %si
        call    puts
        mov     %edx, %eax
        call    hex32
        call    nl

        /* INT n through the IVT: the handler sees FLAGS CS IP, IF clear; IRET */
        movw    $int30, 0x30*4
        movw    %cs, 0x30*4+2
        sti
        mov     $0x4321, %ax
        int     $0x30
int30_ret:
        cli
        mov     %ax, %dx
        mov     $s_int, %si
        call    puts
        mov     %dx, %ax
        call    hex16
        call    space
        mov     %bp, %ax
        call    hex16
        call    nl
        mov     $0x02, %al
        outb    %al, $0x80

        /* faults: #DE (DIV by 0), #UD (UD2), #BR (BOUND): the saved IP is the instruction's */
        movw    $fault_de, 0*4
        movw    %cs, 0*4+2
        movw    $fault_ud, 6*4
        movw    %cs, 6*4+2
        movw    $fault_br, 5*4
        movw    %cs, 5*4+2
        xor     %cx, %cx
        mov     $10, %ax
de_at:  div     %cl                     /* 2 bytes: the handler steps over it */
        mov     $s_de, %si
        call    puts
        mov     %di, %ax
        sub     $de_at, %ax
        call    hex16
        call    nl
ud_at:  ud2
        mov     $s_ud, %si
        call    puts
        mov     %di, %ax
        sub     $ud_at, %ax
        call    hex16
        call    nl
        movw    $1, 0x9100
        movw    $5, 0x9102
        mov     $9, %bx
br_at:  bound   %bx, 0x9100             /* 4 bytes */
        mov     $s_br, %si
        call    puts
        mov     %di, %ax
        sub     $br_at, %ax
        call    hex16
        call    nl

        /* POPF in real mode (CPL 0) loads IOPL and NT; bit 15 reads as 0, bit 1 as 1 */
        push    $0xF0D5
        popf
        pushf
        pop     %ax
        push    $0x0002
        popf
        mov     %ax, %dx
        mov     $s_popf, %si
        call    puts
        mov     %dx, %ax
        call    hex16
        call    nl

        /* far CALL / RETF, direct and through a memory pointer; a 32-bit IRET frame */
        lcall   $0xF000, $farproc
        movw    $farproc2, 0x9200
        movw    %cs, 0x9202
        lcall   *0x9200
        pushfl
        pushl   $0xF000
        pushl   $iret32_done
        iretl
iret32_done:
        mov     %ax, %dx
        mov     $s_far, %si
        call    puts
        mov     %dx, %ax
        call    hex16
        call    nl
        mov     $0x03, %al
        outb    %al, $0x80

        /* the stack pointer wraps at 64 KiB: SP = 2, two pushes leave SP = FFFE */
        mov     %sp, %bp
        mov     $2, %sp
        push    $0xAAAA
        push    $0x5555
        mov     %sp, %dx
        mov     %ss:0xFFFE, %cx
        mov     %bp, %sp
        mov     $s_spwrap, %si
        call    puts
        mov     %dx, %ax
        call    hex16
        call    space
        mov     %cx, %ax
        call    hex16
        call    nl

        /* to protected mode: LGDT, CR0.PE, a far jump to a 32-bit code segment */
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
        movl    $0xCAFEF00D, 0x200000   /* above 1 MiB */
        mov     $(ROM + s_pm), %esi
        call    puts32
        str     %ax                     /* (SLDT/STR are protected-mode instructions) */
        /* back: a 16-bit code segment, 4 GiB data caches, clear PE, a real far jump */
        ljmp    $0x18, $back16
        .code16
back16:
        mov     $0x20, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     %cr0, %eax
        and     $0xFFFFFFFE, %eax
        mov     %eax, %cr0
        ljmp    $0xF000, $real_again
real_again:
        xor     %ax, %ax
        mov     %ax, %ds                /* base 0; the cache keeps the 4 GiB limit */
        mov     %ax, %ss
        mov     %ax, %es
        mov     $0x7000, %sp
        addr32 movl 0x200000, %edx      /* "unreal" mode: a 32-bit offset in real mode */
        mov     $s_unreal, %si
        call    puts
        mov     %edx, %eax
        call    hex32
        call    nl
        smsw    %ax
        and     $1, %ax
        mov     $s_pe, %si
        push    %ax
        call    puts
        pop     %ax
        call    hex16
        call    nl
        mov     $0x05, %al
        outb    %al, $0x80

        /* LMSW sets PE (and cannot clear it) */
        smsw    %ax
        or      $1, %ax
        lmsw    %ax
        ljmp    $0x18, $lmsw_pm
lmsw_pm:
        mov     $0x20, %ax
        mov     %ax, %ds
        smsw    %ax
        and     $0xFFFE, %ax
        lmsw    %ax                     /* PE stays set */
        smsw    %dx
        mov     %cr0, %eax
        and     $0xFFFFFFFE, %eax
        mov     %eax, %cr0
        ljmp    $0xF000, $lmsw_real
lmsw_real:
        xor     %ax, %ax
        mov     %ax, %ds
        mov     $s_lmsw, %si
        call    puts
        mov     %dx, %ax
        and     $1, %ax
        call    hex16
        call    nl

        /* the timer's IRQ 0 through the PIC, in real mode: STI; HLT wakes in the handler.
         * QEMU's local APIC passes the PIC's INTR on only once LINT0 is ExtINT (as a BIOS
         * sets it): written through the 4 GiB DS cache (ringvisor: no APIC, the writes
         * go nowhere) */
        addr32 movl $0x1FF, 0xFEE000F0   /* spurious vector register: APIC enabled */
        addr32 movl $0x700, 0xFEE00350   /* LVT LINT0: ExtINT, unmasked */
        movw    $irq0, 0x08*4
        movw    %cs, 0x08*4+2
        mov     $0x11, %al              /* ICW1: edge, cascade, ICW4 */
        out     %al, $0x20
        mov     $0x08, %al              /* ICW2: vectors 08-0F */
        out     %al, $0x21
        mov     $0x04, %al
        out     %al, $0x21
        mov     $0x01, %al
        out     %al, $0x21
        mov     $0xFE, %al              /* only IRQ 0 */
        out     %al, $0x21
        mov     $0x34, %al              /* PIT channel 0, mode 2 */
        out     %al, $0x43
        mov     $0x00, %al
        out     %al, $0x40
        mov     $0x10, %al
        out     %al, $0x40
        movw    $0, 0x9300
        sti
1:      hlt
        cmpw    $3, 0x9300
        jb      1b
        cli
        mov     $s_irq, %si
        call    puts
        mov     0x9300, %ax
        call    hex16
        call    nl
        mov     $0x04, %al
        outb    %al, $0x80

        mov     $s_done, %si
        call    puts
        mov     $0xFF, %al
        outb    %al, $0x80
        mov     $0, %al
        outb    %al, $0xF4
1:      hlt
        jmp     1b

/* --- handlers --------------------------------------------------------------- */
int30:  mov     %sp, %bp
        mov     %ss:4(%bp), %bp         /* the pushed FLAGS: IF was set */
        and     $0x0200, %bp
        pushf
        pop     %bx
        and     $0x0200, %bx            /* IF is clear in the handler */
        or      %bx, %bp
        add     $0x1111, %ax
        iret

fault_de:
        mov     %sp, %bp
        mov     %ss:(%bp), %di          /* saved IP: the DIV */
        addw    $2, %ss:(%bp)
        iret
fault_ud:
        mov     %sp, %bp
        mov     %ss:(%bp), %di
        addw    $2, %ss:(%bp)
        iret
fault_br:
        mov     %sp, %bp
        mov     %ss:(%bp), %di
        addw    $4, %ss:(%bp)
        iret

irq0:   push    %ax
        incw    0x9300
        mov     $0x20, %al
        out     %al, $0x20
        pop     %ax
        iret

farproc:
        mov     $0x100, %ax
        lret
farproc2:
        add     $0x23, %ax
        lret

/* --- COM1 output ----------------------------------------------------------------- */
        .include "com1.inc"

        .code32
puts32: push    %edx
        mov     $COM1, %dx
1:      mov     (%esi), %al
        test    %al, %al
        jz      2f
        out     %al, %dx
        inc     %esi
        jmp     1b
2:      pop     %edx
        ret
        .code16

/* --- data ----------------------------------------------------------------------- */
        .p2align 3
gdt:    .quad   0
        .quad   0x00CF9A000000FFFF      /* 08: 32-bit code, base 0, 4 GiB */
        .quad   0x00CF92000000FFFF      /* 10: 32-bit data, base 0, 4 GiB */
        .quad   0x00009A0F0000FFFF      /* 18: 16-bit code, base F0000, 64 KiB */
        .quad   0x008F92000000FFFF      /* 20: 16-bit data, base 0, 4 GiB (for unreal mode) */
gdt_end:
gdtdesc:
        .word   gdt_end - gdt - 1
        .long   ROM + gdt

s_cs:     .asciz "cs after reset "
s_msw:    .asciz "msw "
s_alias:  .asciz "1001:0000 "
s_wrap:   .asciz "wrap "
s_o32:    .asciz "o32/a32 "
s_int:    .asciz "int30 ax,if "
s_de:     .asciz "#DE ip-off "
s_ud:     .asciz "#UD ip-off "
s_br:     .asciz "#BR ip-off "
s_popf:   .asciz "popf "
s_far:    .asciz "far "
s_spwrap: .asciz "sp wrap "
s_irq:    .asciz "irq0 ticks "
s_pm:     .asciz "protected mode\n"
s_unreal: .asciz "unreal "
s_pe:     .asciz "pe "
s_lmsw:   .asciz "lmsw pe "
s_done:   .asciz "done\n"

        .org    0xFFF0
reset:  ljmp    $0xF000, $_start        /* the reset vector: FFFF:FFF0 = F000:FFF0 */
        .org    0x10000
