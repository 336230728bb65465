/* The code the selfstep guest single-steps.  Every routine is entered with
 * TF clear, sets it with POPF (no trap after the POPF that sets TF: SDM
 * Vol. 3 §17.3.1.4), runs its body, and clears TF again with POPF (a trap
 * after that POPF, which started with TF set).  The #DB handler in
 * selfstep.c records every saved EIP. */
        .text

#define TF_ON   pushfl; orl $0x100, (%esp); popfl
#define TF_OFF  pushfl; andl $~0x100, (%esp); popfl

/* plain instructions, direct and conditional jumps, a loop, call/ret */
        .globl step_flow, step_flow_end
        .align 16
step_flow:
        pushl %ebx
        TF_ON
        nop
        movl $3, %ecx
        xorl %eax, %eax
1:      addl %ecx, %eax                 /* a loop: the back edge is a chained jump */
        decl %ecx
        jnz 1b
        jmp 2f
        ud2
2:      cmpl $6, %eax
        je 3f                           /* taken */
        ud2
3:      cmpl $7, %eax
        je 4f                           /* not taken */
        call step_leaf
        leal step_leaf, %edx
        call *%edx                      /* indirect call */
        movl $5f, %edx
        jmp *%edx                       /* indirect jump */
        ud2
5:      movl $2, %ecx
6:      loop 6b                         /* LOOP taken once, then falls through */
        movl %eax, %ebx
        TF_OFF
step_flow_end:
        movl %ebx, %eax
        popl %ebx
        ret
4:      ud2

step_leaf:
        incl %eax
        ret

/* instructions a monitor emulates, and PUSHF/POPF with TF visible */
        .globl step_system, step_system_end, step_pushed
        .align 16
step_system:
        pushl %ebx
        TF_ON
        pushfl                          /* TF shows set in the image */
        popl %ebx
        movl %ebx, step_pushed
        pushl %ebx
        popfl                           /* POPF keeping TF: a trap after it */
        movl %cr0, %eax
        movl %eax, %cr0
        movl %cr3, %eax
        movl $0x3ff, %edx               /* COM1 scratch register */
        movb $0x5a, %al
        outb %al, %dx
        inb %dx, %al
        movzbl %al, %ebx
        cli
        TF_OFF
step_system_end:
        movl %ebx, %eax
        popl %ebx
        ret

/* INT n while stepping: no trap after the INT, the handler is not
 * stepped (the gate clears TF), the IRET restores TF */
        .globl step_int, step_int_end
        .align 16
step_int:
        TF_ON
        movl $1, %eax
        int $0x81
        addl $1, %eax
        TF_OFF
step_int_end:
        ret

/* REP MOVSB: a trap after every iteration (SDM Vol. 3 §17.3.1.4: a
 * repeated string instruction is single-stepped one iteration at a time) */
        .globl step_rep, step_rep_end
        .align 16
step_rep:
        pushl %esi
        pushl %edi
        movl 12(%esp), %edi
        movl 16(%esp), %esi
        movl $3, %ecx
        cld
        TF_ON
        rep movsb
        movl %ecx, %eax
        TF_OFF
step_rep_end:
        popl %edi
        popl %esi
        ret

        .data
        .globl step_pushed
step_pushed:
        .long 0
