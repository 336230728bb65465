/* xv6: entry.S as xv6 writes it (a 4 MiB boot page mapping both 0 and KERNBASE,
 * CR4.PSE, then the jump up), swtch.S (callee-saved registers, then the stack),
 * and a SYSENTER entry in the style of Linux's sysenter_entry. */
#define KERNBASE 0x80000000
#define V2P(x) ((x) - KERNBASE)

        .text
        .align 4
        .long 0x1BADB002, 0, -(0x1BADB002)
        .globl _start
_start = V2P(entry)
        .globl entry
entry:
        movl %cr4, %eax
        orl $0x10, %eax                         /* PSE */
        movl %eax, %cr4
        movl $(V2P(entrypgdir)), %eax
        movl %eax, %cr3
        movl %cr0, %eax
        orl $0x80010000, %eax                   /* PG, WP */
        movl %eax, %cr0
        movl $(stack + 4096), %esp
        mov $main, %eax
        jmp *%eax

/* void swtch(struct context **old, struct context *new) */
        .globl swtch
swtch:
        movl 4(%esp), %eax
        movl 8(%esp), %edx
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, (%eax)
        movl %edx, %esp
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

/* SYSENTER from ring 3: ECX = the user's ESP, EDX = where it resumes, EAX = the call.
 * IF is clear on entry (SDM Vol. 2 SYSENTER); STI's shadow covers SYSEXIT. */
        .globl sysenter_entry
sysenter_entry:
        pushl %ecx
        pushl %edx
        pushl %ebx
        movw $0x10, %bx
        movw %bx, %ds
        movw %bx, %es
        pushl %eax
        call sys_fast
        addl $4, %esp
        movw $0x23, %bx
        movw %bx, %ds
        movw %bx, %es
        popl %ebx
        popl %edx
        popl %ecx
        sti
        sysexit

        .globl user_enter
user_enter:                                     /* a new process's first return */
        jmp frt_trapret
