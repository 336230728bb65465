/* diskfw: what QEMU's PC tells a -kernel image about its hard disks, besides the
 * disks themselves -- SeaBIOS's count of hard disks in the BIOS data area (0x475),
 * and the CMOS bytes QEMU's board writes for the IDE drives (hw/i386/pc.c,
 * pc_cmos_init_late): 0x12 the disk types of drives 0 and 1 (a nibble each, 0xF:
 * "see the extended type"), 0x19/0x1A the extended types (47: user-defined), the
 * user-defined geometry of drive 0 at 0x1B and of drive 1 at 0x24 (cylinders,
 * heads, write precompensation, control byte, landing zone, sectors per track),
 * and 0x39 the BIOS translation of the four drives (2 bits each: 0 none, 1 LBA,
 * 2 large).  It reads them and prints them, nothing else: the disks are whatever
 * the run gives it. */
#include "rt.h"

static u8 cmos(u8 reg)
{
    outb(0x70, reg);
    return inb(0x71);
}

static void geometry(const char *drive, u8 base)
{
    u16 cyl = (u16)(cmos(base) | cmos(base + 1) << 8);
    u16 precomp = (u16)(cmos(base + 3) | cmos(base + 4) << 8);
    u16 landing = (u16)(cmos(base + 6) | cmos(base + 7) << 8);
    kprintf("cmos %s geometry: cylinders %u heads %u precomp %04x control %02x "
            "landing %u sectors %u\n", drive, cyl, cmos(base + 2), precomp, cmos(base + 5),
            landing, cmos(base + 8));
}

int main(void)
{
    volatile u8 *bda = (volatile u8 *)0x400;
    kprintf("bda hard disks (0x475): %u\n", bda[0x75]);
    kprintf("bda hard disk control (0x476): %02x\n", bda[0x76]);
    u8 types = cmos(0x12);
    kprintf("cmos 0x12 disk types: %02x\n", types);
    kprintf("cmos 0x19 drive 0 extended type: %u\n", cmos(0x19));
    kprintf("cmos 0x1a drive 1 extended type: %u\n", cmos(0x1a));
    geometry("drive 0", 0x1b);
    geometry("drive 1", 0x24);
    kprintf("cmos 0x39 translation: %02x\n", cmos(0x39));
    kprintf("diskfw: done\n");
    return 0;
}
