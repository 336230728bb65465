# xv6ish: the boot path, trap entry, context switch and user programs of a kernel
# written the way xv6 (x86, rev. 9) is: higher half at 0x80100000, entered through
# a page directory of 4 MiB pages, per-CPU data through %gs, fork/exec/wait/exit
# on per-process page directories, system calls by INT 0x40, the timer preempting.
#define KERNBASE 0x80000000
#define V2P_WO(x) ((x) - KERNBASE)

.section .multiboot, "a"
.p2align 2
.long 0x1BADB002, 0, -0x1BADB002

.text
# the ELF entry is physical: paging is off when the loader jumps there
.globl _start
_start = V2P_WO(entry)
.globl entry
entry:
  movl %cr4, %eax
  orl $0x10, %eax                 # CR4.PSE: entrypgdir's 4 MiB pages
  movl %eax, %cr4
  movl $(V2P_WO(entrypgdir)), %eax
  movl %eax, %cr3
  movl %cr0, %eax
  orl $0x80010000, %eax           # PG, WP
  movl %eax, %cr0
  movl $(stack + 4096), %esp
  mov $main, %eax
  jmp *%eax

# vectors: push the error code (0 if none) and the trap number, then alltraps
.macro vec n
.globl vector\n
vector\n:
.if (\n == 8) || (\n >= 10 && \n <= 14) || (\n == 17)
  pushl $\n
.else
  pushl $0
  pushl $\n
.endif
  jmp alltraps
.endm
.altmacro
.set i, 0
.rept 65
  vec %i
.set i, i + 1
.endr

.globl alltraps
alltraps:
  pushl %ds
  pushl %es
  pushl %fs
  pushl %gs
  pushal
  movw $0x10, %ax                 # SEG_KDATA
  movw %ax, %ds
  movw %ax, %es
  movw $0x30, %ax                 # SEG_KCPU: this CPU's struct cpu
  movw %ax, %fs
  movw %ax, %gs
  pushl %esp
  call trap
  addl $4, %esp
.globl trapret
trapret:
  popal
  popl %gs
  popl %fs
  popl %es
  popl %ds
  addl $0x8, %esp
  iret

# swtch(struct context **old, struct context *new)
.globl swtch
swtch:
  movl 4(%esp), %eax
  movl 8(%esp), %edx
  pushl %ebp
  pushl %ebx
  pushl %esi
  pushl %edi
  movl %esp, (%eax)
  movl %edx, %esp
  popl %edi
  popl %esi
  popl %ebx
  popl %ebp
  ret

.macro vref n
  .long vector\n
.endm
.data
.globl vectors
vectors:
.set i, 0
.rept 65
  vref %i
.set i, i + 1
.endr

# ---- user programs: position-independent, run at virtual address 0 ----
# system calls: INT 0x40, EAX the number, EBX and ECX the arguments
#define SYS_fork 1
#define SYS_exit 2
#define SYS_wait 3
#define SYS_exec 4
#define SYS_write 5
#define SYS_getpid 6
#define SYS_show 7
#define SYS(n) movl $(n), %eax; int $0x40
#define WRITE(lbl, len) call 9f; 9: popl %ebx; addl $(lbl - 9b), %ebx; movl $(len), %ecx; SYS(SYS_write)

.section .rodata
.globl prog_init, prog_init_end, prog_hello, prog_hello_end, prog_spin, prog_spin_end
prog_init:
  WRITE(1f, 15)
  movl $0x1000, %edi
  movl $111, (%edi)               # in the data page, before the fork
  SYS(SYS_fork)
  testl %eax, %eax
  jnz 2f
  movl $222, (%edi)               # the child's copy
  movl (%edi), %ebx
  SYS(SYS_show)
  movl $1, %ebx
  SYS(SYS_exec)                   # becomes "hello"
2:
  SYS(SYS_wait)
  movl (%edi), %ebx               # still the parent's own 111
  SYS(SYS_show)
  SYS(SYS_fork)                   # two spinners
  testl %eax, %eax
  jz 3f
  movl %eax, %esi
  SYS(SYS_fork)
  testl %eax, %eax
  jz 3f
  addl %eax, %esi
  SYS(SYS_wait)
  movl %eax, %ebp
  SYS(SYS_wait)
  addl %eax, %ebp
  subl %esi, %ebp                 # 0 if both were reaped
  movl %ebp, %ebx
  SYS(SYS_show)
  WRITE(4f, 11)
  movl $0, %ebx
  SYS(SYS_exit)
3:
  movl $2, %ebx
  SYS(SYS_exec)                   # becomes "spin"
1: .ascii "init: starting\n"
   .byte 0
4: .ascii "init: done\n"
prog_init_end:

prog_hello:
  WRITE(1f, 16)
  SYS(SYS_getpid)
  movl %eax, %ebx
  SYS(SYS_show)
  movl $7, %ebx
  SYS(SYS_exit)
1: .ascii "hello from exec\n"
prog_hello_end:

prog_spin:
  movl $0x1000, %edi
  movl $40000, %ecx
5: incl (%edi)                    # spins until the timer takes it away, now and then
  loop 5b
  movl (%edi), %ebx
  SYS(SYS_exit)
prog_spin_end:

.bss
.p2align 12
.globl stack
stack: .space 4096
