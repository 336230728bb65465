/* evping: the inter-domain event-channel round trip, measured from a DomU.
 *
 * Two domains run this image: `role=ping` and `role=pong` (command line),
 * with `n=N` round trips.  They meet as Xen's split drivers do, through
 * xenstore (the PV runtime's xenbus client, guests/pv/xenbus.c) -- the
 * toolstack that created them names each one's peer in its
 * `data/evping/peer`:
 *
 *   ping  EVTCHNOP_alloc_unbound(DOMID_SELF, remote = peer) -> port;
 *         writes data/evping/port; waits for pong's first event;
 *   (the toolstack copies ping's port to pong's data/evping/port)
 *   pong  EVTCHNOP_bind_interdomain(peer, port) -> its end; sends one
 *         event (bound); then N times: wait, send back;
 *   ping  N times: send, wait; prints the guest cycles per round trip
 *         (its TSC: one instruction a cycle, every domain's and the
 *         hypervisor's guest work included) between `evping: start` and
 *         `evping: done` (the benchmark takes the wall time between them).
 *
 * `role=loop` is the same round trip inside one domain (both ends its own:
 * an event without a domain switch), the baseline.  A refused hypercall
 * (the security policy: DomUs talk only to Domain 0 unless it says
 * otherwise) is printed with Xen's error code, and the domain shuts down.
 * Waiting is SCHEDOP_block, which gives the CPU up until an event comes.
 * Output goes to the console ring (io/console.h), as a DomU's console does. */
#include "pv.h"
#include "pvfront.h"

#define SI ((volatile shared_info_t *)PV_SHARED_INFO_VA)
#define V0 (SI->vcpu_info[0])
#define START ((const volatile start_info_t *)PV_START_INFO_VA)
#define barrier() __asm__ volatile("" ::: "memory")

extern void evping_upcall(void);
static volatile uint32_t seen[2];          /* ports whose events came (ports 0..63) */

/* -- events ----------------------------------------------------------------------- */
void evping_on_upcall(void)
{
    V0.evtchn_upcall_pending = 0;
    uint32_t sel = __atomic_exchange_n(&V0.evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
    for (uint32_t w = 0; w < 2; w++) {
        if (!(sel >> w & 1))
            continue;
        uint32_t ready = SI->evtchn_pending[w] & ~SI->evtchn_mask[w];
        __atomic_fetch_and(&SI->evtchn_pending[w], ~ready, __ATOMIC_SEQ_CST);
        seen[w] |= ready;
    }
}

void pv_notify(uint32_t port)
{
    struct evtchn_send s = { .port = port };
    HYPERVISOR_event_channel_op(EVTCHNOP_send, &s);
}

void pv_yield(void)
{
    HYPERVISOR_sched_op(SCHEDOP_yield, 0);
}

/* Wait for an event on port: look with events masked, block if none came
 * (SCHEDOP_block unmasks and returns at once if one is pending). */
static void wait_port(uint32_t port)
{
    uint32_t w = port / 32, bit = 1u << port % 32;
    for (;;) {
        V0.evtchn_upcall_mask = 1;
        barrier();
        if (seen[w] & bit) {
            seen[w] &= ~bit;
            V0.evtchn_upcall_mask = 0;
            barrier();
            return;
        }
        HYPERVISOR_sched_op(SCHEDOP_block, 0);
    }
}

/* -- the console ring ------------------------------------------------------------- */
static void puts_(const char *s)
{
    volatile struct xencons_interface *c = (volatile struct xencons_interface *)PV_CONSOLE_VA;
    uint32_t port = START->console.domU.evtchn;
    for (; *s; s++) {
        while (c->out_prod - c->out_cons >= XENCONS_OUT_SIZE)
            pv_yield();
        c->out[c->out_prod % XENCONS_OUT_SIZE] = *s;
        barrier();
        c->out_prod++;
    }
    pv_notify(port);
}

static void putu(uint64_t v)
{
    char b[24];
    int i = 23;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    puts_(b + i);
}

static void puti(long v)
{
    if (v < 0) {
        puts_("-");
        putu((uint32_t)-v);
    } else {
        putu((uint32_t)v);
    }
}

static void line2(const char *a, long v, const char *b)
{
    puts_(a);
    puti(v);
    puts_(b);
}

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static void stop(uint32_t reason)
{
    struct sched_shutdown sd = { reason };
    HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd);
    for (;;)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
}

static void fail(const char *what, long err)
{
    puts_("evping: ");
    line2(what, err, "\n");
    stop(SHUTDOWN_crash);
}

/* -- the command line and xenstore ------------------------------------------------ */
static const char *after(const char *key)
{
    const volatile int8_t *s = START->cmd_line;
    for (uint32_t i = 0; i < MAX_GUEST_CMDLINE && s[i]; i++) {
        if (i && s[i - 1] != ' ')
            continue;
        uint32_t k = 0;
        while (key[k] && s[i + k] == key[k])
            k++;
        if (!key[k])
            return (const char *)&s[i + k];
    }
    return 0;
}

static long number(const char *p)
{
    long v = 0;
    if (!p || *p < '0' || *p > '9')
        return -1;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    return v;
}

static int is(const char *p, const char *word)
{
    while (*word && *p == *word) {
        p++;
        word++;
    }
    return !*word && (*p == 0 || *p == ' ');
}

