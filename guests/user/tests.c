/* Demo, self-test and fault programs. */
#include "ulib.h"

int prog_hello(const char *args)
{
    (void)args;
    printf("hello from pid %d\n", getpid());
    return 0;
}

int prog_fault_null(const char *args)
{
    (void)args;
    printf("fault-null: reading address 0\n");
    return *(volatile int *)0;
}

int prog_fault_priv(const char *args)
{
    (void)args;
    printf("fault-priv: executing hlt in user mode\n");
    __asm__ volatile("hlt");
    return 0;
}

int prog_fault_div(const char *args)
{
    (void)args;
    volatile uint32_t zero = 0;
    printf("fault-div: dividing by zero\n");
    return (int)(100 / zero);
}

int prog_panic(const char *args)
{
    (void)args;
    printf("panic: asking the kernel to dereference NULL\n");
    kbench(KB_PANIC, 0, 0);
    printf("panic: the kernel survived?\n");
    return 1;
}

/* ---- selftest ---- */

static int failures, checks;

static void check(const char *what, int ok)
{
    checks++;
    if (!ok)
        failures++;
    printf("selftest: %-28s %s\n", what, ok ? "ok" : "FAILED");
}

static volatile uint32_t cow_global = 42;
uint32_t divz_loop(uint32_t n);
void divz_handler(void);
extern volatile uint32_t divz_count;

static void test_fork_cow(void)
{
    volatile uint32_t *heap = sbrk(4096);
    heap[0] = 1000;
    heap[1023] = 2000;
    int pid = fork();
    if (pid == 0) {
        cow_global = 43;
        heap[0] = 1001;
        heap[1023] += 5;
        int ok = cow_global == 43 && heap[0] == 1001 && heap[1023] == 2005;
        exit(ok ? 7 : 99);
    }
    int status = -1, w = wait(&status);
    check("fork returns the child pid", pid > 0 && w == pid);
    check("child saw its own copy", status == 7);
    check("parent memory unchanged", cow_global == 42 && heap[0] == 1000 && heap[1023] == 2000);
    heap[0] = 5;                   /* parent's write after the child is gone */
    check("parent write after COW", heap[0] == 5);
    sbrk(-4096);
}

static void test_wait_many(void)
{
    int sum = 0, reaped = 0;
    for (int i = 1; i <= 4; i++)
        if (fork() == 0)
            exit(i * 10);
    for (;;) {
        int st = 0;
        if (wait(&st) < 0)
            break;
        sum += st;
        reaped++;
    }
    check("wait collects 4 children", reaped == 4 && sum == 100);
    check("wait without children fails", wait(0) == -1);
}

static void test_sbrk(void)
{
    uint32_t size = 3 * 4096 + 100;
    volatile uint8_t *p = sbrk((int32_t)size);
    int zero = 1;
    for (uint32_t i = 0; i < size; i += 97)
        zero &= p[i] == 0;
    for (uint32_t i = 0; i < size; i++)
        p[i] = (uint8_t)(i * 7);
    int same = 1;
    for (uint32_t i = 0; i < size; i++)
        same &= p[i] == (uint8_t)(i * 7);
    check("sbrk memory starts zeroed", zero);
    check("sbrk memory keeps data", same);
    sbrk(-(int32_t)size);
    p = sbrk((int32_t)size);
    zero = 1;
    for (uint32_t i = 0; i < size; i += 97)
        zero &= p[i] == 0;
    check("freed heap comes back zeroed", zero);
    sbrk(-(int32_t)size);
    check("sbrk below the heap fails", sbrk(-0x10000000) == (void *)-1);
}

static void test_time(void)
{
    uint32_t t0 = time_ms();
    sleep_ms(30);
    uint32_t t1 = time_ms();
    check("sleep 30 ms advances time", t1 - t0 >= 30 && t1 - t0 < 5000);
    check("yield returns", yield() == 0);

    /* A child that spins in user mode without system calls: the parent
     * only runs again if the timer preempts the child. */
    int pid = fork();
    if (pid == 0)
        for (;;)
            __asm__ volatile("");
    sleep_ms(20);
    int st = -1;
    check("preemption of a spinning child", kill(pid) == 0 && wait(&st) == pid &&
                                            st == KILLED_STATUS(9));
    check("kill of a reaped pid fails", kill(pid) == -1);
}

static void test_exec(void)
{
    int pid = fork();
    if (pid == 0) {
        exec("hello", "");
        exit(99);
    }
    int st = -1;
    wait(&st);
    check("exec of a built-in program", st == 0);
    check("exec of an unknown program", exec("no-such-program", "") == -1);
}

static void test_faults(void)
{
    int pid = fork();
    if (pid == 0) {
        /* Writing to the read-only text segment must kill the child. */
        *(volatile uint8_t *)(uint32_t)prog_hello = 0xC3;
        exit(0);
    }
    int st = -1;
    wait(&st);
    check("write to text is killed", st == KILLED_STATUS(14));
    check("bad buffer gives an error", write(1, (void *)0x10, 4) == -1);
    check("kernel address is refused", write(1, (void *)0xC0100000, 4) == -1);
    divz_count = 0;
    set_fault_handler(divz_handler);
    uint32_t n = divz_loop(3);
    set_fault_handler(0);
    check("#DE goes to the handler", n == 3);
}

static void test_div64(void)
{
    static volatile uint64_t un[4] = {
        0x123456789ABCDEF0ull, 1000000000000ull, 0xFFFFFFFFFFFFFFFFull, 12345ull };
    static volatile uint64_t ud[4] = { 0x12345ull, 7ull, 0x100000001ull, 0xFFFFFFFFFull };
    static volatile int64_t sn[2] = { -1000000000000ll, 999999999999ll };
    static volatile int64_t sd[2] = { 7ll, -0x123456789ll };
    for (int i = 0; i < 4; i++)
        printf("selftest: div64 %llx / %llx = %llx rem %llx\n", un[i], ud[i], un[i] / ud[i],
               un[i] % ud[i]);
    for (int i = 0; i < 2; i++)
        printf("selftest: div64 %lld / %lld = %lld rem %lld\n", sn[i], sd[i], sn[i] / sd[i],
               sn[i] % sd[i]);
}

int prog_selftest(const char *args)
{
    (void)args;
    check("getpid", getpid() > 1);
    test_fork_cow();
    test_wait_many();
    test_sbrk();
    test_time();
    test_exec();
    test_faults();
    test_div64();
    printf("selftest: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
