/* System calls (int 0x80, a DPL-3 trap gate: interrupts stay enabled). */
#include "kernel.h"
#include "privcmd.h"

static int32_t sys_write(uint32_t fd, uint32_t buf, uint32_t len)
{
    if (fd != 1 && fd != 2)
        return -1;
    if (user_check(buf, len, 0))
        return -1;
    console_write((const char *)buf, len);
    return (int32_t)len;
}

static int32_t sys_read(uint32_t fd, uint32_t buf, uint32_t len)
{
    char kbuf[128];
    if (fd != 0)
        return -1;
    if (len == 0)
        return 0;
    if (user_check(buf, len, 1))
        return -1;
    if (len > sizeof(kbuf))
        len = sizeof(kbuf);
    int n = console_read(kbuf, len);
    if (n < 0)
        return -1;
    if (copy_to_user(buf, kbuf, (uint32_t)n))
        return -1;
    return n;
}

static int32_t sys_exec(struct trapframe *tf, uint32_t uname, uint32_t uargs)
{
    char name[32], args[256];
    if (copy_str_from_user(name, uname, sizeof(name)) < 0)
        return -1;
    if (!uargs)
        args[0] = 0;
    else if (copy_str_from_user(args, uargs, sizeof(args)) < 0)
        return -1;
    return proc_exec(tf, name, args);
}

static int32_t sys_kbench(uint32_t op, uint32_t n, uint32_t cycles_ptr)
{
    uint32_t chk = 0;
    if (op == KB_PANIC)
        return (int32_t)*(volatile uint32_t *)0;   /* kernel-mode NULL dereference */
    uint64_t t0 = arch_rdtsc();
    switch (op) {
    case KB_IN:
        for (uint32_t i = 0; i < n; i++)
            chk += inb(0x21) == pic_master_mask;
        break;
    case KB_CRWR: {
        uint32_t cr0 = arch_read_cr0();
        for (uint32_t i = 0; i < n; i++)
            arch_write_cr0(cr0);
        chk = arch_read_cr0() == cr0 ? n : 0;
        break;
    }
    case KB_PTEMOD:
        chk = kbench_ptemod(n);
        break;
    default:
        return -1;
    }
    uint64_t cycles = arch_rdtsc() - t0;
    if (cycles_ptr && copy_to_user(cycles_ptr, &cycles, sizeof(cycles)))
        return -1;
    return (int32_t)chk;
}

static int32_t sys_stats(uint32_t uptr)
{
    struct rv_stats s = kstats;
    s.hz = timer_hz;
    s.ticks = ticks;
    s.procs = 0;
    for (int i = 1; i < NPROC; i++)
        if (procs[i].state != P_UNUSED)
            s.procs++;
    s.free_kib = frames_free() * (PAGE_SIZE / 1024);
    s.total_kib = frames_total() * (PAGE_SIZE / 1024);
    return copy_to_user(uptr, &s, sizeof(s));
}

/* 32 sectors at a time through the kernel: a user buffer may cross pages
 * that are not there yet (copy_*_user fault them in). */
static uint8_t disk_bounce[32 * DISK_SECTOR] __attribute__((aligned(4096)));

static int32_t sys_disk(uint32_t op_disk, uint32_t lba, uint32_t ubuf, uint32_t count)
{
    uint32_t op = op_disk & 0xFF, d = op_disk >> 8;
    int v = d == 0 && vblk_present();   /* disk 0: a virtio disk, if there is one */
    if (d >= 4)
        return -1;
    if (op == DISK_SIZE)
        return v ? vblk_size() : ata_size((int)d);
    if (op == DISK_FLUSH)
        return v ? vblk_flush() : ata_flush((int)d);
    if ((op != DISK_READ && op != DISK_WRITE) || count == 0 || count > 256)
        return -1;
    if (user_check(ubuf, count * DISK_SECTOR, op == DISK_READ))
        return -1;
    while (count) {
        uint32_t n = count < 32 ? count : 32, bytes = n * DISK_SECTOR;
        if (op == DISK_WRITE && copy_from_user(disk_bounce, ubuf, bytes))
            return -1;
        int r = v ? vblk_rw(op == DISK_WRITE, lba, n, disk_bounce)
                  : ata_rw((int)d, op == DISK_WRITE, lba, n, disk_bounce);
        if (r < 0)
            return -1;
        if (op == DISK_READ && copy_to_user(ubuf, disk_bounce, bytes))
            return -1;
        lba += n;
        ubuf += bytes;
        count -= n;
    }
    return 0;
}

/* A management hypercall for a user program, through the privcmd device
 * (privcmd.h): the block is copied in, its address given to the device. */
static int32_t sys_privcmd(uint32_t uptr)
{
    struct privcmd_hypercall h;
    if (copy_from_user(&h, uptr, sizeof(h)))
        return -PRIVCMD_EFAULT;
    if (inl(PRIVCMD_ID_PORT) != PRIVCMD_ID)
        return -PRIVCMD_ENODEV;
    outl(PRIVCMD_PORT, (uint32_t)&h);
    return (int32_t)inl(PRIVCMD_PORT);
}

void syscall_dispatch(struct trapframe *tf)
{
    uint32_t a = tf->ebx, b = tf->ecx, c = tf->edx;
    int32_t r;
    kstats.syscalls++;
    switch (tf->eax) {
    case SYS_nop:      r = 0; break;
    case SYS_exit:     proc_exit((int)a);
    case SYS_write:    r = sys_write(a, b, c); break;
    case SYS_read:     r = sys_read(a, b, c); break;
    case SYS_getpid:   r = current->pid; break;
    case SYS_yield:    proc_yield(); r = 0; break;
    case SYS_sleep:    proc_sleep_ms(a); r = 0; break;
    case SYS_fork:     r = proc_fork(tf); break;
    case SYS_wait:     r = proc_wait(a); break;
    case SYS_exec:     r = sys_exec(tf, a, b); break;
    case SYS_sbrk:     r = (int32_t)sys_sbrk_impl((int32_t)a); break;
    case SYS_time:     r = (int32_t)(uint32_t)((uint64_t)ticks * 1000 / timer_hz); break;
    case SYS_kbench:   r = sys_kbench(a, b, c); break;
    case SYS_fhandler: r = a < USER_TOP ? (current->fault_handler = a, 0) : -1; break;
    case SYS_stats:    r = sys_stats(a); break;
    case SYS_kill:     r = proc_kill((int)a); break;
    case SYS_disk:     r = sys_disk(a, b, c, tf->esi); break;
    case SYS_privcmd:  r = sys_privcmd(a); break;
    default:           r = -1;
    }
    tf->eax = (uint32_t)r;
}
