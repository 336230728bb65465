/* jos: entry as JOS's kern/entry.S: turn paging on with the static
 * entry_pgdir (entrypgdir.c), then jump up to KERNBASE. */
#define KERNBASE 0xF0000000
#define RELOC(x) ((x) - KERNBASE)

        .text
        .align 4
        .long 0x1BADB002, 0, -(0x1BADB002)
        .globl _start
_start = RELOC(entry)
        .globl entry
entry:
        movw $0x1234, 0x472                     /* JOS's warm-boot flag, as it does */
        /* entry_pgtable: JOS spells out its 1024 entries in entrypgdir.c */
        movl $(RELOC(entry_pgtable)), %edi
        movl $0x003, %eax
1:      movl %eax, (%edi)
        addl $4, %edi
        addl $0x1000, %eax
        cmpl $0x400003, %eax
        jne 1b
        movl $(RELOC(entry_pgdir)), %eax
        movl %eax, %cr3
        movl %cr0, %eax
        orl $(0x80000001 | 0x10000), %eax       /* PG, PE, WP */
        movl %eax, %cr0
        mov $relocated, %eax
        jmp *%eax
relocated:
        movl $0x0, %ebp
        movl $(bootstacktop), %esp
        call i386_init
spin:   jmp spin

/* JOS's trapentry.S: TRAPHANDLER(_NOEC) and _alltraps, with its Trapframe */
#define TRAPHANDLER(name, num) .globl name; .type name, @function; .align 2; name: pushl $(num); jmp _alltraps
#define TRAPHANDLER_NOEC(name, num) .globl name; .type name, @function; .align 2; name: pushl $0; pushl $(num); jmp _alltraps
TRAPHANDLER_NOEC(th_divide, 0)
TRAPHANDLER_NOEC(th_brkpt, 3)
TRAPHANDLER(th_gpflt, 13)
TRAPHANDLER(th_pgflt, 14)
TRAPHANDLER_NOEC(th_syscall, 48)
_alltraps:
        pushl %ds
        pushl %es
        pushal
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        pushl %esp
        call trap
        /* trap() does not return */

        .globl env_pop_tf
env_pop_tf:
        movl 4(%esp), %esp
        popal
        popl %es
        popl %ds
        addl $0x8, %esp
        iret

        .data
        .p2align 12
        .globl bootstack
bootstack:
        .space 32768
        .globl bootstacktop
bootstacktop:
