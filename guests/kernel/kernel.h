/* Internal interfaces of the teaching kernel. */
#ifndef RV_KERNEL_H
#define RV_KERNEL_H

#include <stdint.h>
#include "rvlib.h"
#include "arch.h"
#include "syscall.h"
#include "programs.h"

/* ---- memory layout ---- */
#define KBASE           0xC0000000u         /* kernel: KBASE + physical */
#define P2V(p)          ((void *)((uint32_t)(p) + KBASE))
#define V2P(v)          ((uint32_t)(v) - KBASE)
#define PAGE_SIZE       4096u
#define PAGE_DOWN(a)    ((uint32_t)(a) & ~(PAGE_SIZE - 1))
#define PAGE_UP(a)      (((uint32_t)(a) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
#define MAX_PHYS        (128u << 20)       /* direct map covers at most this */
#define USER_TOP        KBASE              /* user space: [0, USER_TOP) */
#define USER_STACK_MAX  (1u << 20)
#define USER_STACK_LOW  (USER_TOP - USER_STACK_MAX)
#define USER_HEAP_MAX   0x40000000u         /* sbrk limit */
#define SCRATCH_VA      0xFF800000u         /* ptemod scratch page (PDE 1022: the top 4 MiB stay free for a monitor) */

/* ---- page table entries ---- */
#define PTE_P       0x001u
#define PTE_W       0x002u
#define PTE_U       0x004u
#define PTE_COW     0x200u   /* available bit: copy-on-write */
#define PTE_STATIC  0x400u   /* available bit: frame of the kernel image */
#define PTE_FRAME(e) ((e) & ~0xFFFu)

/* ---- segments ---- */
#define SEL_KCODE   0x08
#define SEL_KDATA   0x10
#define SEL_UCODE   0x1B
#define SEL_UDATA   0x23
#define SEL_TSS     0x28

/* ---- Multiboot (v1) information ---- */
#define MB_BOOT_MAGIC 0x2BADB002u
struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
    uint32_t mods_count, mods_addr, syms[4], mmap_length, mmap_addr;
};
struct mb_mmap {
    uint32_t size;
    uint32_t addr_lo, addr_hi, len_lo, len_hi;
    uint32_t type;
};

/* ---- trap frame (entry.S) ---- */
struct trapframe {
    uint32_t edi, esi, ebp, esp_k, ebx, edx, ecx, eax;   /* pushal */
    uint32_t gs, fs, es, ds;
    uint32_t vector, err;
    uint32_t eip, cs, eflags;
    uint32_t esp, ss;                                    /* from user mode */
};

/* ---- processes ---- */
#define NPROC 32
enum pstate { P_UNUSED, P_RUNNABLE, P_SLEEPING, P_ZOMBIE };

struct proc {
    enum pstate state;
    int pid;
    struct proc *parent;
    uint32_t kesp;            /* saved kernel esp (swtch) */
    uint32_t kstack;          /* kernel stack frame (virtual) */
    uint32_t *pd;             /* page directory (virtual) */
    uint32_t zero_start;      /* demand-zero region [zero_start, PAGE_UP(brk)) */
    uint32_t heap_start;
    uint32_t brk;
    uint32_t fault_handler;   /* user fault handler, 0 = kill on fault */
    const void *chan;         /* sleeping on */
    int exit_status;
    int killed;               /* kill() pending: exit on the way to user mode */
    int prog;                 /* program index, -1 for the idle task */
    char name[16];
};

extern struct proc procs[NPROC];
extern struct proc *current;
extern volatile int need_resched;
extern volatile uint32_t ticks;
extern uint32_t timer_hz;
extern struct rv_stats kstats;
extern const char *const program_names[NPROGRAMS];

/* console.c */
void serial_init(void);
void serial_enable_rx_irq(void);
void serial_irq(void);
void console_putc(char c);
void console_write(const char *s, uint32_t n);
int console_read(char *buf, uint32_t n);     /* blocks; returns >= 1 */
uint32_t console_rx_room(void);
void console_rx_push(const char *p, uint32_t n);
int kprintf(const char *fmt, ...);
void kpanic_tf(const struct trapframe *tf, const char *fmt, ...) __attribute__((noreturn));
#define panic(...) kpanic_tf(0, __VA_ARGS__)
void machine_exit(uint32_t status) __attribute__((noreturn));

/* desc.c */
void desc_init(int shared);   /* shared: the GDT in gdt_shared, not in a page of its own */
extern uint64_t gdt_shared[6];
void tss_set_kstack(uint32_t esp0);

/* trap.c */
void trap_init(uint32_t hz);
void trap_dispatch(struct trapframe *tf);
extern const uint32_t pic_master_mask;

/* mm.c */
void mm_init(struct mb_info *mbi);
uint32_t frame_alloc(int zero);              /* physical address, 0 = none */
void frame_put(uint32_t phys);
uint32_t frames_free(void);
uint32_t frames_total(void);
void balloon_poll(void);                     /* balloon.c: follow the memory target */
uint32_t *pd_create(void);
void as_free(uint32_t *pd);
uint32_t *as_clone(uint32_t *pd);
int map_page(uint32_t *pd, uint32_t va, uint32_t phys, uint32_t flags);
uint32_t *pte_get(uint32_t *pd, uint32_t va, int create);
int vm_fault(struct proc *p, uint32_t addr, int write);  /* 0 = resolved */
int user_check(uint32_t addr, uint32_t len, int write);  /* 0 = ok */
int copy_to_user(uint32_t dst, const void *src, uint32_t len);
int copy_from_user(void *dst, uint32_t src, uint32_t len);
int copy_str_from_user(char *dst, uint32_t src, uint32_t size);
uint32_t sys_sbrk_impl(int32_t incr);
uint32_t kbench_ptemod(uint32_t n);
extern uint32_t *kernel_pd;

/* proc.c */
void proc_init(void);
void start_init(const char *cmdline) ;
void schedule(void);
void sleep_on(const void *chan);             /* call with interrupts disabled */
void wakeup(const void *chan);
void proc_exit(int status) __attribute__((noreturn));
int proc_fork(struct trapframe *tf);
int proc_wait(uint32_t status_ptr);
int proc_exec(struct trapframe *tf, const char *name, const char *args);
int proc_kill(int pid);
void proc_yield(void);
void proc_sleep_ms(uint32_t ms);
void idle_loop(void) __attribute__((noreturn));
void timer_tick(void);

/* virtio.c, vblk.c, vcons.c: legacy virtio-pci devices, when the PCI bus has them */
extern int virtio_irq_line;                 /* -1: none */
void virtio_init(void);
void virtio_irq(void);
int vblk_present(void);
int32_t vblk_size(void);
int vblk_rw(int write, uint32_t lba, uint32_t n, void *buf);
int vblk_flush(void);
int vcons_present(void);
void vcons_putc(char c);
void vcons_flush(void);
void vcons_refill(void);
void vcons_start_rx(void);

/* ata.c: drive 0..3 (primary master, slave; secondary master, slave) */
int32_t ata_size(int drive);                 /* sectors, -1 without a disk */
int ata_rw(int drive, int write, uint32_t lba, uint32_t n, void *buf);
int ata_flush(int drive);

/* syscall.c */
void syscall_dispatch(struct trapframe *tf);

/* entry.S */
extern const uint32_t trap_vectors[49];
void trap_return(void);
void swtch(uint32_t *save_esp, uint32_t new_esp);

/* user image (userimg.S, generated by the build) */
extern const uint8_t userimg_start[], userimg_end[];

#endif
