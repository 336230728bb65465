/* frt: one stub per vector (xv6's vectors.pl, as assembler macros) and the
 * common entry, alltraps: a struct trapframe, the kernel's data segments
 * (frt_kdata), trap(tf), then back through frt_trapret. */
        .altmacro
        .macro VEC n
        .text
vector\n:
        .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17)
        .else
        pushl $0
        .endif
        pushl $\n
        jmp alltraps
        .section .rodata
        .long vector\n
        .endm

        .section .rodata
        .align 4
        .globl frt_vectors
frt_vectors:
        .set i, 0
        .rept 256
        VEC %i
        .set i, i+1
        .endr

        .text
alltraps:
        pushl %ds
        pushl %es
        pushl %fs
        pushl %gs
        pushal
        movw frt_kdata, %ax
        movw %ax, %ds
        movw %ax, %es
        pushl %esp
        call trap
        addl $4, %esp
        .globl frt_trapret
frt_trapret:
        popal
        popl %gs
        popl %fs
        popl %es
        popl %ds
        addl $8, %esp
        iret
