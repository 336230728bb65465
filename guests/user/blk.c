/* blk and blkbench: the disk workloads (the ATA disk of the primary IDE
 * channel: a real one, ringvisor's emulated one, or a DomU's blkfront);
 * disks: what disks there are (the four ATA drives: a DomU's xvda..xvdd).
 *
 * blk keeps a *generation* on the disk: sector 0 holds a header (magic,
 * generation g), sectors 1..DATA_SECTORS a pattern that depends on g, the
 * sector and the offset.  Each run checks what it finds, writes generation
 * g + 1 in requests of several sizes, flushes, reads it all back and checks
 * it, then asks for a sector past the end (the disk must refuse).  Run twice
 * on the same image -- across a reboot, a destroyed and re-created domain --
 * it shows the data outlived the machine.
 *
 * blkbench N: N sequential writes, then N reads, of 16 KiB (32 sectors)
 * each from sector BENCH_START, with the cycles per request. */
#include "ulib.h"

#define DATA_SECTORS 40
#define BENCH_START 1024
#define BENCH_SECTORS 32
static const char MAGIC[8] = "RVBLK01";

static int disk(uint32_t op, uint32_t lba, void *buf, uint32_t count)
{
    int32_t r;
    __asm__ volatile("int $0x80" : "=a"(r)
                     : "a"(SYS_disk), "b"(op), "c"(lba), "d"((uint32_t)buf), "S"(count)
                     : "memory");
    return r;
}

int prog_disks(const char *args)
{
    (void)args;
    static uint8_t sec[DISK_SECTOR];
    int found = 0;
    for (uint32_t d = 0; d < 4; d++) {
        int32_t n = disk(DISK_ON(DISK_SIZE, d), 0, 0, 0);
        if (n < 0)
            continue;
        found++;
        if (disk(DISK_ON(DISK_READ, d), 0, sec, 1) < 0) {
            printf("disks: disk %u: %d sectors, sector 0 cannot be read\n", d, n);
            continue;
        }
        char text[25];                  /* its first bytes, as text up to a NUL */
        uint32_t i = 0;
        for (; i < sizeof(text) - 1 && sec[i]; i++)
            text[i] = sec[i] >= 0x20 && sec[i] < 0x7F ? (char)sec[i] : '.';
        text[i] = 0;
        printf("disks: disk %u: %d sectors, sector 0 begins \"%s\"\n", d, n, text);
    }
    printf("disks: %d found\n", found);
    return found ? 0 : 1;
}

static uint8_t pattern(uint32_t gen, uint32_t sector, uint32_t off)
{
    uint32_t x = gen * 2654435761u ^ sector * 40503u ^ off * 2246822519u;
    return (uint8_t)(x >> 13 ^ x);
}

static uint8_t buf[DATA_SECTORS * DISK_SECTOR];

static void fill(uint32_t gen)
{
    for (uint32_t s = 0; s < DATA_SECTORS; s++)
        for (uint32_t i = 0; i < DISK_SECTOR; i++)
            buf[s * DISK_SECTOR + i] = pattern(gen, s + 1, i);
}

/* The first sector (1-based) that differs from generation gen, 0 if none. */
static uint32_t check(uint32_t gen)
{
    for (uint32_t s = 0; s < DATA_SECTORS; s++)
        for (uint32_t i = 0; i < DISK_SECTOR; i++)
            if (buf[s * DISK_SECTOR + i] != pattern(gen, s + 1, i))
                return s + 1;
    return 0;
}

int prog_blk(const char *args)
{
    (void)args;
    static uint8_t head[DISK_SECTOR];
    int32_t sectors = disk(DISK_SIZE, 0, 0, 0);
    if (sectors < 0) {
        printf("blk: no disk\n");
        return 1;
    }
    printf("blk: disk of %d sectors\n", sectors);
    if (sectors < DATA_SECTORS + 1) {
        printf("blk: the disk is too small (%d sectors needed)\n", DATA_SECTORS + 1);
        return 1;
    }
    if (disk(DISK_READ, 0, head, 1) < 0) {
        printf("blk: cannot read sector 0\n");
        return 1;
    }
    uint32_t gen = 0;
    if (!memcmp(head, MAGIC, sizeof(MAGIC))) {
        memcpy(&gen, head + 8, 4);
        if (disk(DISK_READ, 1, buf, DATA_SECTORS) < 0) {
            printf("blk: cannot read the data\n");
            return 1;
        }
        uint32_t bad = check(gen);
        if (bad) {
            printf("blk: generation %u: sector %u is not what was written\n", gen, bad);
            return 1;
        }
        printf("blk: generation %u found and verified (%u sectors)\n", gen, DATA_SECTORS);
    } else {
        printf("blk: blank disk\n");
    }
    gen++;
    fill(gen);
    /* requests of 1, 7, 8 and 24 sectors: a single sector, partial pages, several pages */
    static const uint32_t sizes[] = { 1, 7, 8, 24 };
    uint32_t at = 0;
    for (uint32_t k = 0; k < 4; k++) {
        if (disk(DISK_WRITE, 1 + at, buf + at * DISK_SECTOR, sizes[k]) < 0) {
            printf("blk: writing sectors %u..%u was refused\n", 1 + at, at + sizes[k]);
            return 1;
        }
        at += sizes[k];
    }
    memset(head, 0, sizeof(head));
    memcpy(head, MAGIC, sizeof(MAGIC));
    memcpy(head + 8, &gen, 4);
    if (disk(DISK_WRITE, 0, head, 1) < 0 || disk(DISK_FLUSH, 0, 0, 0) < 0) {
        printf("blk: writing the header or flushing was refused\n");
        return 1;
    }
    memset(buf, 0, sizeof(buf));
    if (disk(DISK_READ, 1, buf, DATA_SECTORS) < 0 || check(gen)) {
        printf("blk: generation %u does not read back\n", gen);
        return 1;
    }
    printf("blk: wrote generation %u, read it back\n", gen);
    if (disk(DISK_READ, (uint32_t)sectors, head, 1) == 0) {
        printf("blk: a read past the end was not refused\n");
        return 1;
    }
    printf("blk: a read past the end was refused\n");
    return 0;
}

static uint8_t bench_buf[BENCH_SECTORS * DISK_SECTOR];

int prog_blkbench(const char *args)
{
    uint32_t n = get_iters(args, PROG_blkbench);
    int32_t sectors = disk(DISK_SIZE, 0, 0, 0);
    if (sectors < 0 || (uint32_t)sectors < BENCH_START + n * BENCH_SECTORS) {
        printf("blkbench: needs a disk of %u sectors\n", BENCH_START + n * BENCH_SECTORS);
        return 1;
    }
    for (uint32_t i = 0; i < sizeof(bench_buf); i++)
        bench_buf[i] = (uint8_t)(i * 7);
    printf("blkbench: start\n");
    fflush_out();
    for (int w = 1; w >= 0; w--) {
        uint64_t t0 = rdtsc();
        for (uint32_t i = 0; i < n; i++)
            if (disk(w ? DISK_WRITE : DISK_READ, BENCH_START + i * BENCH_SECTORS, bench_buf,
                     BENCH_SECTORS) < 0) {
                printf("blkbench: request %u refused\n", i);
                return 1;
            }
        uint64_t c = rdtsc() - t0;
        printf("blkbench: %s %u x %u B: %llu cycles/request\n", w ? "write" : "read", n,
               BENCH_SECTORS * DISK_SECTOR, c / n);
    }
    printf("blkbench: done\n");
    return 0;
}
