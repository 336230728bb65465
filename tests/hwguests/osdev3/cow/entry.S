/* cowk: the assembly half -- Multiboot header, trap entry and return, swtch, and the
 * user program (position-independent: it runs at 0x40000000) */
        .set MBMAGIC, 0x1BADB002
        .section .multiboot, "a"
        .p2align 2
        .long MBMAGIC, 0, -MBMAGIC

        .text
        .globl start
start:  cli
        lea boot_stack_top, %esp
        call main
        jmp .

        .macro isr num, err=0
        .globl isr\num
isr\num:
        .if \err == 0
        pushl $0
        .endif
        pushl $\num
        jmp alltraps
        .endm
        isr 0
        isr 6
        isr 13, 1
        isr 14, 1
        isr 0x80
alltraps:
        pushal
        pushl %esp
        call trap
        addl $4, %esp
        .globl trapret
trapret:
        popal
        addl $8, %esp
        iret

/* swtch(&old->esp, new->esp): callee-saved registers on the old stack, then the new */
        .globl swtch
swtch:  movl 4(%esp), %eax
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

        .section .user, "ax"
        .globl user_start
user_start:
        movl $0x40001000, %esi
        movl $1, %eax
        movl (%esi), %ebx
        int $0x80                       /* print the counter */
        movl $2, %eax
        int $0x80                       /* fork */
        testl %eax, %eax
        jnz 1f
        addl $100, (%esi)               /* the child writes: a copy */
        movl $1, %eax
        movl (%esi), %ebx
        int $0x80
        movl $3, %eax
        int $0x80                       /* yield */
        pushl $0x77                     /* its stack, shared until now */
        popl %ebx
        movl $1, %eax
        movl (%esi), %ebx
        int $0x80
        movl $4, %eax
        int $0x80                       /* exit */
1:      movl %eax, %edi
        movl $3, %eax
        int $0x80                       /* yield */
        addl $1, (%esi)                 /* the parent writes: the frame is its own now */
        movl $1, %eax
        movl (%esi), %ebx
        int $0x80
        movl $1, %eax
        movl %edi, %ebx
        int $0x80
        movl $4, %eax
        int $0x80
