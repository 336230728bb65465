/ tssk: the assembly half of a kernel in the old style -- every task a TSS, the double
/ fault a task of its own (entered through a task gate, with a stack that cannot be the
/ one that overflowed), as 1990s protected-mode kernels and Linux's doublefault_32.c do.
#define ASM 1
        .set MBMAGIC, 0x1BADB002

        .section .multiboot, "a"
        .p2align 2
        .long MBMAGIC, 0, -MBMAGIC

        .text
        .globl start
start:  cli
        lea boot_stack_end, %esp
        call main
        jmp .

/ exceptions and INT 0x51 through interrupt gates: the frame for trap() is
/ regs (pushal) | vector | error code | eip cs eflags [esp ss]
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
        isr 6
        isr 10, 1
        isr 11, 1
        isr 12, 1
        isr 13, 1
        isr 14, 1
        isr 0x51
isr_common:
        pushal
        pushl %esp
        call trap
        addl $4, %esp
        popal
        addl $8, %esp
        iret

/ the double-fault task: its TSS's EIP is here each time it is entered (after
/ the IRET that ended the last one); the CPU pushed the error code on its stack
        .globl df_task
df_task:
        popl df_err
        call double_fault
        iret
        jmp df_task

/ task C, entered through the task gate at IDT vector 0x50
        .globl c_task
c_task: call in_task_c
        iret
        jmp c_task
