/* tschalt: the time-stamp counter keeps counting while the processor is halted.
 * SDM Vol. 3 §17.17: the TSC increments at a constant rate (invariant TSC) or with
 * the processor's clock, and HLT (C1) does not stop either; kernels calibrate delays
 * and keep time with it across idle periods.  The guest measures the TSC over the
 * same number of PIT periods twice: once spinning with interrupts enabled, once
 * waiting in HLT between the ticks.  The two counts must agree within a factor of
 * 8 (on QEMU both follow the host's clock; a TSC that stops in HLT gives the second
 * a count thousands of times smaller).  Nothing timing-dependent is printed. */
#include "rt.h"

#define DIVISOR 1193                 /* ~1 kHz: keeps the spinning part short */
#define TICKS 4

static volatile u32 ticks;

static void irq0(struct frame *f)
{
    (void)f;
    ticks++;
    pic_eoi(0);
}

static u64 rdtsc64(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (u64)hi << 32 | lo;
}

/* the TSC over TICKS periods, from one tick's edge to another's */
static u64 over_ticks(int halt)
{
    u32 t0 = ticks;
    while (ticks == t0)
        if (halt)
            __asm__ volatile("hlt" ::: "memory");
    u64 a = rdtsc64();
    t0 = ticks;
    while (ticks < t0 + TICKS)
        if (halt)
            __asm__ volatile("hlt" ::: "memory");
    return rdtsc64() - a;
}

int main(void)
{
    kprintf("tschalt: start\n");
    rt_isr[0x20] = irq0;
    outb(0x43, 0x34);                /* channel 0, lo/hi, mode 2 */
    outb(0x40, DIVISOR & 0xff);
    outb(0x40, DIVISOR >> 8);
    outb(0x21, 0xfe);                /* IRQ 0 only */
    sti();
    u64 spinning = over_ticks(0);
    u64 halted = over_ticks(1);
    cli();
    outb(0x21, 0xff);
    kprintf("tsc counted while spinning: %s\n", spinning ? "yes" : "no");
    kprintf("tsc over the same ticks halted: %s\n",
            (halted * 8 > spinning && spinning * 8 > halted) ? "the same" : "different");
    kprintf("tschalt: done\n");
    return 0;
}
