/* System-call wrappers, buffered standard output, helpers. */
#include "ulib.h"
#include "workloads.h"

void exit(int status)
{
    fflush_out();
    syscall3(SYS_exit, (uint32_t)status, 0, 0);
    for (;;)
        ;
}

int write(int fd, const void *buf, uint32_t len)
{
    return syscall3(SYS_write, (uint32_t)fd, (uint32_t)buf, len);
}

int read(int fd, void *buf, uint32_t len)
{
    return syscall3(SYS_read, (uint32_t)fd, (uint32_t)buf, len);
}

int getpid(void) { return syscall3(SYS_getpid, 0, 0, 0); }
int yield(void) { return syscall3(SYS_yield, 0, 0, 0); }
int sleep_ms(uint32_t ms) { return syscall3(SYS_sleep, ms, 0, 0); }
uint32_t time_ms(void) { return (uint32_t)syscall3(SYS_time, 0, 0, 0); }

int fork(void)
{
    fflush_out();
    return syscall3(SYS_fork, 0, 0, 0);
}

int wait(int *status)
{
    return syscall3(SYS_wait, (uint32_t)status, 0, 0);
}

int exec(const char *name, const char *args)
{
    fflush_out();
    return syscall3(SYS_exec, (uint32_t)name, (uint32_t)args, 0);
}

void *sbrk(int32_t incr)
{
    return (void *)syscall3(SYS_sbrk, (uint32_t)incr, 0, 0);
}

int32_t kbench(uint32_t op, uint32_t n, uint64_t *cycles)
{
    return syscall3(SYS_kbench, op, n, (uint32_t)cycles);
}

int set_fault_handler(void (*handler)(void))
{
    return syscall3(SYS_fhandler, (uint32_t)handler, 0, 0);
}

int get_stats(struct rv_stats *s)
{
    return syscall3(SYS_stats, (uint32_t)s, 0, 0);
}

int kill(int pid)
{
    return syscall3(SYS_kill, (uint32_t)pid, 0, 0);
}

/* stdout is line-buffered: one write() per line keeps lines whole. */
static char outbuf[256];
static uint32_t outlen;

void fflush_out(void)
{
    if (outlen)
        write(1, outbuf, outlen);
    outlen = 0;
}

static void out_char(char c, void *ctx)
{
    (void)ctx;
    outbuf[outlen++] = c;
    if (c == '\n' || outlen == sizeof(outbuf))
        fflush_out();
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(out_char, 0, fmt, ap);
    va_end(ap);
    return n;
}

uint32_t get_iters(const char *args, int prog)
{
    char val[16];
    const char *p = args, *end;
    while (*p == ' ')
        p++;
    if (cmdline_get(args, "iters", val, sizeof(val)))
        p = val;
    uint32_t n = parse_u32(p, &end);
    if (end == p || n == 0)
        return programs[prog].default_iters;   /* 0 for cpu: workload's own */
    return n;
}

void report(const char *name, uint32_t iters, uint32_t checksum, uint64_t cycles, uint32_t ops)
{
    printf(WL_RESULT_FMT, name, iters, checksum);
    printf(WL_TIMING_FMT, name, cycles / (ops ? ops : 1), iters, cycles);
}
