/* Entry of the firmware hand-off guest: record every register exactly as the
 * loader left it, before any instruction changes one (no runtime, no stack of
 * our own until everything is saved). */
        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0x00000003, -(0x1badb002 + 0x00000003)

        .text
        .globl _start
_start:
        movl %eax, entry_regs+0
        movl %ebx, entry_regs+4
        movl %ecx, entry_regs+8
        movl %edx, entry_regs+12
        movl %esi, entry_regs+16
        movl %edi, entry_regs+20
        movl %ebp, entry_regs+24
        movl %esp, entry_regs+28
        pushfl                          /* uses 4 bytes of the loader's stack */
        popl entry_regs+32
        movw %cs, entry_regs+36
        movw %ds, entry_regs+40
        movw %es, entry_regs+44
        movw %fs, entry_regs+48
        movw %gs, entry_regs+52
        movw %ss, entry_regs+56
        movl %cr0, %eax
        movl %eax, entry_regs+60
        movl %cr2, %eax
        movl %eax, entry_regs+64
        movl %cr3, %eax
        movl %eax, entry_regs+68
        movl %cr4, %eax
        movl %eax, entry_regs+72
        movl %dr6, %eax
        movl %eax, entry_regs+76
        movl %dr7, %eax
        movl %eax, entry_regs+80
        sgdt entry_tables+0
        sidt entry_tables+8
        sldt entry_tables+16
        str entry_tables+20
        movl $stack_top, %esp
        call main
        movw $0xf4, %dx
        outb %al, %dx
1:      hlt
        jmp 1b

/* One stub per vector, 16 bytes apart: record the vector, return (no EOI). */
        .globl vector_stubs
        .align 16
vector_stubs:
        .set i, 0
        .rept 256
        .align 16
        movl $i, last_vector
        iret
        .set i, i+1
        .endr

        .bss
        .align 16
        .globl entry_regs, entry_tables
entry_regs:
        .space 84
entry_tables:
        .space 24
        .space 8192
stack_top:
