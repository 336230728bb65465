/* The event callback: the hypervisor enters here like an interrupt gate
 * (frame eip, cs, eflags; events masked).  It leaves with Xen's iret
 * hypercall, whose frame is eax, eip, cs, eflags: the mask follows IF. */
        .text
        .globl upcall_entry
upcall_entry:
        pushal
        cld
        call on_upcall
        popal
        pushl %eax
        movl $23, %eax                  /* __HYPERVISOR_iret */
        int $0x82
