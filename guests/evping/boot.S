/* evping: Multiboot header and entry.  A DomU starts at ring 1 with paging
 * off, esi = start_info, esp on the hypervisor's boot stack page
 * (docs/paravirt.md); evping keeps to its own stack. */
        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0, -0x1badb002

        .section .bss
        .align 16
stack:  .space 8192
stack_top:

        .text
        .globl _start
_start:
        movl $stack_top, %esp
        pushl %esi                      /* start_info */
        call evping_main
1:      jmp 1b

/* The event callback: the hypervisor enters here like an interrupt gate
 * (frame eip, cs, eflags; events masked) and it leaves with Xen's iret
 * hypercall, whose frame is eax, eip, cs, eflags: the mask follows IF. */
        .globl evping_upcall
evping_upcall:
        pushal
        cld
        call evping_on_upcall
        popal
        pushl %eax
        movl $23, %eax                  /* __HYPERVISOR_iret */
        int $0x82
