/* smpvcpu: a DomU of two vCPUs on `ringvisor xen` (vcpus = 2 in its config).
 * vCPU 0 starts at boot; it brings vCPU 1 up with VCPUOP_initialise (a
 * vcpu_guest_context: entry point, stack, flat segments, event callback) and
 * VCPUOP_up, then the two exchange IPIs over event channels (EVTCHNOP_bind_ipi
 * on each vCPU), count on the page they share, take turns with SCHEDOP_yield,
 * and vCPU 1 is woken by its own VIRQ_TIMER.  Every answer is printed by vCPU 0
 * as "what value", so the output is the same on every run.  `rounds=N` on the
 * command line sets the IPI round trips (default 8).  After "smpvcpu: phase 1"
 * it waits 20 ms (its own timer) and does it all once more -- across a save and
 * restore, in tests/test_smpdom.py -- then shuts down. */
#include "pvlib.h"

#define NV 2
#define NPORTS 64
#define SI ((shared_info_t *)PV_SHARED_INFO_VA)

extern void upcall0(void), upcall1(void), ap_entry(void);

/* the page both vCPUs count on */
static volatile u32 counts[NV], spins[NV], upcalls[NV];
static volatile u32 seen[NV][NPORTS];     /* events taken, per vCPU and port */
static volatile u32 owner[NPORTS];        /* the vCPU a port notifies */
static volatile u32 go_rounds, stop_spin, ap_result, ap_result2, timer_port1;
static u32 ipi[NV];
static unsigned char ctx[SIZEOF_vcpu_guest_context] __attribute__((aligned(8)));
static unsigned char ap_stack[8192] __attribute__((aligned(16)));
static unsigned char ap_gdt[4096] __attribute__((aligned(4096)));   /* vCPU 1's GDT page */
static unsigned int scratch_pt[1024] __attribute__((aligned(4096)));  /* an entry to write */
/* each vCPU's vcpu_info: its shared-info slot, then where it was registered (a page of
 * its own, vCPU 0's slot at its very end); and each vCPU's runstate area */
static vcpu_info_t *volatile vi[NV];
static unsigned char pcpu[4096] __attribute__((aligned(4096)));
static volatile struct vcpu_runstate_info runstate[NV];

static void line(const char *what, long v) { puts_(what); puts_(" "); puti(v); puts_("\n"); }
static long evtchn(u32 cmd, void *arg) { return hypercall(__HYPERVISOR_event_channel_op, cmd, (u32)arg, 0, 0, 0); }
static long vcpu_op(u32 cmd, u32 vcpu, void *arg) { return hypercall(__HYPERVISOR_vcpu_op, cmd, vcpu, (u32)arg, 0, 0); }
static long send(u32 port) { struct evtchn_send s = { port }; return evtchn(EVTCHNOP_send, &s); }
static void yield(void) { hypercall(__HYPERVISOR_sched_op, SCHEDOP_yield, 0, 0, 0, 0); }

static long register_info(u32 k, u32 offset)
{
    struct vcpu_register_vcpu_info r = { 0, offset, 0 };
    r.mfn = hypercall(__HYPERVISOR_rv_machine_op, RV_VA_TO_MFN, (u32)pcpu, 0, 0, 0);
    long rc = vcpu_op(VCPUOP_register_vcpu_info, k, &r);
    if (rc == 0 && k < NV)
        vi[k] = (vcpu_info_t *)(pcpu + offset);
    return rc;
}

static long register_runstate(u32 k, u32 va)
{
    struct vcpu_register_runstate_memory_area a = { va };
    return vcpu_op(VCPUOP_register_runstate_memory_area, k, &a);
}

/* the area of vCPU k as the hypervisor last wrote it agrees with VCPUOP_get_runstate_info
 * (the time of the state it is in runs on in the latter only) */
static u32 area_agrees(u32 k)
{
    struct vcpu_runstate_info rs;
    vcpu_op(VCPUOP_get_runstate_info, k, &rs);
    u32 ok = rs.state == runstate[k].state && rs.state_entry_time == runstate[k].state_entry_time;
    for (u32 s = 0; s < 4; s++)
        ok &= s == rs.state ? rs.time[s] >= runstate[k].time[s] : rs.time[s] == runstate[k].time[s];
    return ok;
}

