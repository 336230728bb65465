/* CR0.ET (bit 4): on every processor since the Pentium it is reserved and
 * hardwired to 1 (SDM Vol. 3 §2.5: "ET ... In the Pentium 4, Intel Xeon, and P6
 * family processors, this flag is reserved and hardcoded to 1").  It reads 1
 * after the loader's hand-off, after MOV to CR0 with the bit clear, after LMSW
 * (which loads only bits 0-3 and cannot clear PE, SDM Vol. 2 LMSW) and after
 * CLTS, through MOV from CR0 and SMSW alike. */
#include "rt.h"

static u16 smsw_mem(void)
{
    u16 v;
    __asm__ volatile("smsw %0" : "=m"(v));
    return v;
}

static u16 smsw_reg16(void)
{
    u16 v;
    __asm__ volatile("smsw %w0" : "=r"(v));
    return v;
}

static void show(const char *what)
{
    u32 cr0 = read_cr0();
    kprintf("%s: cr0=0x%08x et=%u smsw=0x%04x smsw16=0x%04x\n", what, cr0, (cr0 >> 4) & 1,
            smsw_mem(), smsw_reg16());
}

static void lmsw(u16 v)
{
    __asm__ volatile("lmsw %0" :: "r"(v) : "memory");
}

int main(void)
{
    kprintf("cr0et: start\n");
    show("at entry");
    u32 cr0 = read_cr0();
    write_cr0(cr0 & ~0x10u);
    show("mov cr0 with ET clear");
    write_cr0((cr0 & ~0x10u) | 0xe);            /* MP EM TS */
    show("mov cr0 MP|EM|TS, ET clear");
    __asm__ volatile("clts");
    show("clts");
    lmsw(0x0001);
    show("lmsw 0x0001");
    lmsw(0x000f);
    show("lmsw 0x000f");
    lmsw(0x0000);                               /* cannot clear PE */
    show("lmsw 0x0000");
    lmsw(0xffe0);                               /* only bits 0-3 load */
    show("lmsw 0xffe0");
    write_cr0(0x00000001);
    show("mov cr0 = PE");
    rt_paging_init();
    rt_paging_on(1);
    show("paging on, WP");
    write_cr0(read_cr0() & ~0x10u);
    show("paging on, mov cr0 with ET clear");
    rt_paging_off();
    write_cr0(cr0);
    show("restored");
    kprintf("cr0et: done\n");
    return 0;
}
