/* IDT, 8259A PIC, 8253 PIT, and the common trap dispatcher. */
#include "kernel.h"

static uint64_t idt[256];
const uint32_t pic_master_mask = 0xEE;   /* IRQ0 (timer) and IRQ4 (COM1) open */

static const char *const exc_names[32] = {
    "divide error", "debug", "NMI", "breakpoint", "overflow", "bound range exceeded",
    "invalid opcode", "device not available", "double fault", "coprocessor overrun",
    "invalid TSS", "segment not present", "stack fault", "general protection fault",
    "page fault", "exception 15", "x87 error", "alignment check", "machine check",
    "SIMD error", "exception 20", "exception 21", "exception 22", "exception 23",
    "exception 24", "exception 25", "exception 26", "exception 27", "exception 28",
    "exception 29", "exception 30", "exception 31",
};

static void set_gate(int vec, uint32_t handler, uint8_t type_attr)
{
    idt[vec] = (handler & 0xFFFF) | ((uint64_t)SEL_KCODE << 16) |
               ((uint64_t)type_attr << 40) | ((uint64_t)(handler >> 16) << 48);
}

static void pic_init(void)
{
    outb(0x20, 0x11);            /* ICW1: edge, cascade, ICW4 */
    outb(0xA0, 0x11);
    outb(0x21, 0x20);            /* ICW2: master vectors 0x20..0x27 */
    outb(0xA1, 0x28);            /*       slave  vectors 0x28..0x2F */
    outb(0x21, 0x04);            /* ICW3: slave on IRQ2 */
    outb(0xA1, 0x02);
    outb(0x21, 0x01);            /* ICW4: 8086 mode */
    outb(0xA1, 0x01);
    outb(0x21, pic_master_mask);
    outb(0xA1, 0xFF);
}

static void pit_init(uint32_t hz)
{
    uint32_t divisor = 1193182u / hz;
    outb(0x43, 0x34);            /* channel 0, lo/hi byte, mode 2, binary */
    outb(0x40, divisor & 0xFF);
    outb(0x40, (divisor >> 8) & 0xFF);
}

void trap_init(uint32_t hz)
{
    for (int v = 0; v < 48; v++)
        set_gate(v, trap_vectors[v], 0x8E);    /* interrupt gate, DPL 0 */
    set_gate(0x80, trap_vectors[48], 0xEF);    /* trap gate, DPL 3: int 0x80 */
    struct dtr d = { sizeof(idt) - 1, (uint32_t)idt };
    arch_lidt(&d);
    pic_init();
    pit_init(hz);
}

static void kill_current(struct trapframe *tf, uint32_t addr)
{
    uint32_t v = tf->vector;
    kprintf("kernel: pid %d (%s) killed: %s", current->pid, current->name, exc_names[v]);
    if (v == 14)
        kprintf(" at 0x%08x (%s)", addr, (tf->err & 2) ? "write" : "read");
    else if (v == 13 && tf->err)
        kprintf(" (error 0x%x)", tf->err);
    kprintf(", eip 0x%08x\n", tf->eip);
    proc_exit(KILLED_STATUS(v));
}

static void user_exception(struct trapframe *tf)
{
    uint32_t addr = 0;
    if (tf->vector == 14) {
        addr = arch_read_cr2();
        int r = vm_fault(current, addr, tf->err & 2);
        if (r == 0)
            return;
        if (r == -2) {
            kprintf("kernel: pid %d (%s) killed: out of memory\n", current->pid, current->name);
            proc_exit(KILLED_STATUS(14));
        }
    }
    if (current->fault_handler) {
        /* Deliver to the user handler: push eip, fault address, vector. */
        uint32_t frame[3] = { tf->vector, addr, tf->eip };
        uint32_t sp = tf->esp - sizeof(frame);
        if (copy_to_user(sp, frame, sizeof(frame)) == 0) {
            tf->esp = sp;
            tf->eip = current->fault_handler;
            return;
        }
    }
    kill_current(tf, addr);
}

void trap_dispatch(struct trapframe *tf)
{
    uint32_t v = tf->vector;

    if (v == 0x80) {
        syscall_dispatch(tf);
    } else if (v >= 32 && v < 48) {
        uint32_t irq = v - 32;
        kstats.irqs++;
        if (irq == 0)
            timer_tick();
        else if (irq == 4)
            serial_irq();
        if ((int)irq == virtio_irq_line)
            virtio_irq();
        if (irq == 7 || irq == 15) {
            /* Spurious unless the in-service register says otherwise. */
            uint16_t port = irq == 7 ? 0x20 : 0xA0;
            outb(port, 0x0B);
            if (!(inb(port) & 0x80)) {
                /* A spurious IRQ 15 was still a real request on the master's
                 * cascade input (IRQ 2): the master needs its EOI (Linux's
                 * i8259.c does the same).  A level-triggered PCI line that
                 * drops before the acknowledge makes one. */
                if (irq == 15)
                    outb(0x20, 0x20);
                goto out;
            }
        }
        if (irq >= 8)
            outb(0xA0, 0x20);
        outb(0x20, 0x20);        /* EOI */
    } else if ((tf->cs & 3) == 3) {
        user_exception(tf);
    } else if (v == 14) {
        kpanic_tf(tf, "page fault in kernel mode at 0x%08x", arch_read_cr2());
    } else {
        kpanic_tf(tf, "%s in kernel mode", v < 32 ? exc_names[v] : "unexpected trap");
    }
out:
    /* Preemption point: only on the way back to user mode. */
    if ((tf->cs & 3) == 3) {
        if (need_resched)
            schedule();
        if (current->killed)
            proc_exit(KILLED_STATUS(9));
    }
}
