/* Entry of the ELF-loading guests (elfload.c says what each variant checks).
 * Records EAX, EBX, EDI and the address it runs at, then calls main. */
#define MB_MAGIC 0x1badb002
#ifdef AOUT
#define MB_FLAGS 0x00010003             /* the a.out kludge: load addresses below */
#else
#define MB_FLAGS 0x00000003
#endif
#ifdef HIGHER_HALF
#define KERNEL_BASE 0xc0000000
#else
#define KERNEL_BASE 0
#endif
#define PHYS(x) ((x) - KERNEL_BASE)

        .section .text.multiboot, "ax"
        .align 4
mb_header:
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
#ifdef AOUT
        .long mb_header                 /* header_addr */
        .long __load_start              /* load_addr */
        .long __load_end                /* load_end_addr */
        .long __bss_end                 /* bss_end_addr */
        .long _start                    /* entry_addr */
#endif

        .globl _start
_start:
        movl %eax, PHYS(boot_eax)
        movl %ebx, PHYS(boot_ebx)
        movl %edi, PHYS(boot_edi)
        call 1f
1:      popl %eax
        subl $(1b - _start), %eax
        movl %eax, PHYS(boot_eip)       /* where _start really runs */
#ifdef HIGHER_HALF
        /* paging: 4 MiB pages mapping 0-4 MiB at 0 and at KERNEL_BASE */
        movl $0x83, PHYS(boot_pd)
        movl $0x83, PHYS(boot_pd) + (KERNEL_BASE >> 22) * 4
        movl %cr4, %eax
        orl $0x10, %eax                 /* PSE */
        movl %eax, %cr4
        movl $PHYS(boot_pd), %eax
        movl %eax, %cr3
        movl %cr0, %eax
        orl $0x80000000, %eax
        movl %eax, %cr0
        movl $high, %eax
        jmp *%eax
high:
#endif
        movl $stack_top, %esp
        call main
        movw $0xf4, %dx
        outb %al, %dx
2:      hlt
        jmp 2b

        .data
        .globl boot_eax, boot_ebx, boot_edi, boot_eip
boot_eax: .long 0
boot_ebx: .long 0
boot_edi: .long 0
boot_eip: .long 0

        .bss
        .align 4096
#ifdef HIGHER_HALF
boot_pd:
        .space 4096
#endif
        .space 8192
stack_top:
