/*
 * sysk head: multiboot entry, the trap vectors, the SYSENTER entry point.
 * (the style of a 2010s hobby kernel: SYSENTER for system calls, INT 0x80 kept as
 * the slow path, lazy FPU switching, PAE paging.)
 */
        .section .multiboot, "a"
        .align 4
multiboot_header:
        .long 0x1BADB002
        .long 0x00000000
        .long -(0x1BADB002 + 0x00000000)

        .section .text
        .global _entry
_entry:
        cli
        mov $kstack_top, %esp
        call kernel_main
1:      hlt
        jmp 1b

/* struct trapframe: edi esi ebp esp0 ebx edx ecx eax | trapno err | eip cs eflags [esp ss] */
.macro TRAP_NOERR n
        .global trap\n
trap\n:
        push $0
        push $\n
        jmp trap_common
.endm
.macro TRAP_ERR n
        .global trap\n
trap\n:
        push $\n
        jmp trap_common
.endm
        TRAP_NOERR 1
        TRAP_NOERR 3
        TRAP_NOERR 6
        TRAP_NOERR 7
        TRAP_ERR 13
        TRAP_ERR 14
        TRAP_NOERR 16
        TRAP_NOERR 19
        TRAP_NOERR 128

trap_common:
        pusha
        push %esp
        call trap_dispatch
        add $4, %esp
        popa
        add $8, %esp
        iret

/*
 * SYSENTER lands here on the kernel stack of IA32_SYSENTER_ESP.  Our ABI: EAX the
 * call, EBX its argument, EDX the user's resume EIP, ECX the user's ESP (SYSEXIT wants
 * them there again); struct sysargs { eax, ebx, edx, ecx } for sys_dispatch.
 */
        .global sysenter_entry
sysenter_entry:
        push %ecx
        push %edx
        push %ebx
        push %eax
        push %esp
        call sys_dispatch
        add $4, %esp
        pop %eax
        pop %ebx
        pop %edx
        pop %ecx
        sysexit

/* the first way into ring 3: IRET to (eip, esp) */
        .global enter_ring3
enter_ring3:
        mov 4(%esp), %eax
        mov 8(%esp), %ecx
        mov $0x23, %dx                  /* (a DPL-0 DS would be nulled by the IRET, and */
        mov %dx, %ds                    /*  the kernel entered with it would #GP: QEMU */
        mov %dx, %es                    /*  does not check a null DS, the SDM does) */
        push $0x23
        push %ecx
        push $0x002
        push $0x1b
        push %eax
        iret

        .section .bss
        .align 4096
        .space 8192
        .global kstack_top
kstack_top:
