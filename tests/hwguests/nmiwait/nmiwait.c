/* nmiwait: NMIs from the machine's NMI input (the test raises them, as QEMU's `nmi`
 * monitor command does), with no local APIC programmed: the NMI is taken through
 * vector 2 with IF as it was in the frame (SDM Vol. 3 §6.7: NMIs are not masked by IF),
 * and a second NMI raised while the handler runs waits for its IRET (§6.7.1: NMIs are
 * blocked from the delivery of one until the next IRET).  The handler announces itself
 * and then computes for a while; the test raises the second NMI when it sees the line.
 * The same lines natively and under --mode hvm (virtual NMIs). */
#include "rt.h"

static volatile u32 nmis, seen_in_handler, if_in_frame, if_second;

static void nmi(struct frame *f)
{
    u32 n = ++nmis;
    if (n == 1) {
        if_in_frame = (f->eflags >> 9) & 1;
        kprintf("nmi handler\n");
        for (volatile u32 i = 0; i < 20000; i++)
            ;
        seen_in_handler = nmis;          /* still 1: the second one is held */
    } else {
        if_second = (f->eflags >> 9) & 1;
    }
}

int main(void)
{
    rt_isr[2] = nmi;
    __asm__ volatile("cli");
    kprintf("waiting\n");
    while (nmis < 2)
        __asm__ volatile("pause");
    kprintf("nmis %u; in the first handler %u; if in frames %u %u\n", nmis, seen_in_handler,
            if_in_frame, if_second);
    kprintf("done\n");
    rt_exit(0);
}
