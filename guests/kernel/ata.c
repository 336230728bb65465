/* The ATA disk on the primary IDE channel, by programmed I/O.
 *
 * Polled: the driver sets nIEN in the device control register and waits on
 * the status register (BSY clear, then DRQ for each sector), so it needs no
 * interrupt handler and works the same on every machine the kernel runs on --
 * QEMU's IDE disk, ringvisor's (ringvisor/hw/devices/ata.py) under any
 * monitor, and the block front-end of the para-virtual runtime, which stands
 * behind these ports in a DomU of `ringvisor xen`.  LBA28, READ/WRITE
 * SECTORS (0x20/0x30), FLUSH CACHE (0xE7), IDENTIFY DEVICE (0xEC) once, on
 * first use: a kernel that never touches the disk never probes it.  Data
 * move as 32-bit words (QEMU's data port takes them; half the port I/O). */
#include "kernel.h"

#define ATA_DATA    0x1F0
#define ATA_ERROR   0x1F1
#define ATA_COUNT   0x1F2
#define ATA_LBA0    0x1F3
#define ATA_LBA1    0x1F4
#define ATA_LBA2    0x1F5
#define ATA_DEVICE  0x1F6
#define ATA_STATUS  0x1F7         /* read: status; write: command */
#define ATA_CONTROL 0x3F6         /* read: alternate status; write: device control */

#define ST_BSY  0x80
#define ST_DRQ  0x08
#define ST_ERR  0x01
#define CTL_NIEN 0x02
#define DEV_LBA 0xE0              /* LBA addressing, device 0 (bits 7 and 5 set, as of old) */

#define WAIT_LOOPS 50000000u

static int ata_state;             /* 0: not probed; 1: a disk; -1: none */
static uint32_t ata_sectors;

/* BSY clear, then (if want_drq) DRQ: 0; an error, no device or no answer: -1.
 * want_drq < 0: only BSY clear, before a command (ERR is the last command's). */
static int ata_wait(int want_drq)
{
    (void)inb(ATA_CONTROL);       /* the 400 ns the device may take to raise BSY */
    for (uint32_t i = 0; i < WAIT_LOOPS; i++) {
        uint8_t s = inb(ATA_STATUS);
        if (s == 0xFF || s == 0)
            return -1;            /* nothing on the bus, or an absent device */
        if (s & ST_BSY)
            continue;
        if (want_drq < 0)
            return 0;
        if (s & ST_ERR)
            return -1;
        if (!want_drq || (s & ST_DRQ))
            return 0;
    }
    return -1;
}

static int ata_probe(void)
{
    if (ata_state)
        return ata_state > 0;
    ata_state = -1;
    outb(ATA_CONTROL, CTL_NIEN);
    outb(ATA_DEVICE, DEV_LBA);
    uint8_t s = inb(ATA_STATUS);
    if (s == 0 || s == 0xFF)
        return 0;
    outb(ATA_STATUS, 0xEC);       /* IDENTIFY DEVICE */
    if (ata_wait(1) < 0)
        return 0;
    uint32_t id[128];
    for (int i = 0; i < 128; i++)
        id[i] = inl(ATA_DATA);
    ata_sectors = id[30];         /* words 60-61: sectors addressable with LBA28 */
    if (!ata_sectors)
        return 0;
    ata_state = 1;
    return 1;
}

/* Sectors of the disk, or -1 without one. */
int32_t ata_size(void)
{
    uint32_t f = arch_irq_save();
    int ok = ata_probe();
    arch_irq_restore(f);
    return ok ? (int32_t)ata_sectors : -1;
}

/* Move n (1..256) sectors at lba to or from buf: 0, or -1 when the disk refused. */
int ata_rw(int write, uint32_t lba, uint32_t n, void *buf)
{
    if (n == 0 || n > 256 || lba >= (1u << 28) || lba + n > (1u << 28))
        return -1;
    uint32_t f = arch_irq_save();
    int r = -1;
    if (!ata_probe() || ata_wait(-1) < 0)
        goto out;
    outb(ATA_DEVICE, DEV_LBA | ((lba >> 24) & 0x0F));
    outb(ATA_COUNT, (uint8_t)n);
    outb(ATA_LBA0, (uint8_t)lba);
    outb(ATA_LBA1, (uint8_t)(lba >> 8));
    outb(ATA_LBA2, (uint8_t)(lba >> 16));
    outb(ATA_STATUS, write ? 0x30 : 0x20);
    uint32_t *p = buf;
    for (uint32_t s = 0; s < n; s++) {
        if (ata_wait(1) < 0)
            goto out;
        for (int w = 0; w < 128; w++) {
            if (write)
                outl(ATA_DATA, *p++);
            else
                *p++ = inl(ATA_DATA);
        }
    }
    r = ata_wait(0);              /* a write is done when the last sector is */
out:
    arch_irq_restore(f);
    return r;
}

int ata_flush(void)
{
    uint32_t f = arch_irq_save();
    int r = -1;
    if (ata_probe() && ata_wait(-1) == 0) {
        outb(ATA_STATUS, 0xE7);   /* FLUSH CACHE */
        r = ata_wait(0);
    }
    arch_irq_restore(f);
    return r;
}