/* A number the toolstack writes below our data/ (it may come late). */
static long wait_node(const char *path)
{
    long v;
    while ((v = xs_read_num(path)) < 0)
        pv_yield();
    return v;
}

static long evtchn(uint32_t cmd, void *arg)
{
    return HYPERVISOR_event_channel_op(cmd, arg);
}

/* N round trips from this end (send, wait); the cycles each took. */
static void ping_loop(uint32_t port, long n)
{
    puts_("evping: start\n");
    uint64_t t0 = rdtsc();
    for (long i = 0; i < n; i++) {
        pv_notify(port);
        wait_port(port);
    }
    uint64_t cycles = rdtsc() - t0;
    puts_("evping: done\n");
    line2("[timing] evping: ", n, " round trips, ");
    putu(cycles / (uint64_t)n);
    puts_(" cycles/round trip\n");
}

/* A GDT of our own (flat code and data, DPL 0: the hypervisor runs them at ring 1):
 * the event callback's code segment must be the guest's, not Xen's flat ring-1 one. */
static uint64_t gdt[512] __attribute__((aligned(4096))) = {
    0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull,
};
#define KERNEL_CS (0x08 | 1)
#define KERNEL_DS (0x10 | 1)

static void own_segments(void)
{
    xen_pfn_t frame = (xen_pfn_t)HYPERVISOR_rv_machine_op(RV_VA_TO_MFN, (uint32_t)gdt, 0);
    long r = HYPERVISOR_set_gdt(&frame, 3);
    if (r < 0) {
        struct sched_shutdown sd = { SHUTDOWN_crash };
        HYPERVISOR_sched_op(SCHEDOP_shutdown, &sd);
    }
    __asm__ volatile("pushl %0\n\tpushl $1f\n\tlret\n1:\n\t"
                     "movl %1, %%eax\n\tmovl %%eax, %%ds\n\tmovl %%eax, %%es\n\t"
                     "movl %%eax, %%ss"
                     :: "i"(KERNEL_CS), "i"(KERNEL_DS) : "eax", "memory");
}

void evping_main(void)
{
    own_segments();
    HYPERVISOR_set_callbacks(KERNEL_CS, evping_upcall, KERNEL_CS, evping_upcall);
    V0.evtchn_upcall_mask = 0;
    const char *role = after("role=");
    long n = number(after("n="));
    if (!role || n <= 0) {
        puts_("evping: usage: role=ping|pong|loop n=N (N > 0)\n");
        stop(SHUTDOWN_crash);
    }
    if (is(role, "loop")) {
        struct evtchn_alloc_unbound au = { DOMID_SELF, DOMID_SELF, 0 };
        long r = evtchn(EVTCHNOP_alloc_unbound, &au);
        if (r < 0)
            fail("alloc_unbound: ", r);
        struct evtchn_bind_interdomain bi = { DOMID_SELF, au.port, 0 };
        if ((r = evtchn(EVTCHNOP_bind_interdomain, &bi)) < 0)
            fail("bind_interdomain: ", r);
        /* the far end answers from the upcall's point of view: send on one end,
         * take it on the other, send back */
        puts_("evping: start\n");
        uint64_t t0 = rdtsc();
        for (long i = 0; i < n; i++) {
            pv_notify(bi.local_port);
            wait_port(au.port);
            pv_notify(au.port);
            wait_port(bi.local_port);
        }
        uint64_t cycles = rdtsc() - t0;
        puts_("evping: done\n");
        line2("[timing] evping: ", n, " round trips, ");
        putu(cycles / (uint64_t)n);
        puts_(" cycles/round trip\n");
    } else if (is(role, "ping")) {
        long peer = wait_node("data/evping/peer");
        struct evtchn_alloc_unbound au = { DOMID_SELF, (domid_t)peer, 0 };
        long r = evtchn(EVTCHNOP_alloc_unbound, &au);
        if (r < 0)
            fail("alloc_unbound for the peer: ", r);
        char num[12];
        int i = 11;
        num[i] = 0;
        uint32_t p = au.port;
        do {
            num[--i] = (char)('0' + p % 10);
            p /= 10;
        } while (p);
        xs_write("data/evping/port", num + i);
        wait_port(au.port);                      /* pong bound its end */
        line2("evping: bound to domain ", peer, "\n");
        ping_loop(au.port, n);
    } else if (is(role, "pong")) {
        long peer = wait_node("data/evping/peer");
        long port = wait_node("data/evping/port");
        struct evtchn_bind_interdomain bi = { (domid_t)peer, (evtchn_port_t)port, 0 };
        long r = evtchn(EVTCHNOP_bind_interdomain, &bi);
        if (r < 0)
            fail("bind_interdomain to the peer: ", r);
        line2("evping: bound to domain ", peer, "\n");
        pv_notify(bi.local_port);
        for (long i = 0; i < n; i++) {
            wait_port(bi.local_port);
            pv_notify(bi.local_port);
        }
        puts_("evping: done\n");
    } else {
        puts_("evping: usage: role=ping|pong|loop n=N (N > 0)\n");
        stop(SHUTDOWN_crash);
    }
    stop(SHUTDOWN_poweroff);
}
