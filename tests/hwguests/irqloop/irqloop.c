/* irqloop: an interrupt made pending by a store inside a tight loop is taken at once.
 *
 * The loop below stores to RAM on every iteration, except at iteration K, where the
 * same store goes to the local APIC: either the ICR (a fixed self-IPI) or the TPR
 * (lowered to 0 under a self-IPI already held pending by TPR 0xf0).  The interrupt
 * handler reads the iteration counter (EDX) from its frame.  With IF=1, the SDM has
 * the interrupt recognized at an instruction boundary as soon as it is pending and
 * not masked (Vol. 3 §6.9, §10.8.3.1: a TPR write makes a held vector deliverable);
 * QEMU takes it at the start of the next translation block, here the next iteration.
 * An emulator that runs the loop to the end of a time slice takes it thousands of
 * iterations late.  Only the bound both QEMU and ringvisor meet is printed. */
#include "rt.h"

#define APIC 0xfee00000u
enum { TPR = 0x80, EOI = 0xb0, ICR = 0x300, ICR2 = 0x310 };
#define VEC 0x41
#define K 3000u               /* iterations before the store to the APIC */
#define LIMIT (K + 200000u)   /* the loop's end if the interrupt never comes */
#define BOUND 4u              /* iterations allowed between the store and the handler */

static void aw(u32 r, u32 v) { *(volatile u32 *)(APIC + r) = v; }

static volatile u32 seen, at;
static volatile u32 sink;

static void handler(struct frame *f)
{
    if (!seen)
        at = f->edx;
    seen++;
    aw(EOI, 0);
}

/* Run the loop; at iteration K the store writes `value` to APIC register `reg`.
 * Returns the counter value the handler saw (LIMIT: not within the loop). */
static u32 loop(u32 reg, u32 value)
{
    u32 n = 0;
    seen = 0;
    at = LIMIT;
    __asm__ volatile(
        "sti\n"
        "1:\n\t"
        "incl %%edx\n\t"
        "movl %[ram], %%ebx\n\t"
        "cmpl %[k], %%edx\n\t"
        "cmovel %[dev], %%ebx\n\t"
        "movl %[val], (%%ebx)\n\t"
        "cmpl $0, %[seen]\n\t"
        "jne 2f\n\t"
        "cmpl %[limit], %%edx\n\t"
        "jb 1b\n"
        "2:\n\t"
        "cli\n"
        : "+d"(n)
        : [ram] "i"(&sink), [dev] "r"(APIC + reg), [val] "r"(value), [k] "i"(K),
          [limit] "i"(LIMIT), [seen] "m"(seen)
        : "ebx", "memory", "cc");
    /* the loop ran to LIMIT: let the interrupt in now so that the next run starts clean */
    sti(); __asm__ volatile("nop"); cli();
    return at;
}

static void report(const char *what, u32 got)
{
    if (got >= K && got - K <= BOUND)
        kprintf("%s: handler ran within %u iterations of the store\n", what, BOUND);
    else if (got == LIMIT)
        kprintf("%s: handler did not run inside the loop\n", what);
    else
        kprintf("%s: handler ran %d iterations after the store\n", what, (int)(got - K));
}

int main(void)
{
    kprintf("irqloop: start\n");
    rt_isr[VEC] = handler;
    aw(ICR2, 0);

    /* a self-IPI sent by the store */
    report("icr self-ipi", loop(ICR, 0x40000 | VEC));
    CHECK(seen == 1);

    /* a self-IPI held back by the TPR, released by the store */
    aw(TPR, 0xf0);
    aw(ICR, 0x40000 | VEC);
    seen = 0;
    sti(); for (volatile int i = 0; i < 100; i++) ; cli();
    CHECK(seen == 0);
    report("tpr lowered", loop(TPR, 0));
    CHECK(seen == 1);
    kprintf("irqloop: done\n");
    rt_exit(0);
}
