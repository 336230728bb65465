/* xlist: the domains of the Xen hypervisor, listed from user space (Domain
 * 0's `xl list`, reduced to what the hypervisor itself knows: names live in
 * xenstore).  It asks with management hypercalls through the kernel's
 * privcmd device (syscall privcmd, guests/include/privcmd.h): sysctl
 * physinfo for the machine, then domctl getdomaininfo, which answers for the
 * first domain at or above the id asked, over all the domains.  Whether it
 * may is the hypervisor's check: in Domain 0 it lists; in a DomU the same
 * program is refused (the security module's -EACCES, logged as an AVC
 * record); on a machine without a hypervisor there is no privcmd device. */
#include "ulib.h"
#include "privcmd.h"
#include "pv/xen_abi.h"

static int32_t privcmd(uint32_t op, void *arg)
{
    struct privcmd_hypercall h = { op, { (uint32_t)arg, 0, 0, 0, 0 } };
    return syscall3(SYS_privcmd, (uint32_t)&h, 0, 0);
}

static uint32_t mib(uint64_t pages)
{
    return (uint32_t)(pages >> 8);
}

static int refused(const char *what, int32_t r)
{
    if (r == -PRIVCMD_ENODEV)
        printf("xlist: no hypervisor (%s: privcmd device absent, %d)\n", what, r);
    else
        printf("xlist: %s refused by the hypervisor: %d\n", what, r);
    return 1;
}

static xen_sysctl_t sysctl;
static xen_domctl_t domctl;

int prog_xlist(const char *args)
{
    (void)args;
    sysctl.cmd = XEN_SYSCTL_physinfo;
    sysctl.interface_version = XEN_SYSCTL_INTERFACE_VERSION;
    int32_t r = privcmd(__HYPERVISOR_sysctl, &sysctl);
    int status = 0;
    if (r < 0) {
        status = refused("sysctl physinfo", r);
        if (r == -PRIVCMD_ENODEV)
            return status;
    } else {
        xen_sysctl_physinfo_t *p = &sysctl.u.physinfo;
        printf("xlist: %u CPU, %u MHz, %u MiB, %u MiB free\n", p->nr_cpus, p->cpu_khz / 1000,
               mib(p->total_pages), mib(p->free_pages));
    }
    int listed = 0;
    for (uint32_t next = 0; next < DOMID_FIRST_RESERVED; listed++) {
        domctl.cmd = XEN_DOMCTL_getdomaininfo;
        domctl.interface_version = XEN_DOMCTL_INTERFACE_VERSION;
        domctl.domain = (domid_t)next;
        r = privcmd(__HYPERVISOR_domctl, &domctl);
        if (r == -XEN_ESRCH)
            break;                              /* no domain at or above next */
        if (r < 0)
            return refused("domctl getdomaininfo", r);
        xen_domctl_getdomaininfo_t *d = &domctl.u.getdomaininfo;
        if (!listed)
            printf("   ID   Mem VCPUs  State   Time(s)\n");
        uint32_t f = d->flags;
        char state[7] = "------";
        if (f & XEN_DOMINF_running) state[0] = 'r';
        if (f & XEN_DOMINF_blocked) state[1] = 'b';
        if (f & XEN_DOMINF_paused) state[2] = 'p';
        if (f & XEN_DOMINF_shutdown) state[3] = (f >> XEN_DOMINF_shutdownshift & 255) == SHUTDOWN_crash ? 'c' : 's';
        if (f & XEN_DOMINF_dying) state[5] = 'd';
        uint32_t ds = (uint32_t)(d->cpu_time / 100000000u);     /* tenths of a second */
        printf("%5u %5u %5u %s %7u.%u\n", d->domain, mib(d->tot_pages), d->nr_online_vcpus,
               state, ds / 10, ds % 10);
        next = d->domain + 1u;
    }
    return status;
}
