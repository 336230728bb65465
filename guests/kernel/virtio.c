/* Legacy virtio-pci: finding the devices on PCI bus 0 and the split virtqueue.
 *
 * The transport of virtio 0.9.5 (the virtio 1.0 specification's "legacy
 * interface"), as QEMU offers it with disable-modern=on and ringvisor's
 * hw/devices/virtio.py implements it: a PCI function of vendor 0x1AF4 whose
 * BAR 0 is an I/O window of registers (features, queue address as a page
 * number, queue size and select, notify, status, ISR, then the device's
 * configuration).  Each queue is a descriptor table, an available ring the
 * driver fills and a used ring the device fills, laid out in one physically
 * contiguous, page-aligned piece of the kernel's memory.
 *
 * The drivers wait for their requests by polling the used ring with
 * interrupts off (the ATA driver polls too): the device is asked not to
 * interrupt (VRING_AVAIL_F_NO_INTERRUPT), except for the console's receive
 * queue, whose interrupt (INTx, shared, on the line the firmware wrote in
 * the function's interrupt line register) wakes a reader. */
#include "kernel.h"
#include "virtio.h"

#define PCI_ADDRESS 0xCF8
#define PCI_DATA    0xCFC
#define PCI_CMD_IO      0x0001
#define PCI_CMD_MASTER  0x0004

#define VQ_MAX      256            /* entries: QEMU's virtio-blk has 256 */
#define VQ_BYTES    (3 * PAGE_SIZE) /* a legacy ring of VQ_MAX entries */
#define MAX_QUEUES  3
#define WAIT_LOOPS  50000000u

static uint8_t ring_mem[MAX_QUEUES][VQ_BYTES] __attribute__((aligned(4096)));
static int rings_used;
int virtio_irq_line = -1;

static uint32_t pci_read(uint32_t devfn, uint32_t reg)
{
    outl(PCI_ADDRESS, 0x80000000u | devfn << 8 | (reg & 0xFC));
    return inl(PCI_DATA);
}

static void pci_write(uint32_t devfn, uint32_t reg, uint32_t v)
{
    outl(PCI_ADDRESS, 0x80000000u | devfn << 8 | (reg & 0xFC));
    outl(PCI_DATA, v);
}

/* The first legacy virtio function of this PCI device ID on bus 0: its devfn, or -1. */
static int pci_find(uint16_t device)
{
    for (uint32_t slot = 0; slot < 32; slot++) {
        uint32_t nfn = 1;
        for (uint32_t fn = 0; fn < nfn; fn++) {
            uint32_t devfn = slot << 3 | fn;
            uint32_t id = pci_read(devfn, 0);
            if ((id & 0xFFFF) == 0xFFFF)
                break;            /* no function 0: no device in the slot */
            if (fn == 0 && (pci_read(devfn, 0x0C) >> 16 & 0x80))
                nfn = 8;          /* a multi-function device */
            /* revision 0: the legacy interface (a modern-only device has 1) */
            if (id == ((uint32_t)device << 16 | VIRTIO_VENDOR) && !(pci_read(devfn, 8) & 0xFF))
                return (int)devfn;
        }
    }
    return -1;
}

/* Reset the device, offer it our features (of those it has), set up its
 * queues; the device is live (DRIVER_OK) when this returns 0. */
int virtio_probe(struct virtio_dev *d, uint16_t device, uint32_t want, int nqueues)
{
    int devfn = pci_find(device);
    if (devfn < 0)
        return -1;
    uint32_t bar = pci_read(devfn, 0x10);
    if (!(bar & 1) || rings_used + nqueues > MAX_QUEUES)
        return -1;
    d->io = (uint16_t)(bar & ~3u);
    pci_write(devfn, 4, (pci_read(devfn, 4) & 0xFFFF) | PCI_CMD_IO | PCI_CMD_MASTER);
    outb(d->io + VIRTIO_STATUS, 0);                    /* reset */
    outb(d->io + VIRTIO_STATUS, VIRTIO_S_ACKNOWLEDGE);
    outb(d->io + VIRTIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
    d->features = inl(d->io + VIRTIO_HOST_FEATURES) & want;
    outl(d->io + VIRTIO_GUEST_FEATURES, d->features);
    for (int i = 0; i < nqueues; i++) {
        struct virtq *q = &d->vq[i];
        outw(d->io + VIRTIO_QUEUE_SEL, (uint16_t)i);
        uint32_t size = inw(d->io + VIRTIO_QUEUE_NUM);
        if (size == 0 || size > VQ_MAX || (size & (size - 1))) {
            outb(d->io + VIRTIO_STATUS, VIRTIO_S_FAILED);
            return -1;
        }
        uint8_t *mem = ring_mem[rings_used++];
        memset(mem, 0, VQ_BYTES);
        q->size = (uint16_t)size;
        q->index = (uint16_t)i;
        q->io = d->io;
        q->desc = (struct vring_desc *)mem;
        q->avail = (struct vring_avail *)(mem + 16 * size);
        q->used = (struct vring_used *)(mem + PAGE_UP(16 * size + 6 + 2 * size));
        q->avail_idx = q->last_used = 0;
        outl(d->io + VIRTIO_QUEUE_PFN, V2P(mem) >> 12);
    }
    d->irq = (int)(pci_read(devfn, 0x3C) & 0xFF);
    outb(d->io + VIRTIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_DRIVER_OK);
    return 0;
}

/* Put the chain starting at descriptor head in the available ring and tell the device. */
void virtq_submit(struct virtq *q, uint16_t head)
{
    q->avail->ring[q->avail_idx % q->size] = head;
    __asm__ volatile("" ::: "memory");    /* the entry before the index (x86: stores in order) */
    q->avail->idx = ++q->avail_idx;
    __asm__ volatile("" ::: "memory");
    outw(q->io + VIRTIO_QUEUE_NOTIFY, q->index);
}

/* Wait for the device to return one chain: its head, or -1 when it never does. */
int virtq_wait(struct virtq *q, uint32_t *len)
{
    for (uint32_t i = 0; i < WAIT_LOOPS; i++) {
        if (*(volatile uint16_t *)&q->used->idx != q->last_used) {
            struct vring_used_elem *e = &q->used->ring[q->last_used % q->size];
            q->last_used++;
            if (len)
                *len = e->len;
            return (int)e->id;
        }
    }
    return -1;
}

/* A chain the device returned, if any (without waiting): its head, or -1. */
int virtq_next_used(struct virtq *q, uint32_t *len)
{
    if (*(volatile uint16_t *)&q->used->idx == q->last_used)
        return -1;
    struct vring_used_elem *e = &q->used->ring[q->last_used % q->size];
    q->last_used++;
    *len = e->len;
    return (int)e->id;
}

/* The shared INTx line: every virtio device's ISR is read (which lowers its part of
 * the line); the console takes what arrived. */
void virtio_irq(void)
{
    vblk_irq();
    vcons_irq();
}

void virtio_init(void)
{
    vcons_init();
    vblk_init();
}

/* Open the devices' line on the 8259A pair (after trap_init programmed it). */
void virtio_irq_enable(int irq)
{
    if (irq <= 0 || irq >= 16 || irq == 2)
        return;
    virtio_irq_line = irq;
    if (irq < 8) {
        outb(0x21, inb(0x21) & ~(1u << irq));
    } else {
        outb(0xA1, inb(0xA1) & ~(1u << (irq - 8)));
        outb(0x21, inb(0x21) & ~(1u << 2));         /* the cascade */
    }
}
