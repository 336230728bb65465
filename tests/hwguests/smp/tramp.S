/* The application processors' start: a SIPI with vector 0x08 starts them in real mode
 * at 0800:0000, where main() copied ap_tramp_start..ap_tramp_end.  They load the
 * runtime's GDT, enter protected mode, take a stack each and call ap_main(index). */
        .section .rodata
        .globl ap_tramp_start, ap_tramp_end
        .code16
ap_tramp_start:
        cli
        xorw %ax, %ax
        movw %ax, %ds
        lgdtl 0x8000 + (tramp_gdtr - ap_tramp_start)
        movl %cr0, %eax
        orl $1, %eax
        movl %eax, %cr0
        ljmpl $0x08, $ap_entry32
        .p2align 3
tramp_gdtr:
        .word 0x7ff
        .long 0x200000                  /* GDT_ADDR of the runtime */
ap_tramp_end:

        .text
        .code32
ap_entry32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw %ax, %fs
        movw %ax, %gs
        movl $1, %eax
        lock xaddl %eax, ap_next        /* this AP's index, in the order they arrive */
        leal 1(%eax), %ecx
        shll $12, %ecx
        addl $ap_stacks, %ecx
        movl %ecx, %esp
        lidt idt_desc
        pushl %eax
        call ap_main
1:      cli
        hlt
        jmp 1b

        .data
        .p2align 2
idt_desc:
        .word 0x7ff
        .long 0x200800                  /* IDT_ADDR of the runtime */
        .globl ap_next
ap_next:
        .long 0
        .bss
        .p2align 12
        .globl ap_stacks
ap_stacks:
        .space 4096 * 8
