/* User entry: the kernel starts a program with esp -> [prog][args]. */
    .section .text.start, "ax"
    .globl _start
_start:
    xorl %ebp, %ebp
    call umain                       /* umain(prog, args) */
    pushl %eax
    call exit
1:  jmp 1b