static u32 ctz(u32 x) { u32 n = 0; while (!(x & 1)) { x >>= 1; n++; } return n; }

/* the event callback of vCPU k: the ports its selector names that are bound to it */
void on_upcall(u32 k)
{
    vcpu_info_t *v = vi[k];
    upcalls[k]++;
    v->evtchn_upcall_pending = 0;
    u32 sel = __sync_lock_test_and_set(&v->evtchn_pending_sel, 0);
    while (sel) {
        u32 w = ctz(sel);
        sel &= sel - 1;
        u32 pend = SI->evtchn_pending[w] & ~SI->evtchn_mask[w];
        while (pend) {
            u32 port = w * 32 + ctz(pend);
            pend &= pend - 1;
            if (port < NPORTS && owner[port] == k) {
                __sync_fetch_and_and(&SI->evtchn_pending[w], ~(1u << (port & 31)));
                seen[k][port]++;
            }
        }
    }
}

/* wait on vCPU k until seen[k][port] reaches n: events masked while testing, then
 * SCHEDOP_block, which unmasks and sleeps only if nothing is pending (no lost wake-up) */
static void wait_for(u32 k, u32 port, u32 n)
{
    vcpu_info_t *v = vi[k];
    for (;;) {
        v->evtchn_upcall_mask = 1;
        __asm__ volatile("" ::: "memory");
        if (seen[k][port] >= n)
            break;
        hypercall(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0, 0, 0);
    }
    v->evtchn_upcall_mask = 0;
}

static unsigned long long now_ns(u32 k)
{
    vcpu_info_t *v = vi[k];
    u32 ver;
    unsigned long long t;
    do {
        ver = v->time.version;
        t = v->time.system_time;
    } while (ver != v->time.version);
    return t;
}

/* -- vCPU 1 ------------------------------------------------------------------------- */
static void ap_rounds(u32 base, u32 n)
{
    for (u32 i = 0; i < n; i++) {
        wait_for(1, ipi[1], base + i + 1);
        counts[1]++;
        send(ipi[0]);
    }
}

void ap_main(void)
{
    u32 n = go_rounds;
    ap_result = register_info(1, 128);          /* once only, even by itself: -EINVAL */
    ap_rounds(0, n);
    /* both vCPUs count, taking turns */
    vi[1]->evtchn_upcall_mask = 0;
    while (!stop_spin) {
        spins[1]++;
        yield();
    }
    /* a one-shot timer of its own, and not another vCPU's */
    struct vcpu_set_singleshot_timer t = { now_ns(0) + 1000000ull, 0 };
    ap_result2 = vcpu_op(VCPUOP_set_singleshot_timer, 0, &t);
    vcpu_op(VCPUOP_set_singleshot_timer, 1, &t);
    wait_for(1, timer_port1, 1);
    send(ipi[0]);
    /* the second phase (after vCPU 0's 20 ms): the same rounds again */
    ap_rounds(n, n);
    for (;;)
        wait_for(1, ipi[1], 1u << 30);
}

/* -- vCPU 0 ------------------------------------------------------------------------- */
/* n round trips: vCPU 0 counts and sends, vCPU 1 counts and answers; ``got`` answers
 * came before, ``done`` round trips */
static u32 rounds(u32 got, u32 done, u32 n)
{
    for (u32 i = 0; i < n; i++) {
        counts[0]++;
        send(ipi[1]);
        wait_for(0, ipi[0], got + i + 1);
    }
    return counts[0] == done + n && counts[1] == done + n;
}

#define CTX(field) (*(u32 *)(ctx + OFFSETOF_vcpu_guest_context_##field))

int main(start_info_t *si)
{
    u32 n = number_after((const char *)si->cmd_line, "rounds=");
    if (!n)
        n = 8;
    go_rounds = n;
    puts_("smpvcpu: start\n");
    u32 cs;
    __asm__ volatile("movl %%cs, %0" : "=r"(cs));
    hypercall(__HYPERVISOR_set_callbacks, cs, (u32)upcall0, cs, (u32)upcall0, 0);

    /* vCPU 1 exists (max_vcpus 2) but is down and has no context; vCPU 2 does not exist */
    line("is_up 1", vcpu_op(VCPUOP_is_up, 1, 0));
    line("up 1 before initialise", vcpu_op(VCPUOP_up, 1, 0));
    line("is_up 2", vcpu_op(VCPUOP_is_up, 2, 0));
    line("initialise 2", vcpu_op(VCPUOP_initialise, 2, ctx));

    /* the vCPUs of another domain are not a DomU's to see or change */
    static struct xen_domctl dc;
    dc.cmd = XEN_DOMCTL_getvcpuinfo;
    dc.interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    dc.domain = 0;
    line("domctl getvcpuinfo of Domain 0", hypercall(__HYPERVISOR_domctl, (u32)&dc, 0, 0, 0, 0));
    dc.cmd = XEN_DOMCTL_max_vcpus;
    line("domctl max_vcpus of Domain 0", hypercall(__HYPERVISOR_domctl, (u32)&dc, 0, 0, 0, 0));

    /* vcpu_info in a page of its own (public/vcpu.h: within one page, once per vCPU, by
     * itself or for a vCPU that is down), runstate areas below the hypervisor */
    vi[0] = &SI->vcpu_info[0];
    vi[1] = &SI->vcpu_info[1];
    if (number_after((const char *)si->cmd_line, "legacy="))
        goto ports;                       /* a guest of before: the shared-info slots */
    line("vcpu_info across a page", register_info(0, 4096 - sizeof(vcpu_info_t) + 1));
    line("vcpu_info of vcpu 2", register_info(2, 0));
    struct vcpu_register_vcpu_info far = { 0xFFFFF, 0, 0 };
    line("vcpu_info in a frame not its own", vcpu_op(VCPUOP_register_vcpu_info, 0, &far));
    line("vcpu_info 0", register_info(0, 4096 - sizeof(vcpu_info_t)));
    line("vcpu_info 0 all pending", vi[0]->evtchn_pending_sel == 0xFFFFFFFFu &&
         vi[0]->evtchn_upcall_pending == 1 && vi[0]->evtchn_upcall_mask == 1);
    line("vcpu_info 0 again", register_info(0, 0));
    line("vcpu_info 1 while down", register_info(1, 64));
    /* the page is the hypervisor's to write now: not given back while it holds the slots */
    u32 gfn = hypercall(__HYPERVISOR_rv_machine_op, RV_VA_TO_MFN, (u32)pcpu, 0, 0, 0);
    struct xen_memory_reservation give = { (u32)&gfn, 1, 0, 0, DOMID_SELF };
    line("vcpu_info page given back", hypercall(__HYPERVISOR_memory_op,
                                                XENMEM_decrease_reservation, (u32)&give, 0, 0, 0));
    line("runstate area in the hypervisor", register_runstate(0, 0xFFC00000u));
    line("runstate area 0", register_runstate(0, (u32)&runstate[0]));
    line("runstate area 1", register_runstate(1, (u32)&runstate[1]));
    line("runstate 0 now", runstate[0].state);
    line("runstate 1 now", runstate[1].state);

ports:
    /* the ports: an IPI on each vCPU, vCPU 1's timer, a loopback pair moved to vCPU 1 */
    struct evtchn_bind_ipi bi = { 0, 0 };
    line("bind_ipi 0", evtchn(EVTCHNOP_bind_ipi, &bi));
    ipi[0] = bi.port; owner[bi.port] = 0;
    bi.vcpu = 1;
    line("bind_ipi 1", evtchn(EVTCHNOP_bind_ipi, &bi));
    ipi[1] = bi.port; owner[bi.port] = 1;
    bi.vcpu = 2;
    line("bind_ipi 2", evtchn(EVTCHNOP_bind_ipi, &bi));
    struct evtchn_bind_virq bv = { VIRQ_TIMER, 1, 0 };
    line("bind_virq timer 1", evtchn(EVTCHNOP_bind_virq, &bv));
    timer_port1 = bv.port; owner[bv.port] = 1;
    line("bind_virq timer 1 again", evtchn(EVTCHNOP_bind_virq, &bv));
    struct evtchn_bind_virq bg = { VIRQ_DOM_EXC, 1, 0 };
    line("bind_virq global on 1", evtchn(EVTCHNOP_bind_virq, &bg));
    struct evtchn_bind_virq b0 = { VIRQ_TIMER, 0, 0 };
    line("bind_virq timer 0", evtchn(EVTCHNOP_bind_virq, &b0));
    owner[b0.port] = 0;
    struct evtchn_alloc_unbound au = { DOMID_SELF, DOMID_SELF, 0 };
    evtchn(EVTCHNOP_alloc_unbound, &au);
    struct evtchn_bind_interdomain bd = { DOMID_SELF, au.port, 0 };
    evtchn(EVTCHNOP_bind_interdomain, &bd);
    owner[au.port] = 0;
    struct evtchn_bind_vcpu bc = { bd.local_port, 1 };
    line("bind_vcpu loopback to 1", evtchn(EVTCHNOP_bind_vcpu, &bc));
    owner[bd.local_port] = 1;
    struct evtchn_bind_vcpu bx = { ipi[0], 1 };
    line("bind_vcpu of an ipi", evtchn(EVTCHNOP_bind_vcpu, &bx));
    bc.vcpu = 2;
    line("bind_vcpu to 2", evtchn(EVTCHNOP_bind_vcpu, &bc));
    struct evtchn_status st = { DOMID_SELF, bd.local_port };
    evtchn(EVTCHNOP_status, &st);
    line("status vcpu", st.vcpu);

    /* vCPU 1's start: flat ring-1 segments, its stack, its callback, paging off */
    CTX(flags) = VGCF_in_kernel;
    CTX(user_regs_eip) = (u32)ap_entry;
    CTX(user_regs_esp) = (u32)(ap_stack + sizeof ap_stack);
    CTX(user_regs_eflags) = 2;
    *(unsigned short *)(ctx + OFFSETOF_vcpu_guest_context_user_regs_cs) = FLAT_KERNEL_CS;
    *(unsigned short *)(ctx + OFFSETOF_vcpu_guest_context_user_regs_ss) = FLAT_KERNEL_SS;
    *(unsigned short *)(ctx + OFFSETOF_vcpu_guest_context_user_regs_ds) = FLAT_KERNEL_DS;
    *(unsigned short *)(ctx + OFFSETOF_vcpu_guest_context_user_regs_es) = FLAT_KERNEL_DS;
    CTX(kernel_ss) = FLAT_KERNEL_SS;
    CTX(kernel_sp) = (u32)(ap_stack + sizeof ap_stack);
    CTX(event_callback_cs) = cs;
    CTX(event_callback_eip) = (u32)upcall1;
    CTX(failsafe_callback_cs) = cs;
    CTX(failsafe_callback_eip) = (u32)upcall1;
    CTX(ctrlreg) = 0x11;
    CTX(gdt_frames) = hypercall(__HYPERVISOR_rv_machine_op, RV_VA_TO_MFN, (u32)ap_gdt, 0, 0, 0);
    CTX(gdt_ents) = 16;                   /* a GDT page of its own (its selectors: FLAT) */
    line("initialise 1", vcpu_op(VCPUOP_initialise, 1, ctx));
    line("initialise 1 again", vcpu_op(VCPUOP_initialise, 1, ctx));
    line("is_up 1 after initialise", vcpu_op(VCPUOP_is_up, 1, 0));
    line("up 1", vcpu_op(VCPUOP_up, 1, 0));
    line("is_up 1 after up", vcpu_op(VCPUOP_is_up, 1, 0));
    /* vCPU 1's GDT frame is the hypervisor's to read while vCPU 0 runs: not given back */
    u32 gdt_gfn = CTX(gdt_frames);
    struct xen_memory_reservation give_gdt = { (u32)&gdt_gfn, 1, 0, 0, DOMID_SELF };
    line("vcpu 1 gdt page given back", hypercall(__HYPERVISOR_memory_op,
                                                 XENMEM_decrease_reservation, (u32)&give_gdt, 0, 0, 0));
    line("vcpu_info 1 while up", register_info(1, 192));

    /* IPIs, both ways, n times */
    line("ipi rounds", rounds(0, 0, n));
    line("vcpu 1 counted", counts[1]);
    line("upcalls on vcpu 1", upcalls[1] >= n);

    /* both count, taking turns with SCHEDOP_yield */
    vi[0]->evtchn_upcall_mask = 0;
    u32 turns = 0, last = spins[1];
    while (spins[1] < 100) {
        spins[0]++;
        yield();
        turns += spins[1] != last;
        last = spins[1];
    }
    stop_spin = 1;
    line("both counted", spins[0] > 0 && spins[1] >= 100);
    line("took turns", turns >= 50);

    /* the loopback port now notifies vCPU 1 only */
    send(au.port);
    wait_for(0, ipi[0], n + 1);                 /* vCPU 1 says it was woken by its timer */
    line("vcpu 1 timer", seen[1][timer_port1]);
    line("singleshot on another vcpu", ap_result2);
    line("vcpu_info 1 again by itself", ap_result);
    line("loopback on vcpu 1", seen[1][bd.local_port]);
    line("loopback on vcpu 0", seen[0][bd.local_port]);

    /* a port pending while vCPU 0 has events masked, moved to vCPU 1: vCPU 1 is told at
     * once (a bounded number of yields lets it run) */
    struct evtchn_alloc_unbound au2 = { DOMID_SELF, DOMID_SELF, 0 };
    evtchn(EVTCHNOP_alloc_unbound, &au2);
    struct evtchn_bind_interdomain bd2 = { DOMID_SELF, au2.port, 0 };
    evtchn(EVTCHNOP_bind_interdomain, &bd2);
    u32 moved = bd2.local_port;
    vi[0]->evtchn_upcall_mask = 1;
    send(au2.port);
    owner[moved] = 1;
    struct evtchn_bind_vcpu bm = { moved, 1 };
    line("bind_vcpu of a pending port", evtchn(EVTCHNOP_bind_vcpu, &bm));
    for (u32 i = 0; i < 1000 && !seen[1][moved]; i++)
        yield();
    line("pending port taken on vcpu 1", seen[1][moved]);
    vi[0]->evtchn_upcall_mask = 0;

    struct vcpu_runstate_info rs;
    vcpu_op(VCPUOP_get_runstate_info, 1, &rs);
    line("vcpu 1 runstate", rs.state);
    line("vcpu 1 has run", rs.time[RUNSTATE_running] > 0);
    line("vcpu 1 has waited", rs.time[RUNSTATE_blocked] > 0);
    line("runstate area 0 running", runstate[0].state);
    line("runstate area 1 agrees", area_agrees(1));
    line("runstate area 1 has run", runstate[1].time[RUNSTATE_running] > 0);

    /* down and up again: it goes on where it stopped */
    line("down 1", vcpu_op(VCPUOP_down, 1, 0));
    line("is_up 1 after down", vcpu_op(VCPUOP_is_up, 1, 0));
    /* a vCPU that is down keeps its GDT (Xen's VCPUOP_down only deschedules it): its
     * page keeps its type, which no writable mapping may share (gdtguard has the rest) */
    {
        static struct mmu_update req;
        u32 gfn = hypercall(__HYPERVISOR_rv_machine_op, RV_VA_TO_MFN, (u32)ap_gdt, 0, 0, 0);
        req.ptr = (unsigned long long)hypercall(__HYPERVISOR_rv_machine_op, RV_VA_TO_MFN,
                                                (u32)scratch_pt, 0, 0, 0) << 12;
        req.val = gfn << 12 | 3;
        line("vcpu 1's gdt mapped writable while down",
             hypercall(__HYPERVISOR_mmu_update, (u32)&req, 1, 0, DOMID_SELF, 0));
        req.val = gfn << 12 | 1;
        line("vcpu 1's gdt mapped read-only while down",
             hypercall(__HYPERVISOR_mmu_update, (u32)&req, 1, 0, DOMID_SELF, 0));
    }
    line("up 1 again", vcpu_op(VCPUOP_up, 1, 0));
    puts_("smpvcpu: phase 1\n");

    /* 20 ms on vCPU 0's own timer, then the rounds once more */
    u32 timer0 = b0.port;
    hypercall(__HYPERVISOR_set_timer_op, (u32)(now_ns(0) + 20000000ull),
              (u32)((now_ns(0) + 20000000ull) >> 32), 0, 0, 0);
    wait_for(0, timer0, 1);
    line("ipi rounds after", rounds(n + 1, n, n));
    line("runstate areas after", runstate[0].state == RUNSTATE_running && area_agrees(1));
    line("down 1 at the end", vcpu_op(VCPUOP_down, 1, 0));
    line("vcpu 1 counted in all", counts[1]);
    puts_("smpvcpu: done\n");
    shutdown();
    return 0;
}
