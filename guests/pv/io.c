/* Port I/O of a para-virtualized kernel: pvcc turns every `in`/`out` in C
 * into a call of pv_in/pv_out.  A domain with I/O privilege (start_info says
 * SIF_INITDOMAIN: Domain 0, or a lone guest) does the real instruction,
 * which the hypervisor emulates on the machine's devices.  A DomU of the
 * hypervisor has no devices: here are the front-ends that stand for the
 * ones the kernel programs, on Xen's para-virtual interfaces --
 *
 *   COM1 (0x3F8)   the console ring shared with Domain 0's console back-end
 *                  (io/console.h): THR appends to `out`, RBR takes from `in`,
 *                  LSR says whether there is room and data; IRQ 4 is the
 *                  ring's event channel (only while the kernel enabled the
 *                  receive interrupt in IER);
 *   PIC (0x20/0xA0) the vector bases (ICW2) and the masks (OCW1), which mask
 *                  the event-channel ports of the IRQs;
 *   PIT (0x40/0x43) channel 0's period becomes VIRQ_TIMER as a periodic vCPU
 *                  timer (VCPUOP_set_periodic_timer), delivered as IRQ 0;
 *   isa-debug-exit (0xF4) shuts the domain down: poweroff for status 0,
 *                  crash otherwise;
 *   ATA (0x1F0-0x1F7, 0x3F6; 0x170-0x177, 0x376) the disks of the two IDE
 *                  channels: blkfront (blkfront.c), the block split driver's
 *                  front-end, one ring per disk (xvda..xvdd).
 * In every domain, Domain 0 too, the privcmd device (0x7C0, 0x7C4: 32-bit
 * only) is the runtime's (privcmd.c): a user program's management hypercall;
 * and the balloon (0x7C8-0x7D3, balloon.c).
 * Other ports read as 0xFF and ignore writes (an absent device). */
#include "pv.h"
#include "pvfront.h"
#include "privcmd.h"

uint32_t pv_port_in(uint32_t size, uint32_t port);
void pv_port_out(uint32_t size, uint32_t port, uint32_t v);

extern uint8_t pv_port_irq[];
extern uint8_t pv_irq_vector[];

#define PIT_HZ_NUM 8381               /* ns per PIT tick x 10 (1e10 / 1193182) */

static int io_mode;                   /* 0: not yet known, 1: privileged, 2: front-ends */
static volatile struct xencons_interface *cons;
static uint32_t cons_port;
static uint8_t ier, lcr, dll = 1, dlm, pic_mask[2] = {0xFF, 0xFF}, icw_step[2];
static uint16_t pit_latch;
static int pit_byte, timer_port;

static const volatile start_info_t *start_info(void)
{
    return (const volatile start_info_t *)PV_START_INFO_VA;
}

static int privileged(void)
{
    if (!io_mode)
        io_mode = (start_info()->flags & SIF_INITDOMAIN) ? 1 : 2;
    return io_mode == 1;
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

/* Make an event of our own pending, as the hypervisor would (Linux's
 * resend_irq_on_evtchn): the upcall takes it when events are next unmasked. */
static void self_raise(uint32_t port)
{
    volatile uint32_t *pending = (volatile uint32_t *)PV_EVTCHN_PENDING_VA;
    __asm__ volatile("lock btsl %1, %0" : "+m"(pending[port / 32]) : "r"(port % 32) : "memory");
    __asm__ volatile("lock btsl %1, %0" : "+m"(*(volatile uint32_t *)PV_PENDING_SEL_VA)
                     : "r"(port / 32) : "memory");
    *(volatile uint8_t *)PV_UPCALL_PENDING_VA = 1;
}

void pv_port_mask(uint32_t port, int masked)
{
    volatile uint32_t *mask = (volatile uint32_t *)PV_EVTCHN_MASK_VA;
    if (masked) {
        __asm__ volatile("lock btsl %1, %0" : "+m"(mask[port / 32]) : "r"(port % 32) : "memory");
    } else {
        struct evtchn_unmask u = { .port = port };
        HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &u);
    }
}

/* -- the console front-end -------------------------------------------------------- */
static void cons_init(void)
{
    if (cons)
        return;
    cons = (volatile struct xencons_interface *)PV_CONSOLE_VA;
    cons_port = start_info()->console.domU.evtchn;
}

static int cons_has_input(void)
{
    return cons->in_cons != cons->in_prod;
}

static void cons_set_ier(uint8_t v)
{
    ier = v;
    if (!cons_port)
        return;
    if (v & 1) {
        pv_port_irq[cons_port] = 4 + 1;
        if (cons_has_input())
            self_raise(cons_port);    /* data waits: the receive interrupt is due */
    } else {
        pv_port_irq[cons_port] = 0;   /* events on the ring are not interrupts now */
    }
}

static uint32_t cons_in(uint32_t reg)
{
    cons_init();
    if (lcr & 0x80 && reg < 2)
        return reg ? dlm : dll;        /* DLAB: the divisor latch */
    switch (reg) {
    case 0: {                          /* RBR */
        if (!cons_has_input())
            return 0;
        uint32_t c = cons->in[cons->in_cons % XENCONS_IN_SIZE];
        __asm__ volatile("" ::: "memory");
        cons->in_cons++;
        pv_notify(cons_port);             /* room for the back-end */
        return c;
    }
    case 1:
        return ier;
    case 2:
        return 0x01;                   /* IIR: nothing pending, no FIFOs */
    case 3:
        return lcr;
    case 5: {                          /* LSR */
        uint32_t room = cons->out_prod - cons->out_cons < XENCONS_OUT_SIZE;
        if (!room)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);   /* let the back-end drain it */
        return (room ? 0x60 : 0) | (cons_has_input() ? 0x01 : 0);
    }
    default:
        return 0;
    }
}

