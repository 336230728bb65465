/* gates16: the 16-bit transfers, in code segments whose base puts these routines at
 * offsets below 64 KiB (a 16-bit frame keeps only IP).  k_test runs at ring 0 in
 * KCODE_B, u_test at ring 3 in UCODE_B; the handlers are reached through the 16-bit
 * gates gates16.c installs.  Every value is stored to a global for gates16.c to print. */
#define KSEL_NP  0x60           /* a not-present data segment */
#define CALL16K  0x50           /* 16-bit call gate, DPL 0, same level */
#define CALL16U  0x5b           /* 16-bit call gate, DPL 3, to ring 0, 2 word parameters */

/* the word at N(%esp) of a frame, zero-extended into a global */
        .macro WORD n, dst
        movzwl \n(%esp), %eax
        movl %eax, \dst
        .endm

        .section .text
        .globl g16_start, g16_end
        .p2align 4
g16_start:

/* ring 0, entered by a 32-bit far call */
        .globl k_test
k_test:
        pushl %ebx
        pushl %esi
        pushl %edi
        pushl %ebp
        /* a 16-bit interrupt gate */
        movl %esp, k_esp_before
        cmpl %eax, %eax                 /* ZF PF set, CF SF OF AF clear */
        int $0x50
        .globl r_int50
r_int50:
        setc k_cf_after
        movl %esp, k_esp_after
        movl h_esp, %eax                /* the first handler's record, kept */
        movl %eax, h1_esp
        movl h_ip, %eax
        movl %eax, h1_ip
        movl h_cs, %eax
        movl %eax, h1_cs
        movl h_flags, %eax
        movl %eax, h1_flags
        /* a 16-bit trap gate */
        movl %esp, k_esp_before2
        cmpl %eax, %eax
        int $0x51
        .globl r_int51
r_int51:
        movl %esp, k_esp_after2
        /* #NP(0x60) through a 16-bit interrupt gate: its error code is a word */
        movl $KSEL_NP, %eax
        .globl np_at
np_at:  .byte 0x8e, 0xe0                /* mov %eax, %fs */
        movl $1, k_np_resumed
        /* a far call through a 16-bit call gate to the same ring: CS and IP as words */
        movl %esp, k_esp_before3
        lcall $CALL16K, $0
        .globl r_call16
r_call16:
        movl %esp, k_esp_after3
        popl %ebp
        popl %edi
        popl %esi
        popl %ebx
        lret

/* the handlers: the frame's words as they are, then a 16-bit IRET or RETF */
        .globl h16
h16:    movl %eax, save_eax
        movl %esp, h_esp
        WORD 0, h_ip
        WORD 2, h_cs
        WORD 4, h_flags
        orw $1, 4(%esp)                 /* CF in the FLAGS image: the IRET restores it */
        movl save_eax, %eax
        iretw

        .globl h16np
h16np:  movl %eax, save_eax
        WORD 0, np_err
        WORD 2, np_ip
        WORD 4, np_cs
        addw $2, 2(%esp)                /* past the 2-byte MOV */
        movl save_eax, %eax
        addl $2, %esp                   /* the error code */
        iretw

        .globl h16u
h16u:   movl %eax, save_eax
        movl %esp, u_h_esp
        WORD 0, u_ip
        WORD 2, u_cs
        WORD 4, u_flags
        WORD 6, u_sp
        WORD 8, u_ss
        movl save_eax, %eax
        iretw

        .globl far16
far16:  movl %esp, c_esp
        movl %eax, save_eax
        WORD 0, c_ip
        WORD 2, c_cs
        movl save_eax, %eax
        lretw

        .globl gate16u
gate16u:
        movl %eax, save_eax
        movl %esp, g_esp
        WORD 0, g_words
        WORD 2, g_words+4
        WORD 4, g_words+8
        WORD 6, g_words+12
        WORD 8, g_words+16
        WORD 10, g_words+20
        movl save_eax, %eax
        lretw $4                        /* the parameters go on both stacks */

/* ring 3 */
        .globl u_test
u_test:
        movl %esp, u_esp_before
        cmpl %eax, %eax
        int $0x52
        .globl r_int52
r_int52:
        movl %esp, u_esp_after
        pushw $0x1111
        pushw $0x2222
        lcall $CALL16U, $0
        .globl r_gate
r_gate:
        movl %esp, u_esp_after2
        int $0xf0
g16_end:

        .section .bss
        .p2align 2
        .globl k_esp_before, k_esp_after, k_esp_before2, k_esp_after2, k_esp_before3
        .globl k_esp_after3, k_cf_after, k_np_resumed, save_eax, h_esp, h_ip, h_cs, h_flags
        .globl np_err, np_ip, np_cs, u_h_esp, u_ip, u_cs, u_flags, u_sp, u_ss, c_esp, c_ip
        .globl h1_esp, h1_ip, h1_cs, h1_flags
        .globl c_cs, g_esp, g_words, u_esp_before, u_esp_after, u_esp_after2
k_esp_before: .long 0
k_esp_after: .long 0
k_esp_before2: .long 0
k_esp_after2: .long 0
k_esp_before3: .long 0
k_esp_after3: .long 0
k_cf_after: .long 0
k_np_resumed: .long 0
save_eax: .long 0
h_esp: .long 0
h1_esp: .long 0
h1_ip: .long 0
h1_cs: .long 0
h1_flags: .long 0
h_ip: .long 0
h_cs: .long 0
h_flags: .long 0
np_err: .long 0
np_ip: .long 0
np_cs: .long 0
u_h_esp: .long 0
u_ip: .long 0
u_cs: .long 0
u_flags: .long 0
u_sp: .long 0
u_ss: .long 0
c_esp: .long 0
c_ip: .long 0
c_cs: .long 0
g_esp: .long 0
g_words: .long 0, 0, 0, 0, 0, 0
u_esp_before: .long 0
u_esp_after: .long 0
u_esp_after2: .long 0
