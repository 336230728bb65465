/* pv.h: the PV runtime's hypercall wrappers (Xen's x86_32 convention:
 * int $0x82, number in eax, arguments in ebx, ecx, edx, esi, edi, result in
 * eax).  ringvisor preserves the argument registers, Xen may not: they are
 * declared clobbered either way. */
#ifndef RV_PV_H
#define RV_PV_H

#include <stdint.h>
#include "pv/xen_abi.h"

static inline long pv_hypercall4(uint32_t op, uint32_t a1, uint32_t a2, uint32_t a3,
                                 uint32_t a4)
{
    long r;
    __asm__ volatile("int $0x82"
                     : "=a"(r), "+b"(a1), "+c"(a2), "+d"(a3), "+S"(a4)
                     : "0"(op)
                     : "memory");
    return r;
}

#define HYPERVISOR_set_trap_table(t) \
    pv_hypercall4(__HYPERVISOR_set_trap_table, (uint32_t)(t), 0, 0, 0)
#define HYPERVISOR_set_gdt(frames, n) \
    pv_hypercall4(__HYPERVISOR_set_gdt, (uint32_t)(frames), (n), 0, 0)
#define HYPERVISOR_set_callbacks(ecs, eip, fcs, fip) \
    pv_hypercall4(__HYPERVISOR_set_callbacks, (ecs), (uint32_t)(eip), (fcs), (uint32_t)(fip))
#define HYPERVISOR_event_channel_op(cmd, arg) \
    pv_hypercall4(__HYPERVISOR_event_channel_op, (cmd), (uint32_t)(arg), 0, 0)
#define HYPERVISOR_console_io(cmd, n, buf) \
    pv_hypercall4(__HYPERVISOR_console_io, (cmd), (n), (uint32_t)(buf), 0)
#define HYPERVISOR_sched_op(cmd, arg) \
    pv_hypercall4(__HYPERVISOR_sched_op, (cmd), (uint32_t)(arg), 0, 0)
#define HYPERVISOR_rv_machine_op(cmd, a, b) \
    pv_hypercall4(__HYPERVISOR_rv_machine_op, (cmd), (a), (b), 0)

/* pvcc turns `lgdt m` and `lidt m` in C into calls of these with &m. */
struct __attribute__((packed)) pv_dtr {
    uint16_t limit;
    uint32_t base;
};
void pv_lgdt(const struct pv_dtr *d);
void pv_lidt(const struct pv_dtr *d);
/* ... and `mov r, %cr3` in C into a call of this with r. */
void pv_write_cr3(uint32_t cr3);

/* pvcc turns `in` and `out` in C into calls of these (io.c). */
uint32_t pv_in(uint32_t size, uint32_t port);
void pv_out(uint32_t size, uint32_t port, uint32_t value);

void pv_upcall(void);                   /* upcall.S: the event callback */
void pv_failsafe(void);                 /* upcall.S: the failsafe callback */
void pv_panic(const char *msg) __attribute__((noreturn));

#endif
