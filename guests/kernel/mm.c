/* Physical frames, page tables, address spaces, page faults.
 *
 * All RAM (up to MAX_PHYS) is mapped at KBASE + physical in every address
 * space by shared kernel page tables; user space is [0, KBASE).  Frames
 * come from a free list, else from a bump pointer over never-used memory,
 * and are zeroed only when handed out for a purpose that needs it (memory
 * is never cleared wholesale at boot).  A 16-bit reference count per frame
 * supports copy-on-write fork. */
#include "kernel.h"

extern uint8_t _kernel_end[];

uint32_t *kernel_pd;
static uint32_t mem_end;        /* end of usable RAM (physical) */
static uint32_t bump;           /* next frame never handed out */
static uint32_t free_head;      /* free list through the first word of each frame */
static uint32_t free_count;
static uint32_t total_frames;
static uint16_t *refcnt;        /* indexed by frame number */
static uint32_t *scratch_pte;   /* PTE of SCRATCH_VA */
static uint32_t scratch_frame[2];

uint32_t frame_alloc(int zero)
{
    uint32_t f;
    if (free_head) {
        f = free_head;
        free_head = *(uint32_t *)P2V(f);
        free_count--;
    } else if (bump < mem_end) {
        f = bump;
        bump += PAGE_SIZE;
    } else {
        return 0;
    }
    refcnt[f >> 12] = 1;
    if (zero)
        memset(P2V(f), 0, PAGE_SIZE);
    return f;
}

void frame_put(uint32_t f)
{
    if (--refcnt[f >> 12])
        return;
    *(uint32_t *)P2V(f) = free_head;
    free_head = f;
    free_count++;
}

uint32_t frames_free(void)
{
    return free_count + (mem_end - bump) / PAGE_SIZE;
}

uint32_t frames_total(void)
{
    return total_frames;
}

void mm_init(struct mb_info *mbi)
{
    if (mbi->flags & 1) {
        mem_end = 0x100000u + mbi->mem_upper * 1024u;
    } else if (mbi->flags & 0x40) {
        /* The memory map: take the available region that holds 1 MiB. */
        uint32_t p = mbi->mmap_addr, end = mbi->mmap_addr + mbi->mmap_length;
        while (p < end) {
            struct mb_mmap *m = P2V(p);
            if (m->type == 1 && m->addr_hi == 0 && m->addr_lo <= 0x100000u &&
                m->addr_lo + m->len_lo > 0x100000u)
                mem_end = m->addr_lo + m->len_lo;
            p += m->size + 4;
        }
    }
    if (mem_end == 0)
        panic("the boot loader gave no memory size");
    if (mem_end > MAX_PHYS)
        mem_end = MAX_PHYS;
    mem_end &= ~(PAGE_SIZE - 1);
    if (mem_end < (4u << 20))
        panic("need at least 4 MiB of memory, have %u KiB", mem_end / 1024);
    total_frames = mem_end / PAGE_SIZE;

    /* Everything below is carved out of the frames right after the kernel,
     * which the boot page tables (first 8 MiB) already map. */
    bump = V2P(_kernel_end);
    uint32_t rc_bytes = PAGE_UP(total_frames * sizeof(uint16_t));
    refcnt = P2V(bump);
    bump += rc_bytes;
    memset(refcnt, 0, rc_bytes);

    kernel_pd = P2V(frame_alloc(1));
    uint32_t npt = (total_frames + 1023) / 1024;
    for (uint32_t t = 0; t < npt; t++) {
        uint32_t pt_phys = frame_alloc(0);
        uint32_t *pt = P2V(pt_phys);
        for (uint32_t i = 0; i < 1024; i++) {
            uint32_t frame = (t * 1024 + i) * PAGE_SIZE;
            pt[i] = frame < mem_end ? frame | PTE_P | PTE_W : 0;
        }
        kernel_pd[768 + t] = pt_phys | PTE_P | PTE_W;
    }

    /* The scratch page of the ptemod benchmark, in a page table of its own,
     * and the two frames it alternates between. */
    uint32_t spt = frame_alloc(1);
    kernel_pd[SCRATCH_VA >> 22] = spt | PTE_P | PTE_W;
    scratch_pte = (uint32_t *)P2V(spt) + ((SCRATCH_VA >> 12) & 1023);
    for (int i = 0; i < 2; i++) {
        scratch_frame[i] = frame_alloc(0);
        *(uint32_t *)P2V(scratch_frame[i]) = i ? 0x10000u : 1u;
    }

    arch_write_cr3(V2P(kernel_pd));   /* drops the identity map of boot.S */
}

uint32_t *pte_get(uint32_t *pd, uint32_t va, int create)
{
    uint32_t *pde = &pd[va >> 22];
    if (!(*pde & PTE_P)) {
        if (!create)
            return 0;
        uint32_t pt = frame_alloc(1);
        if (!pt)
            return 0;
        *pde = pt | PTE_P | PTE_W | PTE_U;
    }
    return (uint32_t *)P2V(PTE_FRAME(*pde)) + ((va >> 12) & 1023);
}

int map_page(uint32_t *pd, uint32_t va, uint32_t phys, uint32_t flags)
{
    uint32_t *pte = pte_get(pd, va, 1);
    if (!pte)
        return -1;
    *pte = phys | flags | PTE_P;
    return 0;
}

uint32_t *pd_create(void)
{
    uint32_t f = frame_alloc(1);
    if (!f)
        return 0;
    uint32_t *pd = P2V(f);
    for (int i = 768; i < 1024; i++)
        pd[i] = kernel_pd[i];
    return pd;
}

void as_free(uint32_t *pd)
{
    for (int i = 0; i < 768; i++) {
        if (!(pd[i] & PTE_P))
            continue;
        uint32_t *pt = P2V(PTE_FRAME(pd[i]));
        for (int j = 0; j < 1024; j++) {
            uint32_t e = pt[j];
            if ((e & PTE_P) && !(e & PTE_STATIC))
                frame_put(PTE_FRAME(e));
        }
        frame_put(PTE_FRAME(pd[i]));
    }
    frame_put(V2P(pd));
}

/* fork: share every user page copy-on-write (parent and child). */
uint32_t *as_clone(uint32_t *pd)
{
    uint32_t *npd = pd_create();
    if (!npd)
        return 0;
    for (int i = 0; i < 768; i++) {
        if (!(pd[i] & PTE_P))
            continue;
        uint32_t npt_phys = frame_alloc(0);
        if (!npt_phys) {
            as_free(npd);
            arch_write_cr3(arch_read_cr3());
            return 0;
        }
        uint32_t *pt = P2V(PTE_FRAME(pd[i])), *npt = P2V(npt_phys);
        for (int j = 0; j < 1024; j++) {
            uint32_t e = pt[j];
            if (e & PTE_P) {
                if (e & PTE_W) {
                    e = (e & ~PTE_W) | PTE_COW;
                    pt[j] = e;
                }
                if (!(e & PTE_STATIC))
                    refcnt[e >> 12]++;
            }
            npt[j] = e;
        }
        npd[i] = npt_phys | (pd[i] & 0xFFF);
    }
    arch_write_cr3(arch_read_cr3());      /* parent's pages became read-only */
    return npd;
}

/* Resolve a user page fault of process p (the current one).
 * 0: resolved, -1: invalid access, -2: out of memory. */
int vm_fault(struct proc *p, uint32_t addr, int write)
{
    if (addr >= USER_TOP)
        return -1;
    uint32_t va = PAGE_DOWN(addr);
    uint32_t *pte = pte_get(p->pd, va, 0);
    if (pte && (*pte & PTE_P)) {
        if (!write || !(*pte & PTE_COW))
            return -1;
        uint32_t old = PTE_FRAME(*pte);
        if (refcnt[old >> 12] == 1) {
            *pte = (*pte | PTE_W) & ~PTE_COW;       /* last sharer: reuse */
        } else {
            uint32_t nf = frame_alloc(0);
            if (!nf)
                return -2;
            memcpy(P2V(nf), P2V(old), PAGE_SIZE);
            frame_put(old);
            *pte = nf | ((*pte & 0xFFF & ~PTE_COW) | PTE_W);
        }
        arch_invlpg(va);
        kstats.pgfaults++;
        return 0;
    }
    if ((va >= p->zero_start && va < PAGE_UP(p->brk)) || va >= USER_STACK_LOW) {
        uint32_t nf = frame_alloc(1);
        if (!nf)
            return -2;
        if (map_page(p->pd, va, nf, PTE_U | PTE_W) < 0) {
            frame_put(nf);
            return -2;
        }
        kstats.pgfaults++;
        return 0;
    }
    return -1;
}

/* Make [addr, addr+len) of the current process accessible for the kernel,
 * resolving demand-zero and copy-on-write faults up front. */
int user_check(uint32_t addr, uint32_t len, int write)
{
    if (len == 0)
        return 0;
    if (addr >= USER_TOP || len > USER_TOP - addr)
        return -1;
    for (uint32_t va = PAGE_DOWN(addr); va < addr + len; va += PAGE_SIZE) {
        uint32_t *pte = pte_get(current->pd, va, 0);
        if (pte && (*pte & PTE_P)) {
            if (!(*pte & PTE_U))
                return -1;
            if (write && !(*pte & PTE_W) && vm_fault(current, va, 1))
                return -1;
        } else if (vm_fault(current, va, write)) {
            return -1;
        }
        if (va + PAGE_SIZE < va)
            break;
    }
    return 0;
}

int copy_to_user(uint32_t dst, const void *src, uint32_t len)
{
    if (user_check(dst, len, 1))
        return -1;
    memcpy((void *)dst, src, len);
    return 0;
}

int copy_from_user(void *dst, uint32_t src, uint32_t len)
{
    if (user_check(src, len, 0))
        return -1;
    memcpy(dst, (const void *)src, len);
    return 0;
}

int copy_str_from_user(char *dst, uint32_t src, uint32_t size)
{
    for (uint32_t i = 0; i < size; i++) {
        uint32_t a = src + i;
        if ((i == 0 || (a & (PAGE_SIZE - 1)) == 0) && user_check(a, 1, 0))
            return -1;
        dst[i] = *(const char *)a;
        if (!dst[i])
            return (int)i;
    }
    return -1;   /* too long */
}

uint32_t sys_sbrk_impl(int32_t incr)
{
    struct proc *p = current;
    uint32_t old = p->brk, nb = old + (uint32_t)incr;
    if (incr > 0 && (nb < old || nb > USER_HEAP_MAX))
        return (uint32_t)-1;
    if (incr < 0 && (nb > old || nb < p->heap_start))
        return (uint32_t)-1;
    for (uint32_t va = PAGE_UP(nb); va < PAGE_UP(old); va += PAGE_SIZE) {
        uint32_t *pte = pte_get(p->pd, va, 0);
        if (pte && (*pte & PTE_P)) {
            if (!(*pte & PTE_STATIC))
                frame_put(PTE_FRAME(*pte));
            *pte = 0;
            arch_invlpg(va);
        }
    }
    p->brk = nb;
    return old;
}

/* ptemod nanobenchmark: point the scratch PTE at one of two frames,
 * invalidate the TLB entry and read the page.  A missing invalidation
 * shows in the checksum. */
uint32_t kbench_ptemod(uint32_t n)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        *scratch_pte = scratch_frame[i & 1] | PTE_P | PTE_W;
        arch_invlpg(SCRATCH_VA);
        sum += *(volatile uint32_t *)SCRATCH_VA;
    }
    return sum;
}
