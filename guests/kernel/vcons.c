/* virtio-console: the console as a para-virtual device (virtio 1.0 section
 * 5.3, legacy PCI device 0x1003), one port, no MULTIPORT: queue 0 brings
 * the host's input, queue 1 takes the output.
 *
 * Output is gathered into a line (up to 256 bytes) and sent as one buffer
 * at each newline and at the end of every console write or kprintf: one
 * notify per line, where the UART takes two port accesses per byte.  Input:
 * 16 buffers of 64 bytes wait in the receive queue; the device fills them
 * and interrupts; the interrupt copies them into the console's ring.  A
 * buffer goes back to the device only while the ring has room for all the
 * buffers the device holds, so nothing is lost: a full ring stops the
 * host, as the UART's switched-off receive interrupt does. */
#include "kernel.h"
#include "virtio.h"

#define VCONS_DEVICE 0x1003
#define RX_BUFS 16
#define RX_BUF  64
#define TX_SIZE 256

static struct virtio_dev dev;
static int present, rx_started;
static char txbuf[TX_SIZE];
static uint32_t txlen;
static char rxbufs[RX_BUFS][RX_BUF];
static uint16_t rx_free[RX_BUFS];      /* buffers the driver holds */
static int nfree, posted;

void vcons_init(void)
{
    if (virtio_probe(&dev, VCONS_DEVICE, 0, 2) < 0)
        return;
    dev.vq[1].avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
    for (int i = 0; i < RX_BUFS; i++) {
        dev.vq[0].desc[i] = (struct vring_desc){ V2P(rxbufs[i]), RX_BUF, VRING_DESC_F_WRITE, 0 };
        rx_free[nfree++] = (uint16_t)i;
    }
    present = 1;
}

int vcons_present(void)
{
    return present;
}

void vcons_flush(void)
{
    uint32_t f = arch_irq_save();
    if (txlen) {
        struct virtq *q = &dev.vq[1];
        q->desc[0] = (struct vring_desc){ V2P(txbuf), txlen, 0, 0 };
        virtq_submit(q, 0);
        (void)virtq_wait(q, 0);
        txlen = 0;
    }
    arch_irq_restore(f);
}

void vcons_putc(char c)
{
    uint32_t f = arch_irq_save();
    txbuf[txlen++] = c;
    if (c == '\n' || txlen == TX_SIZE)
        vcons_flush();
    arch_irq_restore(f);
}

/* Hand buffers back while the console's ring has room for every one posted. */
void vcons_refill(void)
{
    if (!rx_started)
        return;
    uint32_t f = arch_irq_save();
    int n = 0;
    while (nfree && (uint32_t)(posted + 1) * RX_BUF <= console_rx_room()) {
        struct virtq *q = &dev.vq[0];
        q->avail->ring[(q->avail_idx + n) % q->size] = rx_free[--nfree];
        posted++;
        n++;
    }
    if (n) {
        struct virtq *q = &dev.vq[0];
        __asm__ volatile("" ::: "memory");
        q->avail_idx += (uint16_t)n;
        q->avail->idx = q->avail_idx;
        __asm__ volatile("" ::: "memory");
        outw(dev.io + VIRTIO_QUEUE_NOTIFY, 0);
    }
    arch_irq_restore(f);
}

/* The receive interrupt may come from now on (the PIC is programmed). */
void vcons_start_rx(void)
{
    virtio_irq_enable(dev.irq);
    rx_started = 1;
    vcons_refill();
}

/* (interrupts off) */
void vcons_irq(void)
{
    if (!present)
        return;
    (void)inb(dev.io + VIRTIO_ISR);
    uint32_t len;
    int id;
    while ((id = virtq_next_used(&dev.vq[0], &len)) >= 0) {
        posted--;
        console_rx_push(rxbufs[id], len > RX_BUF ? RX_BUF : len);
        rx_free[nfree++] = (uint16_t)id;
    }
    vcons_refill();
}
