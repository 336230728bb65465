/* gdbregs_run(struct image *out): load known x87 and SSE values, stop at gdbregs_loaded
 * (a debugger's breakpoint), then store what the registers hold into *out.  In assembly
 * so that nothing but these instructions touches the FPU between the loads and the stores. */
    .text
    .globl gdbregs_run, gdbregs_loaded
gdbregs_run:
    movl 4(%esp), %eax
    fninit
    fldcw cw_in
    ldmxcsr mxcsr_in
    fldt minus_1_5              /* R7 */
    fildl int_12345             /* R6 */
    fldpi                       /* R5 */
    fld1                        /* R4: TOP = 4 */
    movdqu xmm_in + 0x00, %xmm0
    movdqu xmm_in + 0x10, %xmm1
    movdqu xmm_in + 0x20, %xmm2
    movdqu xmm_in + 0x30, %xmm3
    movdqu xmm_in + 0x40, %xmm4
    movdqu xmm_in + 0x50, %xmm5
    movdqu xmm_in + 0x60, %xmm6
    movdqu xmm_in + 0x70, %xmm7
gdbregs_loaded:
    fnstcw 0(%eax)
    fnstsw 2(%eax)
    stmxcsr 4(%eax)
    fnstenv 8(%eax)             /* 28 bytes: the tag word at 8+8 */
    fstpt 36(%eax)
    fstpt 46(%eax)
    fstpt 56(%eax)
    fstpt 66(%eax)
    movdqu %xmm0, 76(%eax)
    movdqu %xmm1, 92(%eax)
    movdqu %xmm2, 108(%eax)
    movdqu %xmm3, 124(%eax)
    movdqu %xmm4, 140(%eax)
    movdqu %xmm5, 156(%eax)
    movdqu %xmm6, 172(%eax)
    movdqu %xmm7, 188(%eax)
    ret

    .data
cw_in:      .word 0x027f        /* precision control: double; round to nearest; all masked */
mxcsr_in:   .long 0x3f80        /* rounding control: down; all masked */
minus_1_5:  .quad 0xc000000000000000
            .word 0xbfff
int_12345:  .long 12345
    .balign 16
xmm_in:     .long 0x3f800000, 0x40200000, 0xc0400000, 0x3f000000   /* 1.0 2.5 -3.0 0.5 */
    .irp i, 1, 2, 3, 4, 5, 6, 7
    .byte 0x\i\()0, 0x\i\()1, 0x\i\()2, 0x\i\()3, 0x\i\()4, 0x\i\()5, 0x\i\()6, 0x\i\()7
    .byte 0x\i\()8, 0x\i\()9, 0x\i\()a, 0x\i\()b, 0x\i\()c, 0x\i\()d, 0x\i\()e, 0x\i\()f
    .endr
