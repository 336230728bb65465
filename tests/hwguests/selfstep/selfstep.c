/* selfstep: a kernel that single-steps its own code (EFLAGS.TF) and prints
 * every #DB it takes: the saved EIP (relative to the routine), and DR6.
 *
 * SDM Vol. 3 §17.3.1.4: with TF set, a single-step trap follows every
 * instruction (saved EIP = the next instruction), except the instruction
 * that set TF; INT n clears TF for its handler; a repeated string
 * instruction traps after each iteration.  §17.2.3: DR6.BS (bit 14) is set;
 * the handler writes 0 to DR6, which reads back as 0xffff0ff0 (reserved bits
 * set).  Expected outputs: tests/test_monitor_guests.py, checked on QEMU. */
#include "rt.h"

extern u32 step_flow(void), step_system(void), step_int(void);
extern u32 step_rep(void *dst, const void *src);
extern char step_flow_end[], step_system_end[], step_int_end[], step_rep_end[];
extern u32 step_pushed;

#define MAXSTEPS 64
static volatile u32 nsteps, eips[MAXSTEPS], dr6s[MAXSTEPS];
static volatile u32 in_int_handler_tf, int_count;

static void on_db(struct frame *f)
{
    u32 dr6;
    __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
    if (nsteps < MAXSTEPS) {
        eips[nsteps] = f->eip;
        dr6s[nsteps] = dr6;
    }
    nsteps++;
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
}

static void on_int81(struct frame *f)
{
    int_count++;
    in_int_handler_tf |= read_eflags() & EFLAGS_TF;
    f->eax += 10;
}

static void report(const char *name, u32 (*fn)(void), const char *end, u32 result)
{
    (void)fn;
    kprintf("%s: result=%u steps=%u", name, result, nsteps);
    u32 bad = 0;
    for (u32 i = 0; i < nsteps && i < MAXSTEPS; i++) {
        s32 d = (s32)(eips[i] - (u32)fn);
        kprintf(" %s%d", d >= 0 ? "+" : "", d);
        if (dr6s[i] != 0xffff4ff0u)
            bad++;
    }
    kprintf(" end=+%u dr6!=0xffff4ff0:%u\n", (u32)(end - (const char *)fn), bad);
}

int main(void)
{
    kprintf("selfstep: start\n");
    rt_isr[1] = on_db;
    rt_isr[0x81] = on_int81;
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
    u32 dr6;
    __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
    kprintf("dr6 after writing 0: 0x%08x\n", dr6);

    for (int round = 0; round < 3; round++) {     /* again: translations are chained now */
        nsteps = 0;
        u32 r = step_flow();
        report("flow", step_flow, step_flow_end, r);
    }
    nsteps = 0;
    u32 r = step_system();
    report("system", step_system, step_system_end, r);
    kprintf("pushf image: tf=%u nt=%u df=%u\n", (step_pushed >> 8) & 1, (step_pushed >> 14) & 1,
            (step_pushed >> 10) & 1);

    nsteps = 0;
    r = step_int();
    report("int", step_int, step_int_end, r);
    kprintf("int 0x81: count=%u handler tf=%u\n", int_count, in_int_handler_tf >> 8);

    static char src[4] = "abc", dst[4];
    nsteps = 0;
    r = step_rep(dst, src);
    report("rep movsb", (u32 (*)(void))step_rep, step_rep_end, r);
    kprintf("copied: %c%c%c\n", dst[0], dst[1], dst[2]);

    kprintf("selfstep: done\n");
    return 0;
}
