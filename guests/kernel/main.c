/* Kernel entry: Multiboot information, descriptor tables, memory, timer,
 * the first process. */
#include "kernel.h"

static char cmdline[256];

void kmain(uint32_t magic, uint32_t mbi_phys)
{
    uint64_t boot_tsc = arch_rdtsc();
    kstats.boot_tsc_lo = (uint32_t)boot_tsc;
    kstats.boot_tsc_hi = (uint32_t)(boot_tsc >> 32);
    serial_init();
    if (magic != MB_BOOT_MAGIC)
        panic("not started by a Multiboot loader (eax=0x%08x)", magic);
    /* Only the first 8 MiB are mapped until mm_init builds the direct map. */
    if (mbi_phys >= (8u << 20))
        panic("Multiboot information above 8 MiB (0x%08x)", mbi_phys);
    struct mb_info *mbi = P2V(mbi_phys);
    if ((mbi->flags & 4) && mbi->cmdline) {
        if (mbi->cmdline >= (8u << 20))
            panic("kernel command line above 8 MiB");
        strncpy0(cmdline, P2V(mbi->cmdline), sizeof(cmdline));
    }

    char val[16];
    int shared = 0;
    if (cmdline_get(cmdline, "gdt", val, sizeof(val))) {
        shared = strcmp(val, "shared") == 0;
        if (!shared && strcmp(val, "page") != 0) {
            kprintf("kernel: gdt must be 'page' or 'shared', not '%s'\n", val);
            machine_exit(2);
        }
    }
    desc_init(shared);
    mm_init(mbi);
    virtio_init();               /* a virtio console is the console from here on */

    uint32_t hz = 100;
    if (cmdline_get(cmdline, "hz", val, sizeof(val))) {
        const char *end;
        hz = parse_u32(val, &end);
        if (*end || hz < 10 || hz > 10000) {
            kprintf("kernel: hz must be a number from 10 to 10000, not '%s'\n", val);
            machine_exit(2);
        }
    }
    timer_hz = hz;
    kprintf("ringvisor teaching kernel (timer %u Hz)\n", hz);

    proc_init();
    trap_init(hz);
    serial_enable_rx_irq();
    start_init(cmdline);
    idle_loop();
}
