/* The ATA disks of the two IDE channels, by programmed I/O: drive 0 and 1
 * the primary channel's master and slave, 2 and 3 the secondary's (QEMU's
 * -hda..-hdd; a DomU's xvda..xvdd).
 *
 * Polled: the driver sets nIEN in the device control register and waits on
 * the status register (BSY clear, then DRQ for each sector), so it needs no
 * interrupt handler and works the same on every machine the kernel runs on --
 * QEMU's IDE disk, ringvisor's (ringvisor/hw/devices/ata.py) under any
 * monitor, and the block front-end of the para-virtual runtime, which stands
 * behind these ports in a DomU of `ringvisor xen`.  LBA28, READ/WRITE
 * SECTORS (0x20/0x30), FLUSH CACHE (0xE7), IDENTIFY DEVICE (0xEC) once per
 * drive, on first use: a kernel that never touches a disk never probes it.  Data
 * move as 32-bit words (QEMU's data port takes them; half the port I/O). */
#include "kernel.h"

/* the task file's registers, from the channel's command block base (0x1F0, 0x170) */
#define ATA_DATA    0
#define ATA_ERROR   1
#define ATA_COUNT   2
#define ATA_LBA0    3
#define ATA_LBA1    4
#define ATA_LBA2    5
#define ATA_DEVICE  6
#define ATA_STATUS  7             /* read: status; write: command */
/* the control block: read alternate status, write device control (0x3F6, 0x376) */
#define ATA_CONTROL(d) ((d) < 2 ? 0x3F6 : 0x376)
#define BASE(d)     ((d) < 2 ? 0x1F0 : 0x170)
#define NDRIVES     4

#define ST_BSY  0x80
#define ST_DRQ  0x08
#define ST_ERR  0x01
#define CTL_NIEN 0x02
#define DEV_LBA 0xE0              /* LBA addressing (bits 7 and 5 set, as of old) */
#define DEV(d) (DEV_LBA | ((d) & 1) << 4)    /* bit 4: device 1, the slave */

#define WAIT_LOOPS 50000000u

static int ata_state[NDRIVES];    /* 0: not probed; 1: a disk; -1: none */
static uint32_t ata_sectors[NDRIVES];

/* BSY clear, then (if want_drq) DRQ: 0; an error, no device or no answer: -1.
 * want_drq < 0: only BSY clear, before a command (ERR is the last command's). */
static int ata_wait(int d, int want_drq)
{
    (void)inb(ATA_CONTROL(d));    /* the 400 ns the device may take to raise BSY */
    for (uint32_t i = 0; i < WAIT_LOOPS; i++) {
        uint8_t s = inb(BASE(d) + ATA_STATUS);
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

static int ata_probe(int d)
{
    if (ata_state[d])
        return ata_state[d] > 0;
    ata_state[d] = -1;
    outb(ATA_CONTROL(d), CTL_NIEN);
    outb(BASE(d) + ATA_DEVICE, DEV(d));
    uint8_t s = inb(BASE(d) + ATA_STATUS);
    if (s == 0 || s == 0xFF)
        return 0;
    outb(BASE(d) + ATA_STATUS, 0xEC);   /* IDENTIFY DEVICE */
    if (ata_wait(d, 1) < 0)
        return 0;
    uint32_t id[128];
    for (int i = 0; i < 128; i++)
        id[i] = inl(BASE(d) + ATA_DATA);
    ata_sectors[d] = id[30];      /* words 60-61: sectors addressable with LBA28 */
    if (!ata_sectors[d])
        return 0;
    ata_state[d] = 1;
    return 1;
}

static int ata_drive(int d)
{
    return d >= 0 && d < NDRIVES && ata_probe(d);
}

/* Sectors of drive d, or -1 without one. */
int32_t ata_size(int d)
{
    uint32_t f = arch_irq_save();
    int ok = ata_drive(d);
    arch_irq_restore(f);
    return ok ? (int32_t)ata_sectors[d] : -1;
}

/* Move n (1..256) sectors at lba of drive d to or from buf: 0, or -1 when refused. */
int ata_rw(int d, int write, uint32_t lba, uint32_t n, void *buf)
{
    if (n == 0 || n > 256 || lba >= (1u << 28) || lba + n > (1u << 28))
        return -1;
    uint32_t f = arch_irq_save();
    int r = -1;
    uint16_t base = (uint16_t)BASE(d);
    if (!ata_drive(d))
        goto out;
    outb(base + ATA_DEVICE, (uint8_t)(DEV(d) | ((lba >> 24) & 0x0F)));
    if (ata_wait(d, -1) < 0)
        goto out;
    outb(base + ATA_COUNT, (uint8_t)n);
    outb(base + ATA_LBA0, (uint8_t)lba);
    outb(base + ATA_LBA1, (uint8_t)(lba >> 8));
    outb(base + ATA_LBA2, (uint8_t)(lba >> 16));
    outb(base + ATA_STATUS, write ? 0x30 : 0x20);
    uint32_t *p = buf;
    for (uint32_t s = 0; s < n; s++) {
        if (ata_wait(d, 1) < 0)
            goto out;
        for (int w = 0; w < 128; w++) {
            if (write)
                outl(base + ATA_DATA, *p++);
            else
                *p++ = inl(base + ATA_DATA);
        }
    }
    r = ata_wait(d, 0);           /* a write is done when the last sector is */
out:
    arch_irq_restore(f);
    return r;
}

int ata_flush(int d)
{
    uint32_t f = arch_irq_save();
    int r = -1;
    if (ata_drive(d)) {
        outb(BASE(d) + ATA_DEVICE, (uint8_t)DEV(d));
        if (ata_wait(d, -1) == 0) {
            outb(BASE(d) + ATA_STATUS, 0xE7);   /* FLUSH CACHE */
            r = ata_wait(d, 0);
        }
    }
    arch_irq_restore(f);
    return r;
}
