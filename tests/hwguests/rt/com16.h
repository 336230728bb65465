/* COM1 output for 16-bit real-mode code in .S guests (rmivt, hvmreal, realmon): include it
 * inside their .code16 block.  putc prints AL (waiting for THRE), newline a line
 * feed, puts the NUL-terminated string at DS:SI, hex4/hex2/hex1 AX, AL and AL's low
 * nibble in lower-case hex; every register but SI (puts) is kept. */
hex4:   pushw %ax
        movb %ah, %al
        call hex2
        popw %ax
hex2:   pushw %ax
        shrb $4, %al
        call hex1
        popw %ax
hex1:   pushw %ax
        andb $0x0f, %al
        addb $'0', %al
        cmpb $'9', %al
        jbe 1f
        addb $('a' - '0' - 10), %al
1:      call putc
        popw %ax
        ret

newline:
        movb $'\n', %al
putc:   pushw %dx
        pushw %ax
        movw $0x3fd, %dx
1:      inb %dx, %al
        testb $0x20, %al
        jz 1b
        popw %ax
        movw $0x3f8, %dx
        outb %al, %dx
        popw %dx
        ret

puts:   lodsb
        testb %al, %al
        jz 1f
        call putc
        jmp puts
1:      ret
