/* virtio: the legacy virtio-pci devices a PC is given (QEMU: -device
 * virtio-blk-pci,disable-modern=on and virtio-serial-pci,disable-modern=on with
 * a virtconsole; ringvisor: --virtio-disk, --virtio-console), driven by polling
 * only, without paging or interrupts (so that a KVM that cannot page or
 * deliver interrupts runs it too).  Checked against QEMU by tests/test_virtio.py.
 * The expected values are the virtio 1.0 specification's legacy interface and
 * QEMU's (hw/virtio/virtio-pci.c, hw/block/virtio-blk.c):
 *   - the functions' identity: vendor 1AF4, legacy device 0x1001 / 0x1003,
 *     revision 0, subsystem 1AF4:<virtio ID>, class, interrupt pin A (§4.1.2);
 *   - status reads back, features the block device offers among SEG_MAX,
 *     GEOMETRY, RO, BLK_SIZE, FLUSH; the capacity; queue sizes (256; console
 *     port 0: 128 and 128);
 *   - block requests: a write and the read of it, FLUSH, GET_ID (no serial:
 *     an empty string), a read at the capacity (IOERR), an unknown type
 *     (UNSUPP); each one's status and used length (QEMU: every device-writable
 *     byte of the chain); the ISR after a completion (bit 0, cleared by the read);
 *   - a reset (status 0) forgets the queue address;
 *   - last, one line through the console's transmit queue (QEMU writes it to
 *     the virtconsole's chardev, ringvisor to the console stream after COM1's). */
#include "rt.h"

static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

#define HOST_FEATURES 0x00
#define GUEST_FEATURES 0x04
#define QUEUE_PFN 0x08
#define QUEUE_NUM 0x0C
#define QUEUE_SEL 0x0E
#define QUEUE_NOTIFY 0x10
#define STATUS 0x12
#define ISR 0x13
#define CONFIG 0x14

struct desc { u64 addr; u32 len; u16 flags, next; };
#define F_NEXT 1
#define F_WRITE 2

/* rings at fixed addresses below the runtime's tables: 12 KiB each */
#define BLK_RING  0x00400000u
#define CON_RING  0x00410000u
#define BUF       0x00420000u

static u32 cfg(u32 devfn, u32 reg)
{
    outl(0xCF8, 0x80000000u | devfn << 8 | (reg & 0xFC));
    return inl(0xCFC);
}

static void cfg_write(u32 devfn, u32 reg, u32 v)
{
    outl(0xCF8, 0x80000000u | devfn << 8 | (reg & 0xFC));
    outl(0xCFC, v);
}

static int find(u16 device)
{
    for (u32 devfn = 0; devfn < 256; devfn += 8)
        if (cfg(devfn, 0) == ((u32)device << 16 | 0x1AF4))
            return (int)devfn;
    return -1;
}

/* The function's identity printed, its I/O BAR enabled, the device reset and
 * acknowledged (ACKNOWLEDGE, then DRIVER): its registers' base. */
static u16 io_of(u16 device, const char *name)
{
    int devfn = find(device);
    if (devfn < 0)
        fail("no such virtio device");
    u32 id = cfg(devfn, 0), rev = cfg(devfn, 8), sub = cfg(devfn, 0x2C), irq = cfg(devfn, 0x3C);
    kprintf("%s: %04x:%04x rev %u class %06x subsystem %04x:%04x pin %u\n", name, id & 0xFFFF,
            id >> 16, rev & 0xFF, rev >> 8, sub & 0xFFFF, sub >> 16, (irq >> 8) & 0xFF);
    cfg_write(devfn, 4, (cfg(devfn, 4) & 0xFFFF) | 1 | 4);     /* I/O space, bus master */
    u16 io = (u16)(cfg(devfn, 0x10) & ~3u);
    outb(io + STATUS, 0);
    outb(io + STATUS, 1);
    outb(io + STATUS, 3);
    return io;
}

static void zero(u32 addr, u32 n)
{
    for (u32 i = 0; i < n; i += 4)
        *(volatile u32 *)(addr + i) = 0;
}

/* queue 0 of size n at ring: its avail and used rings */
#define AVAIL(ring) ((volatile u16 *)((ring) + 16 * size))
#define USED(ring)  ((volatile u16 *)((ring) + ((16 * size + 6 + 2 * size + 4095) & ~4095u)))

static u16 submit_wait(u16 io, u16 q, u32 ring, u16 size, u16 *avail_idx, u32 *len)
{
    volatile u16 *avail = AVAIL(ring), *used = USED(ring);
    avail[2 + (*avail_idx % size)] = 0;
    __asm__ volatile("" ::: "memory");
    avail[1] = ++*avail_idx;
    outw(io + QUEUE_NOTIFY, q);
    for (u32 i = 0; i < 100000000u && used[1] != *avail_idx; i++)
        ;
    if (used[1] != *avail_idx)
        fail("the device did not return the request");
    volatile u32 *elem = (volatile u32 *)(used + 2) + 2 * ((*avail_idx - 1) % size);
    *len = elem[1];
    return (u16)elem[0];
}

static u16 blk_avail;

