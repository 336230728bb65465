/* segbase: a kernel that runs code in a segment based at 0x80000 (linked at one
 * address, run at another), and enters and leaves its kernel with SYSENTER/SYSEXIT.
 * Expected values (tests/test_monitor_guests.py) follow from the SDM: Vol. 3 3.4
 * (linear = base + offset, modulo 2^32), Vol. 2 CALL/RET (the offset is pushed),
 * SYSENTER/SYSEXIT (the fixed selectors after IA32_SYSENTER_CS, EIP/ESP from the
 * MSRs, and from EDX/ECX on the way back). */
#include "rt.h"

extern u32 based_sum(u32 n);
extern void u_sysenter_test(void), sysenter_entry(void);
extern u32 se_eax_back, se_user_cs, se_user_ss, se_user_esp, se_kernel_esp;
extern u32 se_kernel_cs, se_kernel_ss;
extern void gate_kernel_target(void), gate_user_target(void), gate_jmp_target(void);
extern void u_gate_call(void), u_gate_call_denied(void), u_gate_call_absent(void);
extern u32 g_pushed_cs, g_same_esp, g_user_cs, g_p0, g_p1, g_user_esp, g_user_ss, g_ret_eip;
extern u32 g_kernel_esp, g_kernel_ss, g_esp_before, g_esp_after, g_ret_expected, g_jmp_esp;

static void call_gates(void)
{
    gdt_set_gate(14, SEL_CODE0, (u32)gate_kernel_target, 0x8c, 0);      /* 0x70, DPL 0 */
    gdt_set_gate(15, SEL_CODE0, (u32)gate_user_target, 0xec, 2);        /* 0x78, DPL 3 */
    gdt_set_gate(16, SEL_CODE0, (u32)gate_kernel_target, 0x6c, 0);      /* 0x80, P=0 */
    gdt_set_gate(17, SEL_CODE0, (u32)gate_jmp_target, 0x8c, 0);         /* 0x88 */
    u32 esp;
    __asm__ volatile("movl %%esp, %0\n\tlcall $0x70, $0" : "=r"(esp) :: "eax", "memory");
    kprintf("kernel call gate: pushed cs=0x%x, esp below by %u\n", g_pushed_cs & 0xfffc,
            esp - g_same_esp);
    __asm__ volatile("movl %%esp, %0\n\tcall 1f\n\tjmp 2f\n1:\tljmp $0x88, $0\n2:"
                     : "=r"(esp) :: "eax", "memory");
    kprintf("jmp through a gate: esp below by %u\n", esp - g_jmp_esp);

    rt_run_user(u_gate_call);
    kprintf("user call gate: cs=0x%x params 0x%x 0x%x user ss=0x%x esp ok %d, ret ok %d, "
            "kernel ss=0x%x esp=0x%x, back: esp up by %u\n", g_user_cs & 0xffff, g_p0, g_p1,
            g_user_ss & 0xffff, g_user_esp == g_esp_before, g_ret_eip == g_ret_expected,
            g_kernel_ss & 0xffff, g_kernel_esp, g_esp_after - g_esp_before);
    rt_expect_reset();
    rt_run_user(u_gate_call_denied);
    report_exc("ring 3 call through a DPL-0 gate");
    rt_expect_reset();
    rt_run_user(u_gate_call_absent);
    report_exc("ring 3 call through a gate not present");
}

static void wrmsr(u32 msr, u32 lo)
{
    __asm__ volatile("wrmsr" :: "c"(msr), "a"(lo), "d"(0));
}

int main(void)
{
    kprintf("segbase: start\n");
    gdt_set(12, 0x00080000u, 0xfffff, ACC_CODE | ACC_DPL(0), FLG_4K32);   /* 0x60 */
    gdt_set(13, 0x00080000u, 0xfffff, ACC_DATA | ACC_DPL(0), FLG_4K32);   /* 0x68 */
    for (u32 n = 0; n < 3; n++)
        kprintf("based_sum(%u) = %u\n", n * 5, based_sum(n * 5));

    /* SYSENTER_CS 0x08: kernel CS 0x08, SS 0x10; SYSEXIT: CS 0x1b, SS 0x23 */
    wrmsr(0x174, SEL_CODE0);
    wrmsr(0x175, 0x0027f000);
    wrmsr(0x176, (u32)sysenter_entry);
    rt_run_ring(u_sysenter_test, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x2);
    kprintf("sysenter: kernel esp=0x%x cs=0x%x ss=0x%x; sysexit: eax=0x%x cs=0x%x ss=0x%x "
            "esp=0x%x\n", se_kernel_esp, se_kernel_cs & 0xffff, se_kernel_ss & 0xffff,
            se_eax_back, se_user_cs & 0xffff, se_user_ss & 0xffff, se_user_esp);
    /* with IA32_SYSENTER_CS 0, SYSENTER is #GP(0) (and from the kernel too) */
    wrmsr(0x174, 0);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: sysenter\n1:" ::: "memory");
    report_exc("sysenter with IA32_SYSENTER_CS 0");
    call_gates();
    kprintf("segbase: done\n");
    return 0;
}
