/* Landing pads for the faults the remap guest expects: rt_resume points
 * here, with the stack as the faulting transfer left it. */
        .text
/* a CALL pushed its return address before the fetch at its target
 * faulted: return that address to the C caller */
        .globl resume_pop
resume_pop:
        popl %eax
        ret
/* a JMP or RET faulted at its target: the C caller's return address is on
 * top of the stack */
        .globl resume_ret
resume_ret:
        movl $0xdead, %eax
        ret
