/* rmivt: what the firmware leaves in the real-mode interrupt vector table for a
 * Multiboot kernel, and what happens when such a kernel enables interrupts in real
 * mode before installing its own handlers (QEMU: SeaBIOS's handlers).  Our own
 * 16-bit code is copied to 0x8000 and entered through a 16-bit protected-mode
 * segment; it prints to COM1 and leaves through port 0xf4 (expected lines are in
 * tests/test_bare_pc.py). */
        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0, -0x1badb002

        .text
        .globl _start
        .code32
_start:
        cli
        movl $low_start, %esi           /* the 16-bit part runs at 0x8000 */
        movl $0x8000, %edi
        movl $(low_end - low_start), %ecx
        cld
        rep movsb
        lgdt gdt_ptr
        ljmp $0x18, $(pm16 - low_start)

        .data
        .align 8
gdt:    .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08 flat 32-bit code */
        .quad 0x00cf92000000ffff        /* 0x10 flat 32-bit data */
        .quad 0x00009a008000ffff        /* 0x18 16-bit code, base 0x8000 */
        .quad 0x000092000000ffff        /* 0x20 16-bit data, base 0 */
gdt_ptr:
        .word . - gdt - 1
        .long gdt

        .text
        .code16
low_start:
pm16:   movw $0x20, %ax                 /* real-mode-like limits before PE goes */
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movl %cr0, %eax
        andl $~1, %eax
        movl %eax, %cr0
        ljmp $0x0800, $(real - low_start)

real:   movw $0x0800, %ax
        movw %ax, %ds                   /* DS: our strings; ES: the IVT and BDA */
        xorw %ax, %ax
        movw %ax, %es
        movw %ax, %ss
        movw $0x7000, %sp
        lidtl %ds:(ivt_ptr - low_start)

        /* the vectors: timer, an unused one, a PIC one, a user one, 79h */
        movw $(m_ivt - low_start), %si
        call puts
        movb $0x08, %bl
        call vector
        movb $0x20, %bl
        call vector
        movb $0x60, %bl
        call vector
        movb $0x79, %bl
        call vector
        call newline
        movw $(m_pic - low_start), %si  /* a spare PIC input: not the plain IRET */
        call puts
        movw %es:(0x0f * 4), %ax
        movw %es:(0x20 * 4), %dx
        call same
        movw %es:(0x77 * 4), %ax
        call same
        call newline

        /* hook INT 1Ch, then let IRQ 0 end a HLT */
        movw $(tick - low_start), %es:(0x1c * 4)
        movw $0x0800, %es:(0x1c * 4 + 2)
        movw %es:0x46c, %bx
        sti
        hlt
        cli
        movw %es:0x46c, %ax
        subw %bx, %ax
        movw %ax, %di
        movw $(m_ticks - low_start), %si
        call puts
        movw %di, %ax
        call hex4
        movw $(m_1c - low_start), %si
        call puts
        movw %ds:(ticks_1c - low_start), %ax
        call hex4
        movb $0x0b, %al                 /* OCW3: read the master's ISR */
        outb %al, $0x20
        inb $0x20, %al
        xorb %ah, %ah
        movw %ax, %di
        movw $(m_isr - low_start), %si
        call puts
        movw %di, %ax
        call hex4
        call newline

        int $0x20                       /* an unused vector returns */
        movw $(m_int - low_start), %si
        call puts
        call newline

        movw $(m_done - low_start), %si
        call puts
        call newline
        movb $0, %al
        outb %al, $0xf4
1:      hlt
        jmp 1b

tick:   incw %cs:(ticks_1c - low_start)
        iret

/* " nn=ssss:oooo" for vector BL */
vector: movb $' ', %al
        call putc
        movb %bl, %al
        xorb %ah, %ah
        call hex2
        movb $'=', %al
        call putc
        xorb %bh, %bh
        shlw $2, %bx
        movw %es:2(%bx), %ax
        call hex4
        movb $':', %al
        call putc
        movw %es:(%bx), %ax
        call hex4
        ret

/* " same" or " other": AX against DX */
same:   movw $(m_same - low_start), %si
        cmpw %dx, %ax
        je 1f
        movw $(m_other - low_start), %si
1:      call puts
        ret

#include "com16.h"

ivt_ptr:  .word 0x3ff
          .long 0
ticks_1c: .word 0
m_ivt:    .asciz "ivt"
m_pic:    .asciz "pic vectors 0f,77 vs 20:"
m_same:   .asciz " same"
m_other:  .asciz " other"
m_ticks:  .asciz "sti;hlt: ticks +"
m_1c:     .asciz " int1c calls "
m_isr:    .asciz " master isr "
m_int:    .asciz "int 20h returned"
m_done:   .asciz "rmivt: done"
low_end:
