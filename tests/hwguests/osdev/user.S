/* osdev: entering user mode and coming back (enter_user/leave_user), and the code the
 * programs run at ring 3 or as patched/copied pages, each in a page of its own. */
        .text
/* u32 enter_user(u32 eip, u32 cs, u32 esp, u32 ss, u32 eflags): IRET to ring 3; returns
 * the value leave_user() is called with, on the kernel stack it was called on */
        .globl enter_user, leave_user
enter_user:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, kernel_sp
        pushl 32(%esp)                  /* ss */
        pushl 32(%esp)                  /* esp */
        pushl 44(%esp)                  /* eflags */
        pushl 36(%esp)                  /* cs */
        pushl 36(%esp)                  /* eip */
        iret
leave_user:
        movl 4(%esp), %eax
        movl kernel_sp, %esp
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

        .data
        .globl kernel_sp
kernel_sp: .long 0

/* code that is copied, patched or mapped elsewhere: position-independent, one page */
        .section .text.pages, "ax"
        .balign 4096
        .globl probe_page, probe_imm
probe_page:
        movl $0x1111, %eax              /* the copy's immediate is patched */
probe_imm = . - 4
        ret
        .balign 4096

/* u32 resume_frame(struct regs *f): as enter_user, into the state a frame boot.S's
 * common stub would pop (a task's first run) */
        .text
        .globl resume_frame
resume_frame:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl %esp, kernel_sp
        movl 20(%esp), %esp
        popl %es
        popl %ds
        popal
        addl $8, %esp
        iret
