/* The tested instructions: NAME runs the set-up, NAME_i is the instruction itself
 * (the saved EIP of a fault must be NAME_i: a fault, or a fault delivering INT n). */
        .text
        .globl t_ds_np, t_ds_np_i
t_ds_np:
        movw $0x58, %ax
t_ds_np_i:
        movw %ax, %ds
        ret
        .globl t_ss_np, t_ss_np_i
t_ss_np:
        movw $0x60, %ax
t_ss_np_i:
        movw %ax, %ss
        ret
        .globl t_ss_null, t_ss_null_i
t_ss_null:
        xorl %eax, %eax
t_ss_null_i:
        movw %ax, %ss
        ret
        .globl t_ss_dpl3, t_ss_dpl3_i
t_ss_dpl3:
        movw $0x33, %ax
t_ss_dpl3_i:
        movw %ax, %ss
        ret
        .globl t_ds_exec, t_ds_exec_i
t_ds_exec:
        movw $0x68, %ax
t_ds_exec_i:
        movw %ax, %ds
        ret
        .globl t_ds_limit, t_ds_limit_i
t_ds_limit:
        movw $0x3f8, %ax
t_ds_limit_i:
        movw %ax, %ds
        ret
        .globl t_fs_rpl, t_fs_rpl_i
t_fs_rpl:
        movw $0x23, %ax
t_fs_rpl_i:
        movw %ax, %fs
        ret
        .globl t_gs_tss, t_gs_tss_i
t_gs_tss:
        movw $0x38, %ax
t_gs_tss_i:
        movw %ax, %gs
        ret
        .globl t_pop_es, t_pop_es_i
t_pop_es:
        pushl $0x58
t_pop_es_i:
        popl %es
        ret
        .globl t_lds, t_lds_i
t_lds:
        pushl $0x58; pushl $0
t_lds_i:
        lds (%esp), %eax
        ret
        .globl t_lss, t_lss_i
t_lss:
        pushl $0x60; pushl $0
t_lss_i:
        lss (%esp), %eax
        ret
        .globl t_ljmp, t_ljmp_i
t_ljmp:
t_ljmp_i:
        ljmp $0x70, $0
        ret
        .globl t_lcall, t_lcall_i
t_lcall:
t_lcall_i:
        lcall $0x70, $0
        ret
        .globl t_lret, t_lret_i
t_lret:
        pushl $0x70; pushl $0
t_lret_i:
        lret
        ret
        .globl t_int_np, t_int_np_i
t_int_np:
t_int_np_i:
        int $0x41
        ret
        .globl t_int_type, t_int_type_i
t_int_type:
t_int_type_i:
        int $0x43
        ret
        .globl t_int_limit, t_int_limit_i
t_int_limit:
t_int_limit_i:
        int $0xf0
        ret
        .globl t_int_cs, t_int_cs_i
t_int_cs:
t_int_cs_i:
        int $0x44
        ret
        .globl t_int_csnp, t_int_csnp_i
t_int_csnp:
t_int_csnp_i:
        int $0x45
        ret
        .globl t_int3_np, t_int3_np_i
t_int3_np:
t_int3_np_i:
        int3
        ret
        .globl t_nm_ds, t_nm_ds_i
t_nm_ds:
        movw $0x48, %ax
t_nm_ds_i:
        movw %ax, %ds
        ret
