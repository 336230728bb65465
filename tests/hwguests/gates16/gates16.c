/* gates16: 16-bit interrupt and trap gates, 16-bit call gates, and the 16-bit IRET and
 * RETF that return through them -- from ring 0 to ring 0 and from ring 3 to ring 0 --
 * written to print the same lines on QEMU, natively and under the monitors (--mode
 * trapemu and bt).  The rules (SDM Vol. 3 §6.12.1, Figure 6-4; Vol. 2 INT n, CALL, IRET,
 * RET): a 16-bit gate pushes FLAGS, CS and IP (and SS and SP from an outer ring, and a
 * word error code) as words; a 16-bit call gate copies its parameters as words and
 * pushes CS and IP as words; IRET and RETF with a 16-bit operand pop the same.  The
 * routines (gates16_asm.S) run in code segments based so that their offsets fit in IP.
 * Expected lines are in tests/test_monitor_guests.py. */
#include "rt.h"

#define KCODE_B  0x40           /* ring-0 code, base g16_base */
#define UCODE_B  0x4b           /* ring-3 code, base g16_base */
#define USTK_TOP 0xe000u        /* a ring-3 stack below 64 KiB: SP is all a 16-bit frame keeps */

extern char g16_start[], g16_end[], k_test[], u_test[], h16[], h16np[], h16u[], far16[], gate16u[];
extern char r_int50[], r_int51[], np_at[], r_call16[], r_int52[], r_gate[];
extern volatile u32 k_esp_before, k_esp_after, k_esp_before2, k_esp_after2, k_esp_before3,
    k_esp_after3, k_cf_after, k_np_resumed, h_esp, h_ip, h_cs, h_flags, h1_esp, h1_ip, h1_cs,
    h1_flags, np_err, np_ip, np_cs, u_h_esp, u_ip, u_cs, u_flags, u_sp, u_ss, c_esp, c_ip,
    c_cs, g_esp, g_words[6], u_esp_before, u_esp_after, u_esp_after2;

static u32 base;
static u32 off(const char *p) { return (u32)p - base; }

int main(void)
{
    kprintf("gates16: start\n");
    base = (u32)g16_start & ~0xffffu;
    CHECK((u32)g16_end - base <= 0xffff);
    gdt_set(8, base, 0xfffff, ACC_CODE, FLG_4K32);
    gdt_set(9, base, 0xfffff, ACC_CODE | ACC_DPL(3), FLG_4K32);
    gdt_set_gate(10, KCODE_B, off(far16), 0x84, 0);           /* 16-bit call gate, DPL 0 */
    gdt_set_gate(11, KCODE_B, off(gate16u), 0xe4, 2);         /* DPL 3, 2 parameters */
    gdt_set(12, 0, 0xfffff, 0x13, FLG_4K32);                  /* data, not present */
    idt_set(0x50, off(h16), KCODE_B, 0x86);                   /* 16-bit interrupt gate */
    idt_set(0x51, off(h16), KCODE_B, 0x87);                   /* 16-bit trap gate */
    idt_set(0x52, off(h16u), KCODE_B, 0xe6);                  /* 16-bit interrupt gate, DPL 3 */
    idt_set(11, off(h16np), KCODE_B, 0x86);

    struct { u32 off; u16 sel; } __attribute__((packed)) far = { off(k_test), KCODE_B };
    cli();
    __asm__ volatile("lcall *%0" :: "m"(far) : "memory", "eax", "ecx", "edx", "cc");

    kprintf("int through a 16-bit interrupt gate: ip=+%u cs=%04x flags=%04x frame=%u\n",
            h1_ip - off(r_int50), h1_cs, h1_flags, k_esp_before - h1_esp);
    kprintf("its 16-bit iret: cf=%u esp restored=%u\n", k_cf_after, k_esp_after == k_esp_before);
    kprintf("int through a 16-bit trap gate: ip=+%u cs=%04x flags=%04x frame=%u restored=%u\n",
            h_ip - off(r_int51), h_cs, h_flags, k_esp_before2 - h_esp, k_esp_after2 == k_esp_before2);
    kprintf("#np through a 16-bit gate: err=%04x ip=+%u cs=%04x resumed=%u\n",
            np_err, np_ip - off(np_at), np_cs, k_np_resumed);
    kprintf("far call through a 16-bit call gate: ip=+%u cs=%04x frame=%u restored=%u\n",
            c_ip - off(r_call16), c_cs, k_esp_before3 - c_esp, k_esp_after3 == k_esp_before3);

    rt_run_ring((void (*)(void))off(u_test), UCODE_B, SEL_DATA3, USTK_TOP, 0x2);
    kprintf("from ring 3, a 16-bit interrupt gate: ip=+%u cs=%04x flags=%04x sp=esp:%u ss=%04x "
            "frame=%u restored=%u\n", u_ip - off(r_int52), u_cs, u_flags, u_sp == u_esp_before,
            u_ss, TSS->esp0 - u_h_esp, u_esp_after == u_esp_before);
    kprintf("from ring 3, a 16-bit call gate: ip=+%u cs=%04x params=%04x %04x sp=esp-4:%u "
            "ss=%04x frame=%u restored=%u\n", g_words[0] - off(r_gate), g_words[1], g_words[2],
            g_words[3], g_words[4] == u_esp_after - 4, g_words[5], TSS->esp0 - g_esp,
            u_esp_after2 == u_esp_after);
    kprintf("gates16: done\n");
    return 0;
}
