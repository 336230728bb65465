/* strpg: the assembly half -- Multiboot header, exception stubs, and the handler of
 * INT 0x40 that runs on a 16-bit stack (no C there: only SP is the stack pointer) */
        .set MBMAGIC, 0x1BADB002
        .section .multiboot, "a"
        .p2align 2
        .long MBMAGIC, 0, -MBMAGIC

        .text
        .globl start
start:  cli
        lea stack_top, %esp
        call main
        jmp .

        .macro isr num, err=0
        .globl isr\num
isr\num:
        .if \err == 0
        pushl $0
        .endif
        pushl $\num
        jmp isr_common
        .endm
        isr 0
        isr 1
        isr 3
        isr 4
        isr 5
        isr 6
        isr 8, 1
        isr 10, 1
        isr 11, 1
        isr 12, 1
        isr 13, 1
        isr 14, 1
isr_common:
        pushal
        pushl %esp
        call trap
        addl $4, %esp
        popal
        addl $8, %esp
        iret

/* INT 0x40 on the 16-bit stack: record ESP as the gate left it, and the frame's words */
        .globl isr_small
isr_small:
        movl %esp, small_esp
        movzwl %sp, %eax
        movl (%eax), %ebx
        movl %ebx, small_frame
        movl 4(%eax), %ebx
        movl %ebx, small_frame+4
        movl 8(%eax), %ebx
        movl %ebx, small_frame+8
        iret