static void cons_out(uint32_t reg, uint32_t v)
{
    cons_init();
    if (lcr & 0x80 && reg < 2) {       /* DLAB: the divisor latch (the speed: no meaning here) */
        if (reg)
            dlm = (uint8_t)v;
        else
            dll = (uint8_t)v;
        return;
    }
    if (reg == 3) {
        lcr = (uint8_t)v;
        return;
    }
    if (reg == 0) {                    /* THR */
        while (cons->out_prod - cons->out_cons >= XENCONS_OUT_SIZE)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
        cons->out[cons->out_prod % XENCONS_OUT_SIZE] = (char)v;
        __asm__ volatile("" ::: "memory");
        cons->out_prod++;
        pv_notify(cons_port);
    } else if (reg == 1) {
        cons_set_ier((uint8_t)v);
    }
}

/* -- the PIC: vector bases and masks ------------------------------------------------ */
static void pic_out(int which, uint32_t reg, uint32_t v)
{
    if (reg == 0) {
        if (v & 0x10)
            icw_step[which] = 2;       /* ICW1: ICW2 follows on the data port */
        return;                        /* EOI and OCW3: nothing to do */
    }
    if (icw_step[which] == 2) {        /* ICW2: the vector base */
        icw_step[which] = 3;
        for (int i = 0; i < 8; i++)
            pv_irq_vector[which * 8 + i] = (uint8_t)((v & 0xF8) + i);
        return;
    }
    if (icw_step[which] == 3) {        /* ICW3, then ICW4 */
        icw_step[which] = 4;
        return;
    }
    if (icw_step[which] == 4) {
        icw_step[which] = 0;
        return;
    }
    pic_mask[which] = (uint8_t)v;      /* OCW1 */
    if (which == 0 && timer_port)
        pv_port_mask((uint32_t)timer_port, v & 1);
}

/* -- the PIT: channel 0's period ----------------------------------------------------- */
static void pit_out(uint32_t port, uint32_t v)
{
    if (port == 0x43) {
        pit_byte = 0;
        return;
    }
    if (port != 0x40)
        return;
    if (pit_byte == 0) {
        pit_latch = (uint16_t)(v & 0xFF);
        pit_byte = 1;
        return;
    }
    pit_latch |= (uint16_t)((v & 0xFF) << 8);
    pit_byte = 0;
    uint32_t ticks = pit_latch ? pit_latch : 65536;
    if (!timer_port) {
        struct evtchn_bind_virq b = { .virq = VIRQ_TIMER, .vcpu = 0 };
        if (HYPERVISOR_event_channel_op(EVTCHNOP_bind_virq, &b) < 0)
            pv_panic("pv: no timer event channel\n");
        timer_port = (int)b.port;
        pv_port_irq[b.port] = 0 + 1;
        pv_port_mask(b.port, pic_mask[0] & 1);
    }
    struct vcpu_set_periodic_timer t = { .period_ns = ticks * PIT_HZ_NUM / 10 };
    if (pv_hypercall4(__HYPERVISOR_vcpu_op, VCPUOP_set_periodic_timer, 0, (uint32_t)&t, 0) < 0)
        pv_panic("pv: the periodic timer was refused\n");
}

/* -- what pvcc calls ------------------------------------------------------------------- */
uint32_t pv_in(uint32_t size, uint32_t port)
{
    if (size == 4 && (port == PRIVCMD_PORT || port == PRIVCMD_ID_PORT))
        return privcmd_in(port);            /* in every domain: the hypervisor decides */
    if (size == 4 && (port == BALLOON_PORT || port == BALLOON_RELEASE || port == BALLOON_RECLAIM))
        return balloon_in(port);
    if (privileged())
        return pv_port_in(size, port);
    uint32_t ones = size == 1 ? 0xFF : size == 2 ? 0xFFFF : 0xFFFFFFFF, reg;
    if (port >= 0x3F8 && port < 0x400)
        return cons_in(port - 0x3F8);
    if (blkfront_port(port, &reg) >= 0)
        return blkfront_in(size, port);
    if (port == 0x21 || port == 0xA1)
        return pic_mask[port == 0xA1];
    if (port == 0x20 || port == 0xA0)
        return 0;                      /* IRR/ISR: nothing in service */
    return ones;
}

void pv_out(uint32_t size, uint32_t port, uint32_t v)
{
    if (size == 4 && port == PRIVCMD_PORT) {
        privcmd_out(v);
        return;
    }
    if (size == 4 && (port == BALLOON_RELEASE || port == BALLOON_RECLAIM)) {
        balloon_out(port, v);
        return;
    }
    if (privileged()) {
        pv_port_out(size, port, v);
        return;
    }
    uint32_t reg;
    if (port >= 0x3F8 && port < 0x400)
        cons_out(port - 0x3F8, v & 0xFF);
    else if (blkfront_port(port, &reg) >= 0)
        blkfront_out(size, port, v);
    else if (port == 0x20 || port == 0x21 || port == 0xA0 || port == 0xA1)
        pic_out(port >= 0xA0, port & 1, v & 0xFF);
    else if (port >= 0x40 && port <= 0x43)
        pit_out(port, v & 0xFF);
    else if (port == 0xF4) {
        struct sched_shutdown s = { (v & 0xFF) ? SHUTDOWN_crash : SHUTDOWN_poweroff };
        for (;;)
            HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
    }
}
