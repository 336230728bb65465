/* xenfuzz: a hostile DomU of `ringvisor xen`.  It attacks what domains share
 * -- grant tables, event channels, memory_op, its xenstore ring -- first with
 * deliberate attacks on another domain (`victim=D vport=P vgpfn=G` on its
 * command line: that domain's id, one of its ports, one of its frames),
 * printing each answer, then with random operations (`seed=S calls=N`).
 * Nothing it does may reach the victim or disturb the hypervisor; the test
 * (tests/test_xen_safety.py) checks the machine afterwards. */
#include "pvlib.h"

static u32 rng;
static u32 next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }

static unsigned char page[8192] __attribute__((aligned(4096)));
static u32 victim, vport, vgpfn;

static long op(u32 nr, u32 cmd, void *arg, u32 count)
{
    return hypercall(nr, cmd, (u32)arg, count, 0, 0);
}

static void line(const char *what, long v) { puts_(what); puts_(" "); puti(v); puts_("\n"); }

/* -- the deliberate attacks ----------------------------------------------------------- */
static void attacks(void)
{
    /* map one of the victim's frames into my physmap, as Domain 0's builder does */
    static u32 idx, gpfn = 0x90000, err;
    idx = vgpfn;
    static struct xen_add_to_physmap_batched b;
    b.domid = DOMID_SELF; b.space = XENMAPSPACE_gmfn_foreign; b.size = 1;
    b.foreign_domid = (domid_t)victim; b.idxs = (u32)&idx; b.gpfns = (u32)&gpfn; b.errs = (u32)&err;
    long r = op(__HYPERVISOR_memory_op, XENMEM_add_to_physmap_batched, &b, 0);
    line("foreign map of the victim", r < 0 ? r : (long)(int)err);

    /* map a grant of the victim's that was never made to me (its console ring's ref) */
    static struct gnttab_map_grant_ref m;
    m.host_addr = 0x90000ull << 12; m.flags = GNTMAP_host_map; m.ref = 0; m.dom = (domid_t)victim;
    op(__HYPERVISOR_grant_table_op, GNTTABOP_map_grant_ref, &m, 1);
    line("grant map of the victim's ref 0", m.status);

    /* copy from the victim's frame, naming it as if it were mine */
    static struct gnttab_copy c;
    c.source.u.gmfn = vgpfn; c.source.domid = (domid_t)victim; c.dest.u.gmfn = 0;
    c.dest.domid = DOMID_SELF; c.len = 64;
    op(__HYPERVISOR_grant_table_op, GNTTABOP_copy, &c, 1);
    line("grant copy from the victim", c.status);

    /* bind the victim's port: it is bound to Domain 0, not to me */
    static struct evtchn_bind_interdomain bi;
    bi.remote_dom = (domid_t)victim; bi.remote_port = vport;
    line("bind the victim's port", op(__HYPERVISOR_event_channel_op, EVTCHNOP_bind_interdomain, &bi, 0));

    /* a port in the victim's table, for me */
    static struct evtchn_alloc_unbound au;
    au.dom = (domid_t)victim; au.remote_dom = DOMID_SELF;
    line("alloc_unbound in the victim", op(__HYPERVISOR_event_channel_op, EVTCHNOP_alloc_unbound, &au, 0));

    /* take memory from the victim, give it more */
    static u32 frame = 0x1000;
    static struct xen_memory_reservation res;
    res.extent_start = (u32)&frame; res.nr_extents = 1; res.domid = (domid_t)victim;
    line("decrease the victim's reservation", op(__HYPERVISOR_memory_op, XENMEM_decrease_reservation, &res, 0));

    /* pause the victim, list the domains */
    static struct xen_domctl d;
    d.cmd = XEN_DOMCTL_pausedomain; d.interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    d.domain = (domid_t)victim;
    line("domctl pause of the victim", hypercall(__HYPERVISOR_domctl, (u32)&d, 0, 0, 0, 0));

    /* grow beyond what I was given */
    static u32 many[64];
    for (u32 i = 0; i < 64; i++)
        many[i] = 0x100000 + i;
    res.extent_start = (u32)many; res.nr_extents = 64; res.domid = DOMID_SELF;
    line("populate beyond maxmem", op(__HYPERVISOR_memory_op, XENMEM_populate_physmap, &res, 0));

    /* give back the frame my console ring is on */
    start_info_t *si = (start_info_t *)PV_START_INFO_VA;
    frame = si->console.domU.mfn;
    res.extent_start = (u32)&frame; res.nr_extents = 1; res.domid = DOMID_SELF;
    line("give back my console ring", op(__HYPERVISOR_memory_op, XENMEM_decrease_reservation, &res, 0));
}

/* -- random operations ------------------------------------------------------------------ */
static u32 arg(void)
{
    switch (next() % 10) {
    case 0: return 0;
    case 1: return next() % 64;
    case 2: return next();
    case 3: return (u32)page + next() % sizeof page;
    case 4: return victim;
    case 5: return DOMID_SELF;
    case 6: return vgpfn + next() % 16;
    case 7: return 0x80000 + next() % 0x1000;          /* Domain 0's toolstack window */
    case 8: return 0xFFC00000u + (next() & 0x3FFFFC);  /* the hypervisor region */
    default: return next() % 4096;
    }
}

