/* virtio-blk: the disk as a para-virtual block device (virtio 1.0 section
 * 5.2, legacy PCI device 0x1001).  One request at a time, as three
 * descriptors: the header {type, reserved, sector}, the data, and the status
 * byte the device writes.  Polled, with interrupts off (see virtio.c): the
 * same contract as the ATA driver's, one notify (one exit under a
 * hypervisor) per request instead of one port access per 32-bit word. */
#include "kernel.h"
#include "virtio.h"

#define VBLK_DEVICE  0x1001
#define F_FLUSH      (1u << 9)
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4

struct vblk_req { uint32_t type, reserved; uint64_t sector; };

static struct virtio_dev dev;
static int present;
static uint64_t capacity;
static struct vblk_req req;
static volatile uint8_t status;

void vblk_init(void)
{
    if (virtio_probe(&dev, VBLK_DEVICE, F_FLUSH, 1) < 0)
        return;
    capacity = inl(dev.io + VIRTIO_CONFIG) | (uint64_t)inl(dev.io + VIRTIO_CONFIG + 4) << 32;
    dev.vq[0].avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
    present = 1;
}

int vblk_present(void)
{
    return present;
}

int32_t vblk_size(void)
{
    return capacity > 0x7FFFFFFF ? 0x7FFFFFFF : (int32_t)capacity;
}

/* One request; data (n bytes at buf, n may be 0) read or written. */
static int vblk_request(uint32_t type, uint64_t sector, void *buf, uint32_t n)
{
    struct virtq *q = &dev.vq[0];
    uint32_t f = arch_irq_save();
    req.type = type;
    req.reserved = 0;
    req.sector = sector;
    status = 0xFF;
    q->desc[0] = (struct vring_desc){ V2P(&req), sizeof(req), VRING_DESC_F_NEXT, 1 };
    if (n) {
        q->desc[1] = (struct vring_desc){ V2P(buf), n,
            VRING_DESC_F_NEXT | (type == T_IN ? VRING_DESC_F_WRITE : 0), 2 };
    } else {
        q->desc[0].next = 2;
    }
    q->desc[2] = (struct vring_desc){ V2P(&status), 1, VRING_DESC_F_WRITE, 0 };
    virtq_submit(q, 0);
    int r = virtq_wait(q, 0) == 0 && status == 0 ? 0 : -1;
    arch_irq_restore(f);
    return r;
}

/* n (1..256) sectors at lba to or from buf (kernel memory, physically contiguous). */
int vblk_rw(int write, uint32_t lba, uint32_t n, void *buf)
{
    if (!present || n == 0 || n > 256 || lba + (uint64_t)n > capacity)
        return -1;
    return vblk_request(write ? T_OUT : T_IN, lba, buf, n * 512);
}

int vblk_flush(void)
{
    if (!present)
        return -1;
    if (!(dev.features & F_FLUSH))
        return 0;                 /* no write cache to flush */
    return vblk_request(T_FLUSH, 0, 0, 0);
}

void vblk_irq(void)
{
    if (present)
        (void)inb(dev.io + VIRTIO_ISR);
}
