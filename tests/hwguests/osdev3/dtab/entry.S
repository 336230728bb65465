/* dtab: the assembly half -- Multiboot header, exception stubs, the double-fault task */
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
        isr 3
        isr 6
        isr 10, 1
        isr 11, 1
        isr 12, 1
        isr 13, 1
        isr 14, 1
        isr 0x20
        isr 0x21
        isr 0x30
        isr 0x31
isr_common:
        pushal
        pushl %esp
        call trap
        addl $4, %esp
        popal
        addl $8, %esp
        iret

/* the double-fault task: entered through the task gate at vector 8, its error code on
 * its own stack; after its IRET (NT: back to the faulting task) it starts here again */
        .globl df_task
df_task:
        popl df_err
        call double_fault
        iret
        jmp df_task
