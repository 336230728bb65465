/* The event callback.  The hypervisor enters it as an interrupt would enter
 * a handler: a bounce frame [eip, cs, eflags (, esp, ss from ring 3)] on
 * the kernel stack, events masked.  It takes the lowest pending, unmasked
 * event-channel port, clears it, and goes to the kernel's own handler for
 * the bound IRQ's vector with that frame untouched: the kernel's iret (the
 * iret hypercall) ends the event, and the hypervisor then delivers the next.
 * With nothing pending it returns at once with the iret hypercall. */
#include "pv/xen_abi.h"

#define GATE_PRESENT 0x8000

    .text
    .globl pv_upcall
pv_upcall:
    pushl %eax
    pushl %ebx
    pushl %ecx
    pushl %edx
    /* Cleared before looking, so an event that arrives meanwhile sets it
     * again and is not lost. */
    movb $0, PV_UPCALL_PENDING_VA
rescan:
    xorl %ebx, %ebx                         /* word of evtchn_pending */
1:  movl PV_EVTCHN_MASK_VA(,%ebx,4), %ecx
    notl %ecx
    andl PV_EVTCHN_PENDING_VA(,%ebx,4), %ecx
    jnz found
    incl %ebx
    cmpl $32, %ebx
    jb 1b
    movl $0, PV_PENDING_SEL_VA              /* nothing unmasked is pending */
    popl %edx
    popl %ecx
    popl %ebx
    popl %eax
    pushl %eax
    movl $__HYPERVISOR_iret, %eax
    int $0x82

found:
    bsfl %ecx, %ecx                         /* the lowest port in the word */
    lock btrl %ecx, PV_EVTCHN_PENDING_VA(,%ebx,4)
    cmpl $0, PV_EVTCHN_PENDING_VA(,%ebx,4)
    jne 2f
    lock btrl %ebx, PV_PENDING_SEL_VA       /* the word is empty */
2:  cmpl $0, PV_PENDING_SEL_VA
    je 3f
    movb $1, PV_UPCALL_PENDING_VA           /* more to come after this one */
3:  shll $5, %ebx
    addl %ecx, %ebx                         /* the port */
    movzbl pv_port_irq(%ebx), %eax
    subl $1, %eax                           /* its ISA IRQ */
    jb rescan                               /* not bound to one: dropped */
    movzbl pv_irq_vector(%eax), %edx
    testl %edx, %edx
    jnz 4f
    /* Which vector does the kernel's (virtual) PIC give this IRQ?  Asked
     * once: the kernel programs its PIC before it takes interrupts. */
    pushl %eax
    movl %eax, %ecx
    movl $RV_IRQ_VECTOR, %ebx
    movl $__HYPERVISOR_rv_machine_op, %eax
    int $0x82
    movl %eax, %edx
    popl %eax
    cmpl $255, %edx
    ja rescan                               /* no vector (-errno): dropped */
    movb %dl, pv_irq_vector(%eax)
4:  /* The kernel's gate for that vector, from its IDT. */
    leal 7(,%edx,8), %ecx
    cmpl pv_idt_limit, %ecx
    ja rescan
    movl pv_idt_base, %eax
    testl %eax, %eax
    jz rescan
    movl 4(%eax,%edx,8), %ebx               /* offset 31:16, P, DPL, type */
    testl $GATE_PRESENT, %ebx
    jz rescan
    movzwl (%eax,%edx,8), %ecx              /* offset 15:0 */
    andl $0xFFFF0000, %ebx
    orl %ecx, %ebx
    movl %ebx, pv_upcall_target
    popl %edx
    popl %ecx
    popl %ebx
    popl %eax
    /* Events stay masked (as an interrupt gate clears IF); the kernel's
     * iret restores the mask from the frame's IF. */
    jmp *pv_upcall_target

/* The failsafe callback: the hypervisor could not return to the guest with
 * the segments it asked for.  Nothing sensible is left to do. */
    .globl pv_failsafe
pv_failsafe:
    pushl $failsafe_msg
    call pv_panic

    .section .rodata
failsafe_msg:
    .asciz "pv: failsafe callback (bad segment on return to the guest)\n"
