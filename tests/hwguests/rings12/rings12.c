/* rings12: a kernel that runs a driver at ring 1 and one at ring 2, each with its own
 * code and stack segments (an IRET to the outer ring, then int 0xf0 back), the way OS/2
 * ran its I/O privilege level code.  At ring 1 and 2 the processor refuses what is
 * privileged (SDM Vol. 3 §5.9: MOV from CR0 at CPL > 0 is #GP(0)), a data segment of a
 * more privileged ring (§5.6: DPL < CPL is #GP(selector)) and port I/O above IOPL
 * (Vol. 1 §19.5.1).  QEMU and the bare PC print these lines; the monitors, which give a
 * guest rings 0 and 3 only, stop with one line naming the ring (ring=N on the command
 * line runs one ring only).  Expected lines are in tests/test_monitor_guests.py. */
#include "rt.h"

#define SEL_CODE2 0x42          /* ring-2 code (descriptor 8, RPL 2) */
#define SEL_DATA2 0x4a          /* ring-2 data (descriptor 9, RPL 2) */
#define STACK2_TOP 0x0029f000u

static volatile u32 drv_cs, drv_ss;

static volatile u32 exc[3][3];

static void record(int i)
{
    exc[i][0] = rt_exc.count ? rt_exc.vector : 0xff;
    exc[i][1] = rt_exc.err;
    exc[i][2] = rt_exc.cs;
    rt_expect_reset();
}

static void driver(void)
{
    drv_cs = read_cs();
    drv_ss = read_ss();
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: mov %%cr0, %%eax\n1:" ::: "eax", "memory");
    record(0);
    __asm__ volatile(ARM(1f, 2f) "2: mov %0, %%es\n1:" :: "r"(SEL_DATA0) : "memory");
    record(1);
    __asm__ volatile(ARM(1f, 2f) "2: inb $0x80, %%al\n1:" ::: "eax", "memory");
    record(2);
}

static void run(int ring, u16 cs, u16 ss, u32 esp)
{
    rt_run_ring(driver, cs, ss, esp, 0x2);
    kprintf("ring %d: cs=%04x ss=%04x\n", ring, drv_cs, drv_ss);
    kprintf("ring %d mov from cr0: #%u err=0x%x frame cs=%04x\n", ring, exc[0][0], exc[0][1], exc[0][2]);
    kprintf("ring %d load of a DPL-0 data segment: #%u err=0x%x\n", ring, exc[1][0], exc[1][1]);
    kprintf("ring %d in from a port (IOPL 0): #%u err=0x%x\n", ring, exc[2][0], exc[2][1]);
}

int main(void)
{
    u32 only = 0;
    rt_arg("ring", &only);
    kprintf("rings12: start\n");
    gdt_set(8, 0, 0xfffff, ACC_CODE | ACC_DPL(2), FLG_4K32);
    gdt_set(9, 0, 0xfffff, ACC_DATA | ACC_DPL(2), FLG_4K32);
    if (only != 2)
        run(1, SEL_CODE1, SEL_DATA1, STACK1_TOP);
    if (only != 1)
        run(2, SEL_CODE2, SEL_DATA2, STACK2_TOP);
    kprintf("rings12: done\n");
    return 0;
}
