/* vmx: the host's entry stub and the guest's code snippets (see vmx.c). */
        .text
        .globl vmx_run, g_regs, g_val, g_val2, g_val3, g_buf

/* u32 vmx_run(u32 resume): VMLAUNCH (0) or VMRESUME (1) with the guest's general
 * registers from g_regs.  Returns 0 after a VM exit (the guest's registers are back
 * in g_regs), or 1 | EFLAGS << 8 when the instruction failed. */
vmx_run:
        pushl %ebp
        pushl %ebx
        pushl %esi
        pushl %edi
        movl 20(%esp), %eax
        movl %eax, resume_flag
        movl $0x6c14, %edx              /* HOST_RSP */
        vmwrite %esp, %edx
        movl $0x6c16, %edx              /* HOST_RIP */
        movl $vmx_exit_point, %ecx
        vmwrite %ecx, %edx
        movl g_regs+4, %ecx
        movl g_regs+8, %edx
        movl g_regs+12, %ebx
        movl g_regs+20, %ebp
        movl g_regs+24, %esi
        movl g_regs+28, %edi
        movl g_regs, %eax
        cmpl $0, resume_flag
        jne 1f
        vmlaunch
        jmp 2f
1:      vmresume
2:      pushfl
        popl %eax
        shll $8, %eax
        orl $1, %eax
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        ret

vmx_exit_point:
        movl %eax, g_regs
        movl %ecx, g_regs+4
        movl %edx, g_regs+8
        movl %ebx, g_regs+12
        movl %ebp, g_regs+20
        movl %esi, g_regs+24
        movl %edi, g_regs+28
        popl %edi
        popl %esi
        popl %ebx
        popl %ebp
        xorl %eax, %eax
        ret

/* The guest: each snippet starts at its label (the host sets GUEST_RIP). */
        .globl g_cpuid, g_hlt, g_outimm, g_indx, g_outpass, g_insb, g_cr3r, g_cr3w_target
        .globl g_cr3w_other, g_crread, g_cr0w, g_clts, g_lmsw, g_cr4w, g_dr7, g_rdmsr_exit
        .globl g_msr_pass, g_wrmsr_exit, g_rdtsc, g_invlpg, g_vmcall, g_ud2, g_int3, g_pf
        .globl g_nop, g_window, g_spin, g_vmxon, gh_soft, gh_err, gh_ext, g_rdtsc_exit
g_cpuid:        xorl %eax, %eax
                cpuid
g_hlt:          hlt
g_outimm:       movb $0x5a, %al
                outb %al, $0x80
g_indx:         movw $0x80, %dx
                inw %dx, %ax
g_outpass:      movb $1, %al
                outb %al, $0x81             /* bitmap bit clear: no exit */
                vmcall
g_insb:         cld
                movl $g_buf, %edi
                movl $4, %ecx
                movw $0x80, %dx
                rep insb
g_cr3r:         movl %cr3, %eax
g_cr3w_target:  movl %cr3, %ebx             /* (CR3-store exiting is off here) */
                movl %ebx, %cr3             /* a CR3-target value: no exit */
                vmcall
g_cr3w_other:   movl $0x5000, %esi
                movl %esi, %cr3
g_crread:       movl %cr0, %eax
                movl %eax, g_val
                smsw %ebx
                movl %ebx, g_val2
                movl %cr4, %ecx
                movl %ecx, g_val3
                vmcall
g_cr0w:         movl %cr0, %edx
                xorl $0x8, %edx             /* TS: owned by the host */
                movl %edx, %cr0
g_clts:         clts
g_lmsw:         movl $3, %eax
                lmsw %ax
g_cr4w:         movl %cr4, %eax             /* the shadow: VMXE reads 0 */
                movl %eax, %cr4             /* equal to the shadow in the owned bits: no exit */
                movl %cr4, %ecx
                movl %ecx, g_val
                vmcall
g_dr7:          movl %dr7, %eax
g_rdmsr_exit:   movl $0x10, %ecx
                rdmsr
g_msr_pass:     movl $0x174, %ecx
                rdmsr
                movl $0xc0000080, %ecx
                rdmsr
                vmcall
g_wrmsr_exit:   movl $0x174, %ecx
                xorl %eax, %eax
                xorl %edx, %edx
                wrmsr
g_rdtsc:        rdtsc
                movl %edx, g_val
                vmcall
g_rdtsc_exit:   rdtsc
g_invlpg:       invlpg 0x12345678
g_vmcall:       vmcall
g_ud2:          ud2
g_int3:         int3
g_pf:           movl 0x400000, %eax
g_nop:          nop
                vmcall
g_window:       sti
                nop
                nop
                vmcall
g_spin:         jmp g_spin
g_vmxon:        vmxon g_buf
/* guest interrupt handlers (the guest IDT, vmx.c) */
gh_soft:        movl (%esp), %eax           /* the pushed EIP */
                movl %eax, g_val
                vmcall
gh_err:         movl (%esp), %eax           /* the error code */
                movl %eax, g_val
                movl 4(%esp), %eax          /* the pushed EIP */
                movl %eax, g_val2
                vmcall
gh_ext:         movl (%esp), %eax
                movl %eax, g_val
                vmcall
/* task switches (vmx.c t_tasks): each exits before anything of it happens */
                .globl g_lcall_tss, g_ljmp_tss, g_int_task, g_lcall_busy, g_iret
g_lcall_tss:    lcall $0x48, $0
g_ljmp_tss:     ljmp $0x48, $0
g_int_task:     int $0x43
g_lcall_busy:   lcall $0x28, $0
g_iret:         iret
/* NMIs (vmx.c t_nmi): an NMI IPI to this processor (ICR2 = 0, ICR = NMI, assert), then
 * a spin the NMI interrupts; the guest's NMI handler exits before and after its IRET;
 * an IRET that ends virtual-NMI blocking */
                .globl g_nmi_self, g_nmi_after, gh_nmi, g_nmi_iret
g_nmi_self:     movl $0, 0xfee00310
                movl $0x4400, 0xfee00300
1:              jmp 1b
g_nmi_after:    vmcall
gh_nmi:         incl g_val
                vmcall
                iret
g_nmi_iret:     pushfl
                pushl %cs
                pushl $1f
                iret
1:              vmcall
/* EPT (vmx.c t_ept): a read, then a write, of the test page; a 2-MiB page; INVEPT */
                .globl g_ept_rw, g_ept_read, g_ept_big, g_invept
g_ept_rw:       movl ept_target, %eax
                movl %eax, g_val
                movl $0x5a5a, ept_target
                vmcall
g_ept_read:     movl ept_target, %eax
                movl %eax, g_val
                vmcall
g_ept_big:      movl 0x800000, %eax
                movl %eax, g_val
                vmcall
g_invept:       invept ept_desc, %eax

        .data
resume_flag:    .long 0
g_regs:         .fill 8, 4, 0
g_val:          .long 0
g_val2:         .long 0
g_val3:         .long 0
g_buf:          .fill 16, 1, 0
