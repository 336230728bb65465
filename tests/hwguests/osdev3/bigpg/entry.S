/* bigpg: the assembly half -- Multiboot header and exception stubs */
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
        isr 6
        isr 8, 1
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
