/* The privcmd device: how a user program of the teaching kernel issues a
 * management hypercall (domctl, sysctl, xen_version) -- Linux's
 * /dev/xen/privcmd IOCTL_PRIVCMD_HYPERCALL, as a device behind two I/O ports
 * the kernel drives (guests/kernel/privcmd.c) and the para-virtual runtime
 * serves with the hypercall itself (guests/pv/privcmd.c).  On a machine
 * without a hypervisor nothing answers at the ports (they read all ones):
 * the system call says ENODEV.  Whether the caller may do what it asks is
 * the hypervisor's decision, not the kernel's nor the runtime's. */
#ifndef RV_PRIVCMD_H
#define RV_PRIVCMD_H

#define PRIVCMD_PORT    0x7C0      /* out: linear address of a privcmd_hypercall; in: its result */
#define PRIVCMD_ID_PORT 0x7C4      /* in: PRIVCMD_ID where the device is */
#define PRIVCMD_ID      0x44434D50u   /* "PMCD" */

#define PRIVCMD_ENODEV  19         /* no hypervisor serves the device */
#define PRIVCMD_EFAULT  14         /* the argument block is not readable */
#define PRIVCMD_ENOSYS  38         /* not a hypercall the device passes on */

/* The balloon (guests/kernel/balloon.c, guests/pv/balloon.c), a device of the same
 * family (present where PRIVCMD_ID_PORT answers): */
#define BALLOON_PORT    0x7C8      /* in: frames to give back (> 0) or take back (< 0) */
#define BALLOON_RELEASE 0x7CC      /* out: a frame's physical address, given back to the
                                      hypervisor; in: 0 if it was, else -1 */
#define BALLOON_RECLAIM 0x7D0      /* out: a frame given back before, taken again; in: as above */

struct privcmd_hypercall {
    unsigned int op;               /* __HYPERVISOR_domctl, _sysctl or _xen_version */
    unsigned int arg[5];           /* as the hypercall takes them (pointers: the caller's) */
};

#endif
