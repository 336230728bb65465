/* Legacy virtio-pci (virtio.c) and its two drivers (vblk.c, vcons.c). */
#ifndef RV_VIRTIO_H
#define RV_VIRTIO_H

#include <stdint.h>

#define VIRTIO_VENDOR 0x1AF4
/* the legacy I/O BAR's registers */
#define VIRTIO_HOST_FEATURES  0x00
#define VIRTIO_GUEST_FEATURES 0x04
#define VIRTIO_QUEUE_PFN      0x08
#define VIRTIO_QUEUE_NUM      0x0C
#define VIRTIO_QUEUE_SEL      0x0E
#define VIRTIO_QUEUE_NOTIFY   0x10
#define VIRTIO_STATUS         0x12
#define VIRTIO_ISR            0x13
#define VIRTIO_CONFIG         0x14
#define VIRTIO_S_ACKNOWLEDGE  1
#define VIRTIO_S_DRIVER       2
#define VIRTIO_S_DRIVER_OK    4
#define VIRTIO_S_FAILED       0x80

#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct vring_avail { uint16_t flags, idx, ring[]; };
struct vring_used_elem { uint32_t id, len; };
struct vring_used { uint16_t flags, idx; struct vring_used_elem ring[]; };

struct virtq {
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    uint16_t size, index, io, avail_idx, last_used;
};

struct virtio_dev {
    uint16_t io;
    uint32_t features;
    int irq;
    struct virtq vq[2];
};

int virtio_probe(struct virtio_dev *d, uint16_t device, uint32_t want, int nqueues);
void virtq_submit(struct virtq *q, uint16_t head);
int virtq_wait(struct virtq *q, uint32_t *len);
int virtq_next_used(struct virtq *q, uint32_t *len);
void virtio_irq_enable(int irq);

/* vblk.c */
void vblk_init(void);
void vblk_irq(void);
/* vcons.c */
void vcons_init(void);
void vcons_irq(void);

#endif
