/* lnx: entry as Linux/i386 does it.  Paging is off: every address is the
 * link address minus PAGE_OFFSET.  A page directory of 4 MiB pages maps the
 * first 8 MiB twice (identity, and at PAGE_OFFSET), then C runs high. */
#define PAGE_OFFSET 0xC0000000
#define pa(x) ((x) - PAGE_OFFSET)

        .section .head.text, "ax"
        .align 4
        .long 0x1BADB002, 0x00000003, -(0x1BADB002 + 0x00000003)

        .globl startup_32
startup_32:
        cld
        cli
        movl $pa(boot_stack_top), %esp
        /* zero .bss (the page-directory lives there) */
        movl $pa(__bss_start), %edi
        movl $pa(_end), %ecx
        subl %edi, %ecx
        xorl %eax, %eax
        rep stosb
        movl $pa(initial_pg_dir), %edi
        movl $0x00000083, 0(%edi)             /* 0-4 MiB: P W PS */
        movl $0x00400083, 4(%edi)             /* 4-8 MiB */
        movl $0x00000083, (0x300 * 4)(%edi)   /* PAGE_OFFSET */
        movl $0x00400083, (0x301 * 4)(%edi)
        movl %cr4, %eax
        orl $0x10, %eax                        /* PSE */
        movl %eax, %cr4
        movl %edi, %cr3
        movl $0x80000011, %eax                 /* PG ET PE: WP clear, as at reset */
        movl %eax, %cr0
        movl $1f, %eax
        jmp *%eax
1:      movl $boot_stack_top, %esp
        call start_kernel
2:      hlt
        jmp 2b

        .section .bss
        .align 4096
        .globl initial_pg_dir
initial_pg_dir:
        .space 4096
        .globl __bss_start
__bss_start:
boot_stack:
        .space 8192
boot_stack_top:
