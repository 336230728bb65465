/* realmon: a protected-mode kernel that leaves protected mode and comes back, twice
 * (as kvm-unit-tests' realmode and an SMP AP trampoline do), for real-address mode
 * under the monitors (tests/test_realmode_monitors.py has the expected lines and the
 * SDM rules behind each).  Nothing here is the firmware's: the GDT, the interrupt
 * vector table (loaded by LIDT in real mode, at linear 0xa000), the PIC and PIT
 * programming are the kernel's own.
 *
 * The 16-bit part is copied to 0x8000 and entered through a 16-bit protected-mode
 * code segment; in real mode CS is 0800h (base 0x8000), DS 0800h, SS 0, SP 7000h.
 *   1  INT 30h through the IVT: the FLAGS, CS, IP frame, IF and TF cleared, IRET;
 *      PUSHF/POPF with IOPL (real mode is CPL 0: POPF loads IOPL), CLI/STI.
 *   2  exceptions through the IVT, no error code: #DE, #UD, and #GP for a word at
 *      offset FFFFh (beyond the 64 KiB limit: "interrupt 13", SDM Vol. 3 §20.1.1).
 *   3  IRQ 0 through the IVT: the PIC re-programmed at vector 50h, the PIT at 1 kHz,
 *      STI; HLT, the handler's frame, EOI.
 *   4  unreal mode: PE set, FS loaded with a 4 GiB data segment, PE cleared without a
 *      far jump; a 32-bit address beyond 1 MiB through FS, the selector FS shows, and
 *      a real-mode load of FS that keeps the 4 GiB limit; the same offset through DS
 *      (64 KiB) is #GP through the IVT.
 *   5  back to 32-bit protected mode (MOV CR0, far JMP), where the unreal stores are
 *      read back; then into real mode again (INT 30h) and back once more.
 * Output is COM1 (polled), exit through port f4h. */
        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0, -0x1badb002

#define LOW     0x8000
#define IVT     0xa000
#define O(x)    ((x) - low_start)

        .text
        .globl _start
        .code32
_start:
        cli
        movl $low_start, %esi
        movl $LOW, %edi
        movl $(low_end - low_start), %ecx
        cld
        rep movsb
        lgdt gdt_ptr
        ljmp $0x18, $O(pm16)

/* back from real mode the first time */
back32: movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        movl $stack_top, %esp
        movl $m_back, %esi
        call p32_puts
        movl 0x200000, %eax
        call p32_hex
        movb $' ', %al
        call p32_putc
        movl 0x200004, %eax
        call p32_hex
        movl $m_nl, %esi
        call p32_puts
        ljmp $0x18, $O(again16)

/* back the second time */
done32: movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %ss
        movl $stack_top, %esp
        movl $m_done, %esi
        call p32_puts
        movb $0, %al
        outb %al, $0xf4
1:      hlt
        jmp 1b

p32_putc: pushl %eax
        movw $0x3fd, %dx
2:      inb %dx, %al
        testb $0x20, %al
        jz 2b
        popl %eax
        movw $0x3f8, %dx
        outb %al, %dx
        ret
p32_puts: lodsb
        testb %al, %al
        jz 3f
        call p32_putc
        jmp p32_puts
3:      ret
p32_hex: movl $8, %ecx
4:      roll $4, %eax
        pushl %eax
        andb $0xf, %al
        addb $'0', %al
        cmpb $'9', %al
        jbe 5f
        addb $('a' - '9' - 1), %al
5:      call p32_putc
        popl %eax
        loop 4b
        ret

        .data
        .align 8
gdt:    .quad 0
        .quad 0x00cf9a000000ffff        /* 08 flat 32-bit code */
        .quad 0x00cf92000000ffff        /* 10 flat 32-bit data, 4 GiB */
        .quad 0x00009a008000ffff        /* 18 16-bit code, base 0x8000, 64 KiB */
        .quad 0x000092000000ffff        /* 20 16-bit data, base 0, 64 KiB */
gdt_ptr:
        .word . - gdt - 1
        .long gdt
m_back: .asciz "5: back in protected mode: unreal stores "
m_nl:   .asciz "\n"
m_done: .asciz "5: back in protected mode again\nrealmon: done\n"
        .bss
        .align 16
        .space 4096
stack_top:

/* ------------------------------------------------------------------------------------ */
        .text
        .code16
low_start:
pm16:   movw $0x20, %ax                 /* 64 KiB limits before PE goes */
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        movl %cr0, %eax
        andb $0xfe, %al
        movl %eax, %cr0
        ljmp $0x0800, $O(real)

