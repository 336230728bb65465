/* The balloon driver: the kernel gives frames back to the hypervisor when
 * the toolstack lowers the domain's memory target (`xl mem-set`, xenstore's
 * memory/target), and takes them again when it rises -- Xen's balloon driver,
 * at its simplest.  The frames are taken from the kernel's own allocator, so
 * nothing else uses them while they are out, and handed to a device
 * (guests/include/privcmd.h: the PV runtime's, guests/pv/balloon.c, which
 * says how far the domain is from its target and does the memory_op).  It
 * looks once a second, from the idle loop: never while a process runs.  On
 * a machine without the device (a bare PC) it looks once and stops. */
#include "kernel.h"
#include "privcmd.h"

#define MAX_HELD 8192                    /* frames out at most (32 MiB) */
#define RESERVE  256                     /* frames it keeps free (1 MiB) for its processes
                                            and page tables: below, the target waits, as
                                            Linux's balloon stops where it cannot allocate */

static uint32_t held[MAX_HELD];          /* physical addresses of the frames out */
static uint32_t nheld, last_tick;
static int absent;

void balloon_poll(void)
{
    if (absent || ticks - last_tick < timer_hz)
        return;
    last_tick = ticks;
    if (inl(PRIVCMD_ID_PORT) != PRIVCMD_ID) {
        absent = 1;
        return;
    }
    int32_t delta = (int32_t)inl(BALLOON_PORT);
    while (delta > 0 && nheld < MAX_HELD && frames_free() > RESERVE) {
        uint32_t f = frame_alloc(0);
        if (!f)
            break;
        outl(BALLOON_RELEASE, f);
        if (inl(BALLOON_RELEASE) != 0) {
            frame_put(f);
            break;
        }
        held[nheld++] = f;
        delta--;
    }
    while (delta < 0 && nheld) {
        uint32_t f = held[nheld - 1];
        outl(BALLOON_RECLAIM, f);
        if (inl(BALLOON_RECLAIM) != 0)
            break;                       /* no memory for it now: next time */
        nheld--;
        frame_put(f);
        delta++;
    }
}
