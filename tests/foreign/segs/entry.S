/* segs: Multiboot entry at 2 MiB; a stack, then C. */
        .section .mb, "a"
        .align 4
        .long 0x1BADB002, 0, -0x1BADB002
        .text
        .globl entry
entry:
        movl $stack_top, %esp
        call kmain
1:      hlt
        jmp 1b

/* probe(fn): run fn (which may fault); the trap handler resumes at probe_resume
 * with the state of before the call (callee-saved registers and ESP restored) */
        .globl probe, probe_resume
probe:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, probe_esp
        call *20(%esp)
probe_resume:
        movl $0x20, %eax                /* the kernel's data segment again */
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movl probe_esp, %esp
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

/* read fs:0 after loading FS with 0x40; read it without reloading */
        .globl t_fs_read, t_fs_again
t_fs_read:
        movw $0x40, %ax
        movw %ax, %fs
t_fs_again:
        movl %fs:0, %eax
        ret

        .section .bss
        .align 16
        .globl probe_esp
probe_esp:  .long 0
        .space 16384
stack_top:
