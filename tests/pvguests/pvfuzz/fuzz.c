/* pvfuzz: a hostile para-virtual guest.  It issues random hypercalls with
 * random, half-plausible arguments (a PRNG seeded from the command line
 * "seed=N calls=M") and reports how many it made and how many failed.  Any
 * outcome is acceptable to the hypervisor but one: being disturbed itself.
 * The test (tests/test_paravirt.py) checks the machine afterwards. */
#include "pvlib.h"

static u32 rng;
static u32 next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }

static unsigned char scratch[8192] __attribute__((aligned(4096)));

/* A value a careless or malicious kernel might pass. */
static u32 arg(void)
{
    switch (next() % 12) {
    case 0: return 0;
    case 1: return next() % 40;                                  /* a small command or count */
    case 2: return next();                                       /* anything */
    case 3: return (u32)scratch + next() % sizeof scratch;       /* a pointer to random bytes */
    case 4: return 0xFFC00000u + (next() & 0x3FFFFC);            /* into the hypervisor region */
    case 5: return 0xFFBFD000u + (next() & 0x2FFC);              /* the fixed pages */
    case 6: return 0x400 + next() % 0x400;                       /* a frame number of its own */
    case 7: return (32u << 8) + next() % 0x1000;                 /* a frame beyond its RAM */
    case 8: return (0x400000u + (next() & 0x3FFFFC)) | (next() & 7); /* a machine address */
    case 9: return (32u << 20) + (next() & 0x7FFFFC);            /* the monitor's machine memory */
    case 10: return DOMID_SELF;
    default: return next() & 0xFFFF;                             /* a selector */
    }
}

/* hypercalls that end the run on purpose are left out: iret (it would jump to
 * random code), and shutting the machine or the vCPU down */
static int excluded(u32 nr, u32 a)
{
    /* set_gdt/update_descriptor with random frames replace the guest's own
     * segments: it stops at once (checked deliberately below instead) */
    return nr == __HYPERVISOR_iret || nr == __HYPERVISOR_set_gdt ||
           nr == __HYPERVISOR_update_descriptor ||
           (nr == __HYPERVISOR_sched_op && (a == SCHEDOP_shutdown || a == SCHEDOP_block ||
                                            a == SCHEDOP_poll)) ||
           (nr == __HYPERVISOR_vcpu_op && a == VCPUOP_down);
}

int main(start_info_t *si)
{
    rng = number_after(si->cmd_line, "seed=") * 2654435761u + 1;
    u32 calls = number_after(si->cmd_line, "calls=");
    u32 failed = 0, made = 0;
    puts_("pvfuzz: start\n");
    for (u32 i = 0; i < calls; i++) {
        for (u32 k = 0; k < sizeof scratch / 4; k += 1 + next() % 61)
            ((u32 *)scratch)[k] = next() % 3 ? next() % 64 : next();
        u32 nr = next() % 4 ? next() % 34 : (next() % 8 ? __HYPERVISOR_rv_machine_op : next() % 64);
        u32 a = arg(), b = arg(), c = arg(), d = arg(), e = arg();
        if (nr == __HYPERVISOR_rv_machine_op && a == RV_WRITE_CR)
            continue;                   /* random CR0/CR4: the guest would only hurt itself */
        if (excluded(nr, a))
            continue;
        made++;
        if (hypercall(nr, a, b, c, d, e) < 0)
            failed++;
    }
    puts_("pvfuzz: ");
    putn(made);
    puts_(" calls, ");
    putn(failed);
    puts_(" refused\n");
    /* deliberate attacks, with the answers Xen's ABI prescribes */
    static u32 frames[1] = { 32u << 8 };                  /* the first frame past its RAM */
    static struct mmu_update req = { 0x100000, (32ull << 20) | 3 };
    static struct mmuext_op op = { MMUEXT_NEW_BASEPTR, { 32u << 8 } };
    long r[7];
    r[0] = hypercall(__HYPERVISOR_set_gdt, (u32)frames, 1, 0, 0, 0);
    r[1] = hypercall(__HYPERVISOR_set_gdt, 0xFFC00000u, 1, 0, 0, 0);
    r[2] = hypercall(__HYPERVISOR_mmu_update, (u32)&req, 1, 0, DOMID_SELF, 0);
    r[3] = hypercall(__HYPERVISOR_update_va_mapping, 0xFFC00000u, 0x100003, 0, 0, 0);
    r[4] = hypercall(__HYPERVISOR_console_io, CONSOLEIO_write, 16, 0xFFC10000u, 0, 0);
    r[5] = hypercall(__HYPERVISOR_mmuext_op, (u32)&op, 1, 0, DOMID_SELF, 0);
    r[6] = hypercall(__HYPERVISOR_update_descriptor, 0xFFC00000u, 0, 0xFFFF, 0x00CF9A00, 0);
    puts_("checks:");
    for (int i = 0; i < 7; i++) {
        puts_(" -");
        putn((u32)-r[i]);
    }
    puts_("\n");
    shutdown();
    return 0;
}
