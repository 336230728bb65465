/* hvmreal: a protected-mode kernel that leaves protected mode, runs real-mode code
 * and comes back -- the round trip a VMM can run in VMX non-root only with
 * "unrestricted guest" (SDM Vol. 3C §26.8).  Its own GDT (selectors in an order of
 * its own, a 4-GiB 16-bit data segment for unreal mode), its own interrupt vector
 * table at 0x5000 (LIDT in real mode), its 16-bit code copied to 0x9000.  In real
 * mode: MOV from CR0 and SMSW, INT n, #DE and IRQ 0 through its IVT, port I/O (the
 * PIC's IMR, REP OUTSB to COM1), a MOV to CR0 that sets and clears CD, unreal mode
 * (a trip to protected mode for a 4-GiB FS limit, then 32-bit offsets from real
 * mode), and the far jump back to 32-bit protected mode.  Prints to COM1, leaves
 * through port 0xf4 (expected lines: tests/test_hvmreal.py). */
        .set LOW, 0x9000                /* where the 16-bit code runs */
        .set IVT, 0x5000                /* the guest's own vector table */
        .set MAGIC_AT, 0x300000         /* above 1 MiB: reached in unreal mode */

        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0, -0x1badb002

        .text
        .globl _start
        .code32
_start:
        cli
        movl $0x600dcafe, MAGIC_AT
        movl $0, MAGIC_AT + 4
        movl $low_start, %esi
        movl $LOW, %edi
        movl $(low_end - low_start), %ecx
        cld
        rep movsb
        lgdt gdt_ptr
        ljmp $0x30, $(pm16 - low_start)

/* back from real mode: 32-bit protected mode again, flat */
back32: movw $0x18, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movl $0x7000, %esp
        movl $m_back, %esi
        call puts32
        movl %cr0, %eax
        call hex8_32
        movl $m_unreal_w, %esi
        call puts32
        movl MAGIC_AT + 4, %eax
        call hex8_32
        movb $'\n', %al
        call putc32
        movl $m_done, %esi
        call puts32
        movb $0, %al
        outb %al, $0xf4
1:      hlt
        jmp 1b

puts32: lodsb
        testb %al, %al
        jz 1f
        call putc32
        jmp puts32
1:      ret

hex8_32:
        movl $8, %ecx
1:      roll $4, %eax
        pushl %eax
        andb $0x0f, %al
        addb $'0', %al
        cmpb $'9', %al
        jbe 2f
        addb $('a' - '0' - 10), %al
2:      call putc32
        popl %eax
        loop 1b
        ret

putc32: pushl %edx
        pushl %eax
        movw $0x3fd, %dx
1:      inb %dx, %al
        testb $0x20, %al
        jz 1b
        popl %eax
        movw $0x3f8, %dx
        outb %al, %dx
        popl %edx
        ret

        .data
        .align 8
gdt:    .quad 0
        .quad 0x008f92000000ffff        /* 0x08 16-bit data, 4 GiB (unreal mode) */
        .quad 0x00cf9a000000ffff        /* 0x10 flat 32-bit code */
        .quad 0x00cf92000000ffff        /* 0x18 flat 32-bit data */
        .quad 0x000092000000ffff        /* 0x20 16-bit data, base 0, 64 KiB */
        .quad 0                         /* 0x28 unused */
        .quad 0x00009a009000ffff        /* 0x30 16-bit code, base LOW */
gdt_ptr:
        .word . - gdt - 1
        .long gdt
m_back:     .asciz "protected mode again: cr0 "
m_unreal_w: .asciz ", unreal-mode store "
m_done:     .asciz "hvmreal: done\n"

        .text
        .code16
low_start:
pm16:   movw $0x20, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        movl %cr0, %eax
        andl $~1, %eax
        movl %eax, %cr0                 /* real-address mode */
        ljmp $(LOW >> 4), $(real - low_start)

real:   movw $(LOW >> 4), %ax
        movw %ax, %ds
        xorw %ax, %ax
        movw %ax, %es                   /* ES: absolute addresses below 64 KiB */
        movw %ax, %ss
        movw $0x7000, %sp
        lidtl %ds:(ivt_ptr - low_start)
        movw $(de - low_start), %es:(IVT + 0 * 4)
        movw $(LOW >> 4), %es:(IVT + 0 * 4 + 2)
        movw $(irq0 - low_start), %es:(IVT + 8 * 4)
        movw $(LOW >> 4), %es:(IVT + 8 * 4 + 2)
        movw $(int31 - low_start), %es:(IVT + 0x31 * 4)
        movw $(LOW >> 4), %es:(IVT + 0x31 * 4 + 2)

        /* where we are: CS, SS, and CR0 as MOV and SMSW read it (PE and PG clear) */
        movw $(m_real - low_start), %si
        call puts
        movw %cs, %ax
        call hex4
        movw $(m_cr0 - low_start), %si
        call puts
        movl %cr0, %eax
        call hex4
        movw $(m_smsw - low_start), %si
        call puts
        smsw %ax
        call hex4
        call newline

        /* INT 31h through our IVT: FLAGS, CS, IP pushed; the handler doubles AX */
        movw $0x1234, %ax
        int $0x31
