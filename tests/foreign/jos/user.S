/* jos: the user environment, position-independent (copied to UTEXT).
 * System calls: int $0x30, eax = number, edx/ecx/ebx = arguments.
 * 1 cputs(edx = string, ecx = length), 2 puthex(edx), 3 exit */
#define SYS(n) movl $(n), %eax; int $0x30
#define PUTS(label, len) call 1f; .ascii label; 1: popl %edx; movl $(len), %ecx; SYS(1)
        .text
        .globl user_start, user_end
user_start:
        PUTS("user: hello from UTEXT\n", 23)
        /* its own page-table entry, read through UVPT */
        movl 0xEF400000 + (0x00800000 >> 12) * 4, %edx
        andl $0xfff, %edx
        SYS(2)
        /* a page that is not there yet: the kernel maps it on the fault */
        movl $0x00a00010, %ebx
        movl $0xcafe, (%ebx)
        movl (%ebx), %edx
        SYS(2)
        movl 0xEF400000 + (0x00a00000 >> 12) * 4, %edx
        andl $0xfff, %edx
        SYS(2)
        /* a breakpoint, handled by the kernel, which returns here */
        int3
        PUTS("user: back from the breakpoint\n", 31)
        /* a store to its own read-only code page: the kernel reports it */
        movl $1, (0x00800000)
        SYS(3)
user_end:
