/* pvevents: event channels seen from a para-virtual guest.  Each line it
 * prints is a fact of Xen's two-level event ABI, checked against the
 * hypervisor (tests/test_paravirt.py compares the output line by line). */
#include "pvlib.h"

#define SI ((volatile shared_info_t *)PV_SHARED_INFO_VA)
#define V0 (SI->vcpu_info[0])

extern void upcall_entry(void);
static volatile u32 upcalls, last_port, seen;

/* the callback's work: the lowest pending, unmasked port of word 0 */
void on_upcall(void)
{
    upcalls++;
    V0.evtchn_upcall_pending = 0;
    V0.evtchn_pending_sel = 0;
    u32 ready = SI->evtchn_pending[0] & ~SI->evtchn_mask[0];
    for (u32 p = 0; p < 32; p++)
        if (ready >> p & 1) {
            SI->evtchn_pending[0] &= ~(1u << p);
            last_port = p;
            seen |= 1u << p;
        }
}

static long evtchn(u32 cmd, void *arg) { return hypercall(__HYPERVISOR_event_channel_op, cmd, (u32)arg, 0, 0, 0); }
static long send(u32 port) { struct evtchn_send s = { port }; return evtchn(EVTCHNOP_send, &s); }

static void line(const char *what, long v) { puts_(what); puts_(" "); puti(v); puts_("\n"); }

static unsigned long long now_ns(void)
{
    u32 v;
    unsigned long long t;
    do {
        v = V0.time.version;
        t = V0.time.system_time;
    } while (v != V0.time.version);
    return t;
}

int main(start_info_t *si)
{
    const char *m = START_INFO_MAGIC;
    u32 i = 0;
    while (m[i] && si->magic[i] == m[i]) i++;
    line("magic ok", m[i] == 0);
    line("pages", si->nr_pages);
    line("events masked at start", V0.evtchn_upcall_mask);

    u32 cs;
    __asm__ volatile("movl %%cs, %0" : "=r"(cs));
    line("set_callbacks", hypercall(__HYPERVISOR_set_callbacks, cs, (u32)upcall_entry, cs,
                                    (u32)upcall_entry, 0));
    line("set_callbacks ring 0 cs", hypercall(__HYPERVISOR_set_callbacks, 0xFFC0, (u32)upcall_entry,
                                              cs, (u32)upcall_entry, 0));

    /* a loopback pair: what one end sends, the other receives */
    struct evtchn_alloc_unbound au = { DOMID_SELF, DOMID_SELF, 0 };
    line("alloc_unbound", evtchn(EVTCHNOP_alloc_unbound, &au));
    struct evtchn_bind_interdomain bi = { DOMID_SELF, au.port, 0 };
    line("bind_interdomain", evtchn(EVTCHNOP_bind_interdomain, &bi));
    u32 a = au.port, b = bi.local_port;
    line("ports differ", a != b);

    /* a masked port collects the event but raises no upcall */
    SI->evtchn_mask[0] |= 1u << a;
    line("send", send(b));
    line("pending while masked", SI->evtchn_pending[0] >> a & 1);
    line("upcall_pending while masked", V0.evtchn_upcall_pending);
    V0.evtchn_upcall_mask = 0;                          /* the virtual sti */
    hypercall(__HYPERVISOR_xen_version, XENVER_version, 0, 0, 0, 0);
    line("upcalls with the port masked", upcalls);
    struct evtchn_unmask um = { a };
    line("unmask", evtchn(EVTCHNOP_unmask, &um));     /* pending: the upcall comes on return */
    line("upcalls after unmask", upcalls);
    line("the upcall saw port a", last_port == a);

    /* events wait while the vCPU's mask is set, and come when it clears */
    V0.evtchn_upcall_mask = 1;
    send(b);
    line("upcall_pending with events masked", V0.evtchn_upcall_pending);
    line("upcalls with events masked", upcalls);
    V0.evtchn_upcall_mask = 0;
    hypercall(__HYPERVISOR_xen_version, XENVER_version, 0, 0, 0, 0);
    line("upcalls after the mask cleared", upcalls);

    /* the one-shot timer wakes a blocked vCPU even with no device interrupt at all */
    struct evtchn_bind_virq bv = { VIRQ_TIMER, 0, 0 };
    line("bind_virq timer", evtchn(EVTCHNOP_bind_virq, &bv));
    line("bind_virq timer again", evtchn(EVTCHNOP_bind_virq, &bv));
    /* the PIT ticking (~1 kHz) before anything programmed the PIC: its IRQ 0 must
     * not reach the guest as an exception while it blocks */
    outb_(0x43, 0x34);
    outb_(0x40, 1193 & 0xff);
    outb_(0x40, 1193 >> 8);
    unsigned long long t0 = now_ns(), deadline = t0 + 2000000;   /* 2 ms */
    line("set_timer_op", hypercall(__HYPERVISOR_set_timer_op, (u32)deadline, (u32)(deadline >> 32), 0, 0, 0));
    u32 before = upcalls;
    line("block", hypercall(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0, 0, 0));
    line("woken by the timer port", upcalls > before && (seen >> bv.port & 1));
    line("no earlier than the deadline", now_ns() >= deadline);
    /* IRQ 0 came meanwhile, bound to nothing: it waits for its pirq to be bound */
    struct evtchn_bind_pirq bp0 = { 0, 0, 0 };
    seen = 0;
    line("bind_pirq 0", evtchn(EVTCHNOP_bind_pirq, &bp0));
    line("irq 0 there once bound", (seen | SI->evtchn_pending[0]) >> bp0.port & 1);
    /* blocking with no timer at all: IRQ 0, once the PIC is told the last one ended */
    V0.evtchn_upcall_mask = 1;
    SI->evtchn_pending[0] &= ~(1u << bp0.port);
    seen = 0;
    struct physdev_eoi eoi = { 0 };
    line("eoi", hypercall(__HYPERVISOR_physdev_op, PHYSDEVOP_eoi, (u32)&eoi, 0, 0, 0));
    line("block without a timer", hypercall(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0, 0, 0));
    line("woken by irq 0", seen >> bp0.port & 1);
    outb_(0x43, 0x30);                                /* the PIT quiet again (one shot) */

    /* closing one end leaves the other unbound: sends to it are dropped */
    struct evtchn_close cl = { b };
    line("close", evtchn(EVTCHNOP_close, &cl));
    line("send on the unbound end", send(a));
    line("send on the closed port", send(b));
    struct evtchn_status st = { DOMID_SELF, a, 0, 0, { { 0 } } };
    line("status", evtchn(EVTCHNOP_status, &st));
    line("status is unbound", st.status == EVTCHNSTAT_unbound);
    line("send on port 0", send(0));
    line("bind_pirq 99", ({ struct evtchn_bind_pirq bp = { 99, 0, 0 }; evtchn(EVTCHNOP_bind_pirq, &bp); }));
    shutdown();
    return 0;
}