after31:
        movw %ax, %di
        movw $(m_int31 - low_start), %si
        call puts
        movw %ds:(frame_ip - low_start), %ax
        subw $(after31 - low_start), %ax
        call hex4
        movw $(m_cs - low_start), %si
        call puts
        movw %ds:(frame_cs - low_start), %ax
        call hex4
        movw $(m_ax - low_start), %si
        call puts
        movw %di, %ax
        call hex4
        call newline

        /* #DE: the saved IP is the DIV's own (a fault); the handler steps over it */
        xorb %bl, %bl
        movw $7, %ax
div_at: divb %bl
        movw $(m_de - low_start), %si
        call puts
        movw %ds:(frame_ip - low_start), %ax
        subw $(div_at - low_start), %ax
        call hex4
        call newline

        /* port I/O: the master PIC's IMR written and read back, then REP OUTSB */
        inb $0x21, %al
        movb %al, %bh
        movb $0xa5, %al
        outb %al, $0x21
        inb $0x21, %al
        movb %al, %bl
        movb %bh, %al
        outb %al, $0x21
        movw $(m_imr - low_start), %si
        call puts
        movb %bl, %al
        call hex2
        movw $(m_outs - low_start), %si
        call puts
        movw $(m_hello - low_start), %si
        movw $(m_hello_end - m_hello), %cx
        movw $0x3f8, %dx
        cld
        rep outsb
        movw %si, %di
        movw $(m_si - low_start), %si
        call puts
        movw %di, %ax
        subw $(m_hello - low_start), %ax
        call hex4
        movw $(m_cx - low_start), %si
        call puts
        movw %cx, %ax
        call hex4
        call newline

        /* IRQ 0 (vector 8: the PIC base the firmware leaves) through our IVT */
        sti
        hlt
        cli
        movw $(m_irq - low_start), %si
        call puts
        movw %ds:(ticks - low_start), %ax
        testw %ax, %ax
        setnz %al
        xorb %ah, %ah
        call hex2
        call newline

        /* MOV to CR0 setting CD, then clearing it (kvm-unit-tests' test_smsw) */
        movl %cr0, %ebx
        movl %ebx, %ecx
        orl $0x40000000, %ebx
        movl %ebx, %cr0
        smswl %eax
        movl %cr0, %edx
        movl %ecx, %cr0
        movw $(m_cd - low_start), %si
        call puts
        shrl $16, %edx
        movw %dx, %ax
        call hex4
        movw $(m_cd2 - low_start), %si
        call puts
        movl %cr0, %eax
        shrl $16, %eax
        call hex4
        call newline

        /* unreal mode: PE set for a 4-GiB FS limit, cleared again; FS keeps it */
        movl %cr0, %eax
        orb $1, %al
        movl %eax, %cr0
        movw $0x08, %bx
        movw %bx, %fs
        andb $~1, %al
        movl %eax, %cr0
        ljmp $(LOW >> 4), $(unreal - low_start)
unreal: xorw %ax, %ax
        movw %ax, %fs                   /* base 0; the limit stays */
        addr32 movl %fs:MAGIC_AT, %eax
        addr32 movl $0x12345678, %fs:(MAGIC_AT + 4)
#ifdef BEYOND_RAM
        /* beyond the guest's 32 MiB (tests/test_hvmreal.py: under hvm, an EPT violation
         * there stops the VM; it read the monitor's memory with paging off) */
        addr32 movl %fs:0x02100000, %eax
#endif
        movl %eax, %edi
        movw $(m_unreal - low_start), %si
        call puts
        movl %edi, %eax
        shrl $16, %eax
        call hex4
        movl %edi, %eax
        call hex4
        call newline

        /* back: PE set, a far jump to 32-bit code */
        movl %cr0, %eax
        orb $1, %al
        movl %eax, %cr0
        ljmpl $0x10, $back32

int31:  pushw %bp
        movw %sp, %bp
        movw 2(%bp), %bx
        movw %bx, %ds:(frame_ip - low_start)
        movw 4(%bp), %bx
        movw %bx, %ds:(frame_cs - low_start)
        addw %ax, %ax
        popw %bp
        iret

de:     pushw %bp
        movw %sp, %bp
        movw 2(%bp), %bx
        movw %bx, %ds:(frame_ip - low_start)
        addw $2, 2(%bp)                 /* past the two-byte DIV */
        popw %bp
        iret

irq0:   incw %cs:(ticks - low_start)
        pushw %ax
        movb $0x20, %al                 /* EOI */
        outb %al, $0x20
        popw %ax
        iret

#include "com16.h"

ivt_ptr:  .word 0x3ff
          .long IVT
frame_ip: .word 0
frame_cs: .word 0
ticks:    .word 0
m_real:   .asciz "real mode: cs "
m_cr0:    .asciz " cr0 "
m_smsw:   .asciz " smsw "
m_int31:  .asciz "int 31h: ip +"
m_cs:     .asciz " cs "
m_ax:     .asciz " ax 1234 -> "
m_de:     .asciz "#DE: ip +"
m_imr:    .asciz "imr a5 -> "
m_outs:   .asciz ", rep outsb: "
m_hello:  .ascii "[hello]"
m_hello_end:
m_si:     .asciz " si +"
m_cx:     .asciz " cx "
m_irq:    .asciz "irq 0 through the ivt: "
m_cd:     .asciz "cr0.cd set: cr0 high "
m_cd2:    .asciz ", cleared: "
m_unreal: .asciz "unreal mode: fs:300000 = "
low_end:
