/* Processes: round-robin scheduler, sleep/wakeup, fork/exec/exit/wait.
 *
 * The kernel is not preemptible: a process switches only in schedule(),
 * called when it blocks, yields, exits, or on its way back to user mode
 * after a timer tick asked for it (need_resched). */
#include "kernel.h"

/* ELF32 (only what the loader needs). */
struct elf_ehdr {
    uint8_t ident[16];
    uint16_t type, machine;
    uint32_t version, entry, phoff, shoff, flags;
    uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};
struct elf_phdr {
    uint32_t type, offset, vaddr, paddr, filesz, memsz, flags, align;
};
#define PT_LOAD 1
#define PF_W 2

#define PROG_NAME(id, name, grp, iters, desc) name,
const char *const program_names[NPROGRAMS] = { PROGRAM_LIST(PROG_NAME) };
#undef PROG_NAME

struct proc procs[NPROC];
struct proc *current;
volatile int need_resched;
volatile uint32_t ticks;
uint32_t timer_hz = 100;
struct rv_stats kstats;
uint64_t gdt_shared[6];          /* the GDT with gdt=shared: beside the counters (desc.c) */
static int next_pid = 1;
static struct proc *initproc;

extern uint8_t boot_stack_top[];

void proc_init(void)
{
    struct proc *idle = &procs[0];
    idle->state = P_RUNNABLE;
    idle->pid = 0;
    idle->pd = kernel_pd;
    idle->kstack = (uint32_t)boot_stack_top - PAGE_SIZE;
    idle->prog = -1;
    strncpy0(idle->name, "idle", sizeof(idle->name));
    current = idle;
}

static struct proc *proc_alloc(void)
{
    for (int i = 1; i < NPROC; i++) {
        struct proc *p = &procs[i];
        if (p->state != P_UNUSED || p->kstack)
            continue;
        uint32_t ks = frame_alloc(0);
        if (!ks)
            return 0;
        memset(p, 0, sizeof(*p));
        p->kstack = (uint32_t)P2V(ks);
        p->pid = next_pid++;
        return p;
    }
    return 0;
}

static void proc_free(struct proc *p)
{
    frame_put(V2P(p->kstack));
    p->kstack = 0;
    p->state = P_UNUSED;
    p->parent = 0;
}

/* Put a copy of tf at the top of p's kernel stack, below it a swtch frame
 * that "returns" to trap_return. */
static void kstack_setup(struct proc *p, const struct trapframe *tf)
{
    struct trapframe *ntf = (struct trapframe *)(p->kstack + PAGE_SIZE - sizeof(*ntf));
    *ntf = *tf;
    uint32_t *sp = (uint32_t *)ntf;
    *--sp = (uint32_t)trap_return;
    *--sp = 0;   /* ebp */
    *--sp = 0;   /* ebx */
    *--sp = 0;   /* esi */
    *--sp = 0;   /* edi */
    p->kesp = (uint32_t)sp;
}

static void switch_to(struct proc *next)
{
    struct proc *prev = current;
    tss_set_kstack(next->kstack + PAGE_SIZE);
    if (next->pd != prev->pd)
        arch_write_cr3(V2P(next->pd));
    current = next;
    kstats.ctxsw++;
    swtch(&prev->kesp, next->kesp);
}

void schedule(void)
{
    uint32_t flags = arch_irq_save();
    struct proc *prev = current, *next = &procs[0];
    int start = (int)(prev - procs);
    need_resched = 0;
    for (int k = 1; k <= NPROC; k++) {
        int i = (start + k) % NPROC;
        if (i != 0 && procs[i].state == P_RUNNABLE) {
            next = &procs[i];
            break;
        }
    }
    if (next != prev)
        switch_to(next);
    arch_irq_restore(flags);
}

static int runnable_exists(void)
{
    for (int i = 1; i < NPROC; i++)
        if (procs[i].state == P_RUNNABLE)
            return 1;
    return 0;
}

void idle_loop(void)
{
    for (;;) {
        balloon_poll();
        arch_cli();
        if (runnable_exists())
            schedule();
        else
            arch_safe_halt();        /* sti; hlt: wakes on the next interrupt */
    }
}

/* Interrupts must be off (the caller did arch_irq_save). */
void sleep_on(const void *chan)
{
    current->chan = chan;
    current->state = P_SLEEPING;
    schedule();
    current->chan = 0;
}

void wakeup(const void *chan)
{
    uint32_t flags = arch_irq_save();
    for (int i = 1; i < NPROC; i++)
        if (procs[i].state == P_SLEEPING && procs[i].chan == chan)
            procs[i].state = P_RUNNABLE;
    arch_irq_restore(flags);
}

void timer_tick(void)
{
    ticks++;
    kstats.ticks = ticks;
    wakeup((const void *)&ticks);
    if (current != &procs[0])
        need_resched = 1;
}

void proc_yield(void)
{
    schedule();
}

void proc_sleep_ms(uint32_t ms)
{
    uint32_t n = (uint32_t)(((uint64_t)ms * timer_hz + 999) / 1000);
    if (n == 0)
        n = 1;
    uint32_t flags = arch_irq_save();
    uint32_t until = ticks + n;
    while ((int32_t)(ticks - until) < 0 && !current->killed)
        sleep_on((const void *)&ticks);
    arch_irq_restore(flags);
}

/* Build a fresh address space running program prog with argument string
 * args: the user image's text is mapped straight from the kernel image
 * (read-only, shared), its data copied, bss/heap/stack demand-zero.
 * Fills p's memory fields and the user-mode trap frame tf. */
static uint32_t *image_build(struct proc *p, int prog, const char *args, struct trapframe *tf)
{
    const struct elf_ehdr *eh = (const void *)userimg_start;
    if (eh->ident[0] != 0x7F || eh->ident[1] != 'E' || eh->ident[2] != 'L' || eh->ident[3] != 'F')
        panic("user image is not ELF");
    uint32_t *pd = pd_create();
    if (!pd)
        return 0;
    uint32_t zero_start = 0, heap_start = 0;
    for (int i = 0; i < eh->phnum; i++) {
        const struct elf_phdr *ph =
            (const void *)(userimg_start + eh->phoff + (uint32_t)i * eh->phentsize);
        if (ph->type != PT_LOAD || ph->memsz == 0)
            continue;
        uint32_t va0 = PAGE_DOWN(ph->vaddr);
        if (!(ph->flags & PF_W)) {
            if (((ph->vaddr ^ ph->offset) & (PAGE_SIZE - 1)) || ph->memsz != ph->filesz)
                panic("user image: read-only segment not page-aligned");
            uint32_t phys0 = V2P(userimg_start) + PAGE_DOWN(ph->offset);
            for (uint32_t va = va0; va < ph->vaddr + ph->memsz; va += PAGE_SIZE)
                if (map_page(pd, va, phys0 + (va - va0), PTE_U | PTE_STATIC) < 0)
                    goto fail;
        } else {
            uint32_t fend = ph->vaddr + ph->filesz;
            for (uint32_t va = va0; va < fend; va += PAGE_SIZE) {
                uint32_t f = frame_alloc(1);
                if (!f)
                    goto fail;
                if (map_page(pd, va, f, PTE_U | PTE_W) < 0) {
                    frame_put(f);
                    goto fail;
                }
                uint32_t lo = va < ph->vaddr ? ph->vaddr : va;
                uint32_t hi = va + PAGE_SIZE < fend ? va + PAGE_SIZE : fend;
                memcpy((uint8_t *)P2V(f) + (lo - va),
                       userimg_start + ph->offset + (lo - ph->vaddr), hi - lo);
            }
            if (PAGE_UP(fend) > zero_start)
                zero_start = PAGE_UP(fend);
        }
        if (PAGE_UP(ph->vaddr + ph->memsz) > heap_start)
            heap_start = PAGE_UP(ph->vaddr + ph->memsz);
    }
    if (!zero_start)
        zero_start = heap_start;

    /* The top stack page holds the argument string, then [prog][argp]. */
    uint32_t sf = frame_alloc(1);
    if (!sf)
        goto fail;
    if (map_page(pd, USER_TOP - PAGE_SIZE, sf, PTE_U | PTE_W) < 0) {
        frame_put(sf);
        goto fail;
    }
    uint8_t *kpage = P2V(sf);
    uint32_t len = (uint32_t)strlen(args) + 1;
    uint32_t argp = (USER_TOP - len) & ~3u;
    memcpy(kpage + (argp - (USER_TOP - PAGE_SIZE)), args, len);
    uint32_t sp = argp - 8;
    uint32_t *words = (uint32_t *)(kpage + (sp - (USER_TOP - PAGE_SIZE)));
    words[0] = (uint32_t)prog;
    words[1] = argp;

    p->zero_start = zero_start;
    p->heap_start = heap_start;
    p->brk = heap_start;
    p->fault_handler = 0;
    p->prog = prog;
    strncpy0(p->name, program_names[prog], sizeof(p->name));

    memset(tf, 0, sizeof(*tf));
    tf->eip = eh->entry;
    tf->cs = SEL_UCODE;
    tf->eflags = EFLAGS_IF | 0x2;
    tf->esp = sp;
    tf->ss = SEL_UDATA;
    tf->ds = tf->es = tf->fs = tf->gs = SEL_UDATA;
    return pd;

fail:
    as_free(pd);
    return 0;
}

static int program_lookup(const char *name)
{
    for (int i = 0; i < NPROGRAMS; i++)
        if (!strcmp(program_names[i], name))
            return i;
    return -1;
}

void start_init(const char *cmdline)
{
    struct trapframe tf;
    struct proc *p = proc_alloc();
    if (!p)
        panic("cannot allocate the first process");
    p->pd = image_build(p, PROG_init, cmdline, &tf);
    if (!p->pd)
        panic("cannot load the first process");
    kstack_setup(p, &tf);
    initproc = p;
    p->state = P_RUNNABLE;
}

int proc_exec(struct trapframe *tf, const char *name, const char *args)
{
    int prog = program_lookup(name);
    if (prog < 0 || prog == PROG_init)
        return -1;
    struct trapframe ntf;
    uint32_t *pd = image_build(current, prog, args, &ntf);
    if (!pd)
        return -1;
    uint32_t *old = current->pd;
    current->pd = pd;
    arch_write_cr3(V2P(pd));
    as_free(old);
    *tf = ntf;
    return 0;
}

int proc_fork(struct trapframe *tf)
{
    struct proc *np = proc_alloc();
    if (!np)
        return -1;
    np->pd = as_clone(current->pd);
    if (!np->pd) {
        proc_free(np);
        return -1;
    }
    np->parent = current;
    np->zero_start = current->zero_start;
    np->heap_start = current->heap_start;
    np->brk = current->brk;
    np->fault_handler = current->fault_handler;
    np->prog = current->prog;
    memcpy(np->name, current->name, sizeof(np->name));
    struct trapframe ctf = *tf;
    ctf.eax = 0;                      /* fork() returns 0 in the child */
    kstack_setup(np, &ctf);
    kstats.forks++;
    np->state = P_RUNNABLE;
    return np->pid;
}

void proc_exit(int status)
{
    struct proc *p = current;
    if (p == initproc) {
        /* The machine's exit status is init's, 0..127 (QEMU: 2 * status + 1). */
        kprintf("kernel: halt (status %d)\n", status);
        machine_exit(status >= 0 && status <= 127 ? (uint32_t)status : 127);
    }
    arch_write_cr3(V2P(kernel_pd));
    as_free(p->pd);
    p->pd = kernel_pd;

    uint32_t flags = arch_irq_save();
    for (int i = 1; i < NPROC; i++) {
        if (procs[i].parent == p && procs[i].state != P_UNUSED) {
            procs[i].parent = initproc;
            if (procs[i].state == P_ZOMBIE)
                wakeup(initproc);
        }
    }
    p->exit_status = status;
    p->state = P_ZOMBIE;
    wakeup(p->parent);
    schedule();
    arch_irq_restore(flags);
    panic("zombie %d scheduled", p->pid);
}

int proc_wait(uint32_t status_ptr)
{
    uint32_t flags = arch_irq_save();
    for (;;) {
        int have = 0;
        for (int i = 1; i < NPROC; i++) {
            struct proc *q = &procs[i];
            if (q->state == P_UNUSED || q->parent != current)
                continue;
            have = 1;
            if (q->state != P_ZOMBIE)
                continue;
            int pid = q->pid, st = q->exit_status;
            proc_free(q);
            arch_irq_restore(flags);
            if (status_ptr && copy_to_user(status_ptr, &st, sizeof(st)))
                return -1;
            return pid;
        }
        if (!have || current->killed) {
            arch_irq_restore(flags);
            return -1;
        }
        sleep_on(current);
    }
}

/* Mark pid for death; it exits when it next heads for user mode (a
 * sleeping process is woken for that).  init and the idle task are immune. */
int proc_kill(int pid)
{
    if (pid <= 1)
        return -1;
    for (int i = 1; i < NPROC; i++) {
        struct proc *p = &procs[i];
        if (p->pid != pid || p->state == P_UNUSED || p->state == P_ZOMBIE)
            continue;
        uint32_t flags = arch_irq_save();
        p->killed = 1;
        if (p->state == P_SLEEPING)
            p->state = P_RUNNABLE;
        arch_irq_restore(flags);
        return 0;
    }
    return -1;
}
