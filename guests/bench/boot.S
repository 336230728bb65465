/* Standalone bench image entry: Multiboot header, clear .bss, a stack,
 * bench_main(magic, mbi).  Segments stay as the loader set them (flat),
 * paging and interrupts stay off. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .globl _start
_start:
    cld
    movl %eax, %ebp
    movl %ebx, %esi
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl
    movl $stack_top, %esp
    pushl %esi
    pushl %ebp
    xorl %ebp, %ebp
    call bench_main
1:  hlt
    jmp 1b

    .section .bss
    .align 16
    .skip 16384
stack_top:
