/* The balloon device's back (guests/include/privcmd.h): how far the domain is
 * from the target the toolstack wrote in its xenstore memory/target (KiB);
 * and each frame the kernel gives back
 * (XENMEM_decrease_reservation: a hole in the physmap, the machine frame
 * back in the hypervisor's pool) or takes again (XENMEM_populate_physmap: a
 * fresh, scrubbed frame at the same place).  Only in a DomU with a xenstore
 * ring: Domain 0 and a lone guest have no target. */
#include "pv.h"
#include "pvfront.h"
#include "privcmd.h"

static uint32_t result;

static const volatile start_info_t *si(void)
{
    return (const volatile start_info_t *)PV_START_INFO_VA;
}

static uint32_t out;                      /* frames given back and not taken again */

/* The target is the kernel's RAM, as Linux's balloon counts it: start_info's
 * nr_pages less what is out (the domain's other pages -- its console and
 * xenstore rings -- are not the kernel's to give). */
static int32_t frames_to_give(void)
{
    if ((si()->flags & SIF_INITDOMAIN) || !si()->store_evtchn)
        return 0;
    long target_kib = xs_read_num("memory/target");
    if (target_kib <= 0)
        return 0;
    return (int32_t)(si()->nr_pages - out) - (int32_t)(target_kib / 4);
}

uint32_t balloon_in(uint32_t port)
{
    return port == BALLOON_PORT ? (uint32_t)frames_to_give() : result;
}

void balloon_out(uint32_t port, uint32_t phys)
{
    xen_pfn_t gpfn = phys >> 12;
    struct xen_memory_reservation r = { (uint32_t)&gpfn, 1, 0, 0, DOMID_SELF };
    long n = pv_hypercall4(__HYPERVISOR_memory_op,
                           port == BALLOON_RELEASE ? XENMEM_decrease_reservation
                                                   : XENMEM_populate_physmap,
                           (uint32_t)&r, 0, 0);
    result = n == 1 ? 0 : (uint32_t)-1;
    if (n == 1)
        out += port == BALLOON_RELEASE ? 1 : (uint32_t)-1;
}