real:   movw $0x0800, %ax
        movw %ax, %ds
        xorw %ax, %ax
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        movw $0x7000, %sp
        movb $0xff, %al                 /* every PIC input masked for now */
        outb %al, $0x21
        outb %al, $0xa1
        lidt O(ivt_ptr)
        /* our IVT: every vector to "spurious", then the ones we use */
        movw $IVT, %di
        movw $256, %cx
6:      movw $O(spurious), %es:(%di)
        movw $0x0800, %es:2(%di)
        addw $4, %di
        loop 6b
        movw $O(h_de), %es:(IVT + 0 * 4)
        movw $O(h_ud), %es:(IVT + 6 * 4)
        movw $O(h_gp), %es:(IVT + 13 * 4)
        movw $O(h_int30), %es:(IVT + 0x30 * 4)
        movw $O(h_irq0), %es:(IVT + 0x50 * 4)

        movw $O(m_hello), %si
        call puts

        /* 1: INT 30h with FLAGS 0ad7 (IF, OF SF ZF AF PF CF) */
        pushw $0x0ad7
        popfw
        int $0x30
int30_ret:
        pushfw
        popw %bx
        movw %ax, %cx
        movw $O(m_int30_after), %si
        call puts
        movw %cx, %ax
        call hex4
        movw $O(m_flags), %si
        call puts
        movw %bx, %ax
        call hex4
        call newline
        /* POPF loads IOPL at CPL 0; CLI and STI act on IF */
        pushw $0x3002
        popfw
        pushfw
        popw %bx
        sti
        pushfw
        popw %cx
        cli
        pushfw
        popw %dx
        movw $O(m_popf), %si
        call puts
        movw %bx, %ax
        call hex4
        call space
        movw %cx, %ax
        call hex4
        call space
        movw %dx, %ax
        call hex4
        call newline
        pushw $0x0002
        popfw

        /* 2: exceptions through the IVT */
        movw $O(after_de), O(resume)
        xorb %bl, %bl
        movw $0x1234, %ax
de_at:  divb %bl
after_de:
        movw $O(after_ud), O(resume)
ud_at:  ud2
after_ud:
        movw $O(after_gp), O(resume)
gp_at:  movw 0xffff, %ax
after_gp:

        /* 3: IRQ 0 through the IVT at vector 50h */
        movb $0x11, %al                 /* ICW1: edge, cascade, ICW4 */
        outb %al, $0x20
        movb $0x50, %al                 /* ICW2: vectors 50h-57h */
        outb %al, $0x21
        movb $0x04, %al                 /* ICW3: the slave on IRQ 2 */
        outb %al, $0x21
        movb $0x01, %al                 /* ICW4: 8086 mode */
        outb %al, $0x21
        movb $0xfe, %al                 /* IRQ 0 only */
        outb %al, $0x21
        movb $0x34, %al                 /* PIT channel 0, mode 2, 1193 = 1 kHz */
        outb %al, $0x43
        movw $1193, %ax
        outb %al, $0x40
        movb %ah, %al
        outb %al, $0x40
        sti
        hlt
irq_ret:
        cli
        movb $0xff, %al
        outb %al, $0x21
        movw $O(m_irq), %si
        call puts
        movw O(irq_ip), %ax
        call hex4
        call space
        movw O(irq_cs), %ax
        call hex4
        call space
        movw O(irq_flags), %ax
        andw $0x0200, %ax               /* IF as it was (the arithmetic flags: HLT's) */
        call hex4
        movw $O(m_isr), %si
        call puts
        movb $0x0b, %al                 /* OCW3: read the ISR: the handler's EOI */
        outb %al, $0x20
        inb $0x20, %al
        xorb %ah, %ah
        call hex4
        call newline

        /* 4: unreal mode */
        movl %cr0, %eax
        orb $1, %al
        movl %eax, %cr0
        movw $0x10, %bx                 /* a protected-mode load: base 0, 4 GiB */
        movw %bx, %fs
        andb $0xfe, %al
        movl %eax, %cr0                 /* no far jump: CS stays 0800h */
        movl $0x200000, %esi
        movl $0x12345678, %fs:(%esi)
        movl %fs:(%esi), %ebx
        movw %fs, %cx
        xorw %ax, %ax
        movw %ax, %fs                   /* base 0, the 4 GiB limit stays */
        movl $0x9abcdef0, %fs:4(%esi)
        movl %fs:4(%esi), %edx
        movw $O(m_unreal), %si
        call puts
        movl %ebx, %eax
        call hex32
        movw $O(m_fs), %si
        call puts
        movw %cx, %ax
        call hex4
        call space
        movl %edx, %eax
        call hex32
        call newline
        movw $O(after_gp2), O(resume)
        movl $0x10000, %esi
