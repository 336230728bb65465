/* Multiboot entry.  Runs at physical addresses with paging off: zeroes
 * .bss, maps the first 8 MiB both at 0 and at KBASE, turns paging on and
 * jumps to kmain(magic, mbi_phys) in the higher half. */
#include "arch.h"

#define KBASE 0xC0000000
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003          /* page-aligned modules, memory info */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .boot.text, "ax"
    .globl _start
_start:
    cld
    movl %eax, %ebp                 /* Multiboot magic */
    movl %ebx, %esi                 /* Multiboot info (physical) */

    movl $(__bss_start - KBASE), %edi
    movl $(__bss_end - KBASE), %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    /* boot_pt: 2 page tables = 8 MiB, identity frames. */
    movl $(boot_pt - KBASE), %edi
    movl $0x003, %eax               /* present | writable */
    movl $2048, %ecx
1:  stosl
    addl $0x1000, %eax
    decl %ecx
    jnz 1b

    movl $(boot_pd - KBASE), %edx
    movl $(boot_pt - KBASE + 0x003), %eax
    movl %eax, 0(%edx)
    movl %eax, (768 * 4)(%edx)
    addl $0x1000, %eax
    movl %eax, 4(%edx)
    movl %eax, (769 * 4)(%edx)

    ARCH_LOAD_CR3(%edx)
    /* A defined CR0 (Multiboot leaves all but PE/PG undefined): protected
     * mode, ET, write protection honoured in ring 0 (for copy-on-write),
     * caches on, paging. */
    movl $(CR0_PE | CR0_ET | CR0_WP | CR0_PG), %eax
    ARCH_LOAD_CR0(%eax)
    movl $higher_half, %eax
    jmp *%eax

    .text
higher_half:
    movl $boot_stack_top, %esp
    pushl %esi
    pushl %ebp
    xorl %ebp, %ebp
    call kmain
2:  ARCH_CLI
    ARCH_HLT
    jmp 2b

    .section .bss
    .align 4096
    .globl boot_pd
boot_pd:
    .skip 4096
boot_pt:
    .skip 8192
    .globl boot_stack_top
boot_stack:
    .skip 8192
boot_stack_top:
