/* The entry points of smpvcpu's second vCPU and both vCPUs' event callbacks.
 * The hypervisor enters a callback like an interrupt gate (frame eip, cs,
 * eflags; events masked) and it leaves with Xen's iret hypercall, whose frame
 * is eax, eip, cs, eflags: the mask follows IF.  Each vCPU registers its own
 * callback (vcpu_guest_context.event_callback_eip for vCPU 1), which tells
 * the C handler whose vcpu_info to look at. */
        .text
        .globl upcall0, upcall1, ap_entry
upcall0:
        pushal
        cld
        pushl $0
        jmp 1f
upcall1:
        pushal
        cld
        pushl $1
1:      call on_upcall
        addl $4, %esp
        popal
        pushl %eax
        movl $23, %eax                  /* __HYPERVISOR_iret */
        int $0x82

/* vCPU 1 starts here (VCPUOP_initialise: esp is the top of its own stack) */
ap_entry:
        call ap_main
2:      jmp 2b
