/* spin: a CPU-bound DomU, for the credit scheduler's shares on real guests
 * (tests/test_xen_smp.py).  It says it started, then counts forever; with
 * "idle=1" on its command line it blocks forever instead, bound to no event:
 * a Domain 0 that is no load. */
#include "pvlib.h"

volatile u32 count;

int main(start_info_t *si)
{
    puts_("spin: start\n");
    if (number_after((const char *)si->cmd_line, "idle="))
        for (;;)
            hypercall(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0, 0, 0);
    for (;;)
        count++;
}
