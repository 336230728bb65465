/* osdev: the entry and interrupt stubs of three small kernels written the way a kernel
 * developer elsewhere writes one (no shared runtime: their own Multiboot header, GDT,
 * IDT, TSS, page tables and console; kern.c, and one program each, PROG_*).  Loaded at
 * 1 MiB by qemu -kernel or ringvisor's loader; entered in protected mode, paging off. */
        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0, -0x1badb002

        .text
        .globl _start
_start:
        cli
        movl $boot_stack_top, %esp
        pushl $0
        popfl
        call kmain
1:      hlt
        jmp 1b

/* one stub per vector: push a zero error code where the CPU pushes none, the vector,
 * then the registers; trap() gets the frame and may change it (or switch stacks by
 * returning another frame pointer) */
#define HAS_ERR(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17)
        .macro stub v
        .if HAS_ERR(\v)
vec\v:  pushl $\v
        .else
vec\v:  pushl $0
        pushl $\v
        .endif
        jmp common
        .endm

        .altmacro
        .set i, 0
        .rept 256
        stub %i
        .set i, i + 1
        .endr

common: pushal
        pushl %ds
        pushl %es
        movl $0x10, %eax
        movl %eax, %ds
        movl %eax, %es
        pushl %esp
        call trap
        movl %eax, %esp                 /* trap() returns the frame to resume */
        popl %es
        popl %ds
        popal
        addl $8, %esp
        iret

        .section .rodata
        .globl vectors
        .align 4
        .macro vref v
        .long vec\v
        .endm
vectors:
        .set i, 0
        .rept 256
        vref %i
        .set i, i + 1
        .endr

        .bss
        .align 4096
        .space 8192
boot_stack_top:
