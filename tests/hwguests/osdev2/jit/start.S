# jitk: boot and trap entry of a toy JIT kernel (written in the manner of a JIT
# hobbyist's kernel: one assembly file for everything the C cannot say).
# Loaded at 1 MiB by a Multiboot loader, entered in protected mode, paging off.

        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .text
        .globl _start
_start:
        cli
        cmpl $0x2badb002, %eax
        jne 9f
        movl $stack_top, %esp
        call jit_main
9:      movw $0xf4, %dx
        movb $0x7e, %al
        outb %al, %dx
        hlt
        jmp 9b

# Exceptions 0..31 and the kernel's own gate 0x30: an error code (0 where the CPU
# pushes none), the vector, then PUSHA, so the C side sees
# struct tf { edi..eax (pusha), vec, err, eip, cs, eflags, [esp, ss] }.
        .macro ent n
        .globl ent\n
ent\n:
        .if (\n == 8) || (\n >= 10 && \n <= 14) || (\n == 17)
        pushl $\n
        .else
        pushl $0
        pushl $\n
        .endif
        jmp alltraps
        .endm

        .altmacro
        .set k, 0
        .rept 32
        ent %k
        .set k, k + 1
        .endr
        ent 48

alltraps:
        pushal
        movl %esp, %eax
        pushl %eax
        cld
        call on_trap
        addl $4, %esp
        popal
        addl $8, %esp
        iretl

# the table jit.c builds its IDT from
        .section .rodata
        .globl ent_table
        .macro entref n
        .long ent\n
        .endm
ent_table:
        .set k, 0
        .rept 32
        entref %k
        .set k, k + 1
        .endr
        .long ent48

        .bss
        .align 16
        .space 16384
        .globl stack_top
stack_top:

# enter_user(eip, esp): run ring-3 code until its kernel calls leave_user(); the
# callee-saved registers and the kernel stack pointer are kept in user_ctx
        .text
        .globl enter_user, leave_user
enter_user:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, user_ctx
        movl 20(%esp), %ecx             # eip
        movl 24(%esp), %edx             # esp
        movw $0x23, %ax
        movw %ax, %ds
        movw %ax, %es
        pushl $0x23
        pushl %edx
        pushl $0x002                    # IF clear: the PIC is masked anyway
        pushl $0x1b
        pushl %ecx
        iretl
leave_user:
        movl 4(%esp), %eax
        movl user_ctx, %esp
        movw $0x10, %dx
        movw %dx, %ds
        movw %dx, %es
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

        .data
user_ctx: .long 0