static void fill(void)
{
    for (u32 k = 0; k < sizeof page / 4; k++) {
        u32 v = next() % 4 ? arg() : next();
        ((u32 *)page)[k] = v;
    }
}

/* scribble on my xenstore ring: garbage headers, lengths, indexes */
static void ring_garbage(void)
{
    volatile u32 *idx = (volatile u32 *)(PV_XENSTORE_VA + OFFSETOF_xenstore_domain_interface_req_cons);
    volatile unsigned char *req = (volatile unsigned char *)PV_XENSTORE_VA;
    u32 n = next() % 64;
    for (u32 i = 0; i < n; i++)
        req[(idx[1] + i) % XENSTORE_RING_SIZE] = (unsigned char)next();
    idx[1] += next() % 3 ? n : next();
    start_info_t *si = (start_info_t *)PV_START_INFO_VA;
    struct evtchn_send s = { si->store_evtchn };
    op(__HYPERVISOR_event_channel_op, EVTCHNOP_send, &s, 0);
}

/* -- an event it cannot take ------------------------------------------------------------
 * Its stack pointer made unmapped, events on, a one-shot timer armed: the timer's
 * event must be delivered onto that stack, which cannot be.  `badstack=1` blocks first
 * (the event comes while it is off the CPU: delivered when it is switched in again),
 * `badstack=2` spins (the event comes while it runs).  Either way Xen crashes this
 * domain (a bounce frame it cannot write) and the others go on. */
#define SI ((volatile shared_info_t *)PV_SHARED_INFO_VA)

static void never(void) { for (;;) ; }

static void bad_stack(u32 how)
{
    /* Xen's flat selectors (the ones it started us on) name the kernel's segments in
     * every hypercall that takes one, as Mini-OS uses them */
    line("set_callbacks", hypercall(__HYPERVISOR_set_callbacks, FLAT_KERNEL_CS, (u32)never,
                                    FLAT_KERNEL_CS, (u32)never, 0));
    static struct trap_info traps[2] = { { 6, 0, FLAT_KERNEL_CS, 0 } };
    traps[0].address = (u32)never;
    line("set_trap_table", hypercall(__HYPERVISOR_set_trap_table, (u32)traps, 0, 0, 0, 0));
    static u32 kstack[256];
    line("stack_switch", hypercall(__HYPERVISOR_stack_switch, FLAT_KERNEL_SS, (u32)&kstack[256],
                                   0, 0, 0));
    struct evtchn_bind_virq bv = { VIRQ_TIMER, 0, 0 };
    line("bind_virq timer", op(__HYPERVISOR_event_channel_op, EVTCHNOP_bind_virq, &bv, 0));
    unsigned long long t = SI->vcpu_info[0].time.system_time + 1000000;    /* 1 ms */
    line("set_timer_op", hypercall(__HYPERVISOR_set_timer_op, (u32)t, (u32)(t >> 32), 0, 0, 0));
    SI->vcpu_info[0].evtchn_upcall_mask = 0;
    if (how == 1)
        __asm__ volatile("movl $0xdead0000, %%esp\n\tint $0x82\n1:\tjmp 1b"
                         :: "a"(__HYPERVISOR_sched_op), "b"(SCHEDOP_block) : "memory");
    __asm__ volatile("movl $0xdead0000, %%esp\n1:\tjmp 1b" ::: "memory");
}

static const u32 ops[] = { __HYPERVISOR_grant_table_op, __HYPERVISOR_event_channel_op,
                           __HYPERVISOR_memory_op, __HYPERVISOR_domctl, __HYPERVISOR_sysctl };

int main(start_info_t *si)
{
    victim = number_after(si->cmd_line, "victim=");
    vport = number_after(si->cmd_line, "vport=");
    vgpfn = number_after(si->cmd_line, "vgpfn=");
    rng = number_after(si->cmd_line, "seed=") * 2654435761u + 1;
    u32 calls = number_after(si->cmd_line, "calls=");
    puts_("xenfuzz: start\n");
    if (number_after(si->cmd_line, "spin="))
        for (;;) ;                    /* a busy neighbour, events masked */
    u32 how = number_after(si->cmd_line, "badstack=");
    if (how)
        bad_stack(how);
    attacks();
    u32 refused = 0;
    for (u32 i = 0; i < calls; i++) {
        fill();
        u32 nr = ops[next() % (sizeof ops / sizeof ops[0])];
        u32 cmd = next() % 16;
        if (nr == __HYPERVISOR_memory_op && cmd == XENMEM_decrease_reservation)
            continue;                 /* it would only hurt itself: its own code and stack */
        if (nr == __HYPERVISOR_event_channel_op && cmd == EVTCHNOP_close)
            continue;                 /* (its xenstore channel: the garbage below needs it) */
        long r = hypercall(nr, cmd, (u32)page + (next() % 64) * 4, next() % 4, 0, 0);
        if (r < 0)
            refused++;
        if (next() % 8 == 0)
            ring_garbage();
    }
    puts_("xenfuzz: ");
    putn(calls);
    puts_(" calls, ");
    putn(refused);
    puts_(" refused\n");
    shutdown();
    return 0;
}