/* one request: header, data (n bytes, device-writable for reads), status */
static u8 blk(u16 io, u32 type, u32 sector, u32 n, int dev_writes, u32 *len)
{
    const u16 size = 256;
    volatile struct desc *d = (volatile struct desc *)BLK_RING;
    volatile u32 *hdr = (volatile u32 *)BUF;
    volatile u8 *status = (volatile u8 *)(BUF + 0x100);
    hdr[0] = type; hdr[1] = 0; hdr[2] = sector; hdr[3] = 0;
    *status = 0xEE;
    d[0].addr = BUF; d[0].len = 16; d[0].flags = F_NEXT; d[0].next = n ? 1 : 2;
    d[1].addr = BUF + 0x1000; d[1].len = n; d[1].flags = F_NEXT | (dev_writes ? F_WRITE : 0);
    d[1].next = 2;
    d[2].addr = BUF + 0x100; d[2].len = 1; d[2].flags = F_WRITE; d[2].next = 0;
    u16 head = submit_wait(io, 0, BLK_RING, size, &blk_avail, len);
    if (head != 0)
        fail("used ring: the wrong head");
    return *status;
}

static u8 isr_after(u16 io)
{
    /* QEMU completes in its own thread: the ISR may follow the used index */
    u8 v = 0;
    for (u32 i = 0; i < 1000000000u && !(v = inb(io + ISR)); i++)
        ;
    return v;
}

static void block(void)
{
    u16 io = io_of(0x1001, "virtio-blk");
    kprintf("virtio-blk: status %u, features %08x, capacity %u:%u sectors\n", inb(io + STATUS),
            inl(io + HOST_FEATURES) & 0x274, inl(io + CONFIG + 4), inl(io + CONFIG));
    outl(io + GUEST_FEATURES, 1u << 9);
    outw(io + QUEUE_SEL, 1);
    kprintf("virtio-blk: queue 1 size %u\n", inw(io + QUEUE_NUM));
    outw(io + QUEUE_SEL, 0);
    u16 size = inw(io + QUEUE_NUM);
    zero(BLK_RING, 0x3000);
    outl(io + QUEUE_PFN, BLK_RING >> 12);
    kprintf("virtio-blk: queue 0 size %u at page %x\n", size, inl(io + QUEUE_PFN));
    outb(io + STATUS, 7);
    u32 cap = inl(io + CONFIG), len;
    volatile u8 *data = (volatile u8 *)(BUF + 0x1000);
    for (u32 i = 0; i < 1024; i++)
        data[i] = (u8)(i * 7 + 3);
    u8 st = blk(io, 1, 5, 1024, 0, &len);
    u8 isr1 = isr_after(io), isr2 = inb(io + ISR);      /* (in this order) */
    kprintf("write 2 sectors at 5: status %u, used %u, isr %u then %u\n", st, len, isr1, isr2);
    for (u32 i = 0; i < 1024; i++)
        data[i] = 0;
    st = blk(io, 0, 5, 1024, 1, &len);
    u32 bad = 0;
    for (u32 i = 0; i < 1024; i++)
        bad += data[i] != (u8)(i * 7 + 3);
    isr1 = isr_after(io);
    kprintf("read them back: status %u, used %u, %u bytes differ, isr %u\n", st, len, bad, isr1);
    st = blk(io, 4, 0, 0, 0, &len);
    kprintf("flush: status %u, used %u\n", st, len);
    data[0] = 0x55;
    st = blk(io, 8, 0, 20, 1, &len);
    kprintf("get id: status %u, used %u, first byte %02x\n", st, len, data[0]);
    st = blk(io, 0, cap, 512, 1, &len);
    kprintf("read at the capacity: status %u, used %u\n", st, len);
    st = blk(io, 0x7F, 0, 512, 1, &len);
    kprintf("type 0x7f: status %u, used %u\n", st, len);
    (void)inb(io + ISR);
    outb(io + STATUS, 0);
    kprintf("reset: status %u, queue 0 page %x\n", inb(io + STATUS), inl(io + QUEUE_PFN));
}

static void console(void)
{
    u16 io = io_of(0x1003, "virtio-console");
    outl(io + GUEST_FEATURES, 0);          /* no MULTIPORT: port 0 on queues 0 and 1 */
    u16 sizes[2];
    for (u16 q = 0; q < 2; q++) {
        outw(io + QUEUE_SEL, q);
        sizes[q] = inw(io + QUEUE_NUM);
        zero(CON_RING + q * 0x3000, 0x3000);
        outl(io + QUEUE_PFN, (CON_RING + q * 0x3000) >> 12);
    }
    kprintf("virtio-console: queue sizes %u %u\n", sizes[0], sizes[1]);
    outb(io + STATUS, 7);
    static const char line[] = "virtio-console: a line through the transmit queue\n";
    u32 n = sizeof(line) - 1;
    for (u32 i = 0; i < n; i++)
        *(volatile char *)(BUF + 0x2000 + i) = line[i];
    u16 size = sizes[1];
    volatile struct desc *d = (volatile struct desc *)(CON_RING + 0x3000);
    d[0].addr = BUF + 0x2000; d[0].len = n; d[0].flags = 0; d[0].next = 0;
    u16 avail = 0;
    u32 len;
    kprintf("virtio-console: sending one line\n");
    (void)submit_wait(io, 1, CON_RING + 0x3000, size, &avail, &len);
}

int main(void)
{
    block();
    console();
    rt_exit(0);
}
