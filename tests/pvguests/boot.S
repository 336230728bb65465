/* A para-virtual test guest: Multiboot header and entry.  Under
 * `--mode paravirt` it starts at ring 1 with paging off, esi = start_info
 * and esp on the hypervisor's boot stack page (docs/paravirt.md). */
        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0, -0x1badb002

        .section .bss
        .align 16
stack:  .space 16384
stack_top:

        .text
        .globl _start
_start:
        movl $stack_top, %esp
        pushl %esi                      /* start_info */
        call main
1:      jmp 1b