gp2_at: movb (%esi), %al                /* DS: 64 KiB */
after_gp2:

        /* 5: to 32-bit protected mode */
        movl %cr0, %eax
        orb $1, %al
        movl %eax, %cr0
        ljmpl $0x08, $back32

again16:
        movw $0x20, %ax
        movw %ax, %ds
        movw %ax, %ss
        movl %cr0, %eax
        andb $0xfe, %al
        movl %eax, %cr0
        ljmp $0x0800, $O(again)
again:  movw $0x0800, %ax
        movw %ax, %ds
        xorw %ax, %ax
        movw %ax, %ss
        movw $0x7000, %sp
        movw $O(m_again), %si
        call puts
        pushw $0x0002
        popfw
        int $0x30
        movw %ax, %cx
        movw $O(m_int30_after), %si
        call puts
        movw %cx, %ax
        call hex4
        call newline
        movl %cr0, %eax
        orb $1, %al
        movl %eax, %cr0
        ljmpl $0x08, $done32

/* -- handlers ------------------------------------------------------------------------ */
h_int30:
        pushw %bp
        movw %sp, %bp
        pushfw
        movw $O(m_int30), %si
        call puts
        movw 2(%bp), %ax                /* IP */
        call hex4
        call space
        movw 4(%bp), %ax                /* CS */
        call hex4
        call space
        movw 6(%bp), %ax                /* FLAGS */
        call hex4
        movw $O(m_inside), %si
        call puts
        popw %ax                        /* FLAGS in the handler */
        call hex4
        call newline
        popw %bp
        movw $0x600d, %ax
        iret

/* an exception: "N at +IP" (the IP it saved, relative to the instruction's label),
 * then on at the resume address */
h_de:   pushw $O(de_at)
        pushw $0
        jmp exc
h_ud:   pushw $O(ud_at)
        pushw $6
        jmp exc
h_gp:   pushw $O(gp_at)
        cmpw $O(after_gp), O(resume)
        je 7f
        popw %ax
        pushw $O(gp2_at)
7:      pushw $13
exc:    movw %sp, %bp
        movw $O(m_exc), %si
        call puts
        movw (%bp), %ax                 /* vector */
        call hex4
        movw $O(m_at), %si
        call puts
        movw 4(%bp), %ax                /* the saved IP */
        subw 2(%bp), %ax                /* ... less the faulting instruction's */
        call hex4
        movw $O(m_cs), %si
        call puts
        movw 6(%bp), %ax
        call hex4
        call newline
        addw $4, %sp                    /* IP, CS, FLAGS: on at the resume address */
        movw %sp, %bp
        movw O(resume), %ax
        movw %ax, (%bp)
        iret

h_irq0: pushw %bp
        movw %sp, %bp
        pushw %ax
        movw 2(%bp), %ax
        movw %ax, O(irq_ip)
        movw 4(%bp), %ax
        movw %ax, O(irq_cs)
        movw 6(%bp), %ax
        movw %ax, O(irq_flags)
        movb $0x20, %al                 /* EOI */
        outb %al, $0x20
        popw %ax
        popw %bp
        iret

spurious:
        iret

/* -- output ---------------------------------------------------------------------------- */
#include "com16.h"
space:  movb $' ', %al
        jmp putc
hex32:  pushl %eax
        shrl $16, %eax
        call hex4
        popl %eax
        jmp hex4

ivt_ptr:
        .word 0x3ff
        .long IVT
resume: .word 0
irq_ip: .word 0
irq_cs: .word 0
irq_flags:
        .word 0
m_hello:
        .asciz "realmon: real mode, cs 0800, ivt at a000\n"
m_int30:
        .asciz "1: int 30 frame ip cs flags "
m_inside:
        .asciz ", flags inside "
m_int30_after:
        .asciz "1: after iret ax "
m_flags:
        .asciz " flags "
m_popf: .asciz "1: popf 3002 then sti, cli: "
m_exc:  .asciz "2: vector "
m_at:   .asciz " at +"
m_cs:   .asciz " cs "
m_irq:  .asciz "3: irq 0 at vector 50: ip cs if "
m_isr:  .asciz ", isr after eoi "
m_unreal:
        .asciz "4: unreal fs:200000 "
m_fs:   .asciz ", fs shows "
m_again:
        .asciz "5: real mode again\n"
low_end:
