/* The real port I/O instructions, for a domain with I/O privilege (Domain 0,
 * or a lone guest under --mode paravirt): they trap at ring 1 and the
 * hypervisor performs them on the machine's devices.  In assembly, so pvcc
 * (which turns port I/O in C into calls of pv_in/pv_out) leaves them alone. */
    .text
    .globl pv_port_in
pv_port_in:                       /* uint32_t pv_port_in(uint32_t size, uint32_t port) */
    movl 8(%esp), %edx
    xorl %eax, %eax
    cmpl $1, 4(%esp)
    jne 1f
    inb %dx, %al
    ret
1:  cmpl $2, 4(%esp)
    jne 2f
    inw %dx, %ax
    ret
2:  inl %dx, %eax
    ret

    .globl pv_port_out
pv_port_out:                      /* void pv_port_out(uint32_t size, uint32_t port, uint32_t v) */
    movl 8(%esp), %edx
    movl 12(%esp), %eax
    cmpl $1, 4(%esp)
    jne 1f
    outb %al, %dx
    ret
1:  cmpl $2, 4(%esp)
    jne 2f
    outw %ax, %dx
    ret
2:  outl %eax, %dx
    ret
