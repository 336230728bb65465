/* The privcmd device's back: the runtime issues the hypercall a user program
 * asked for through the kernel (guests/include/privcmd.h), with this domain's
 * identity, and keeps the result for the kernel to read.  Only the management
 * hypercalls pass (domctl, sysctl, xen_version): the others would change this
 * kernel's own state behind its back (Linux's privcmd lets root do that).  The
 * argument pointers are the user program's: the hypervisor reads and writes
 * them under the current page tables, as Xen does a privcmd caller's. */
#include "pv.h"
#include "privcmd.h"

static uint32_t result;

static long hypercall5(uint32_t op, const uint32_t *a)
{
    long r;
    uint32_t b = a[0], c = a[1], d = a[2], s = a[3], di = a[4];
    __asm__ volatile("int $0x82"
                     : "=a"(r), "+b"(b), "+c"(c), "+d"(d), "+S"(s), "+D"(di)
                     : "0"(op)
                     : "memory");
    return r;
}

void privcmd_out(uint32_t linear)
{
    const struct privcmd_hypercall *h = (const struct privcmd_hypercall *)linear;
    uint32_t args[5];
    for (int i = 0; i < 5; i++)
        args[i] = h->arg[i];
    switch (h->op) {
    case __HYPERVISOR_domctl:
    case __HYPERVISOR_sysctl:
    case __HYPERVISOR_xen_version:
        result = (uint32_t)hypercall5(h->op, args);
        break;
    default:
        result = (uint32_t)-PRIVCMD_ENOSYS;
    }
}

uint32_t privcmd_in(uint32_t port)
{
    return port == PRIVCMD_ID_PORT ? PRIVCMD_ID : result;
}
