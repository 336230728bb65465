/* Multiboot (v1) entry, interrupt stubs and ring switching for the
 * hardware conformance guests. */
#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0x00000000

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .section .bss
        .align 16
boot_stack:
        .space 16384
boot_stack_top:

        .text
        .globl _start
_start:
        cli
        movl $boot_stack_top, %esp
        pushl $2
        popfl                           /* IF=0 DF=0 IOPL=0 */
        cmpl $0x2badb002, %eax
        jne 1f
        movl %ebx, rt_mbi               /* the Multiboot information (rt_arg reads it) */
        call rt_init
        call main
        pushl %eax
        call rt_exit
1:      movw $0xf4, %dx                 /* not loaded by a Multiboot loader */
        movb $0x7e, %al
        outb %al, %dx
2:      hlt
        jmp 2b

/* rt_load_segments: reload CS with 0x08 and the data segments with 0x10. */
        .globl rt_load_segments
rt_load_segments:
        ljmp $0x08, $1f
1:      movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        ret

/* Interrupt stubs: 256 entries, 16 bytes apart, starting at rt_stubs.
 * Vectors 8, 10-14 and 17 get their error code from the CPU; the others
 * push a 0 so that every frame has the same layout. */
        .altmacro
        .macro STUB n
        .align 16
        .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17)
        .else
        pushl $0
        .endif
        pushl $\n
        jmp isr_common
        .endm

        .align 16
        .globl rt_stubs
rt_stubs:
        .set i, 0
        .rept 256
        STUB %i
        .set i, i+1
        .endr

isr_common:
        pushal
        pushl %ds
        pushl %es
        pushl %fs
        pushl %gs
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        cld
        pushl %esp
        call isr_dispatch
        addl $4, %esp
        popl %gs
        popl %fs
        popl %es
        popl %ds
        popal
        addl $8, %esp
        iret

/* void rt_run_ring(void (*fn)(void), u32 cs, u32 ss, u32 esp, u32 eflags)
 * DS/ES/FS/GS are loaded with ss, or with rt_ring_segs[0..3] if
 * rt_ring_segs_on is set (it is cleared again). */
        .globl rt_run_ring
rt_run_ring:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, rt_saved_kesp
        movl 20(%esp), %eax             /* fn */
        movl 32(%esp), %ecx             /* esp */
        subl $4, %ecx
        movl $rt_ring_exit_stub, (%ecx) /* return address of fn */
        movl 28(%esp), %edx             /* ss */
        movl %edx, %ebx
        movl %edx, %esi
        movl %edx, %edi
        movl %edx, %ebp
        cmpl $0, rt_ring_segs_on
        je 1f
        movzwl rt_ring_segs, %ebx
        movzwl rt_ring_segs+2, %esi
        movzwl rt_ring_segs+4, %edi
        movzwl rt_ring_segs+6, %ebp
        movl $0, rt_ring_segs_on
1:      pushl %edx                      /* ss */
        pushl %ecx                      /* esp */
        pushl 44(%esp)                  /* eflags (offsets grow by 4 per push) */
        pushl 36(%esp)                  /* cs */
        pushl %eax                      /* eip */
        movw %si, %es
        movw %di, %fs
        movw %bp, %gs
        movw %bx, %ds
        iret

        .globl rt_ring_exit_stub
rt_ring_exit_stub:
        int $0xf0

/* Called (from the int 0xf0 handler) on the ring-0 stack; never returns to
 * its caller: resumes rt_run_ring's caller. */
        .globl rt_ring_return
rt_ring_return:
        movl rt_saved_kesp, %esp
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %fs
        movw %ax, %gs
        movw %ax, %ss
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

        .section .bss
        .align 4
        .globl rt_saved_kesp
rt_saved_kesp:
        .long 0
        .globl rt_ring_segs_on, rt_ring_segs
rt_ring_segs_on:
        .long 0
rt_ring_segs:
        .short 0, 0, 0, 0
