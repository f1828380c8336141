# hello.S: a minimal multiboot (v1) kernel for mmurr's loader and recorder tests.
#
# Assembled with `as --32` and linked with `ld -m elf_i386 -T hello.ld` (see
# guests::test_kernels::build_hello). It checks what the loader promised (EAX = 0x2BADB002,
# the info structure's memory flag, a zeroed bss), prints "hello from multiboot\n" on COM1
# (polling the line status register for an empty transmit holding register) and exits through
# the debug-exit port with status 0x10. A failed check exits with 0x11..0x13 instead.

    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00000003           # page-aligned modules, memory information
    .set BOOT_MAGIC, 0x2BADB002
    .set COM1, 0x3f8
    .set COM1_LSR, COM1 + 5
    .set LSR_THR_EMPTY, 0x20
    .set DEBUG_EXIT, 0xf4

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .code32
    .globl _start
_start:
    cli
    cmpl $BOOT_MAGIC, %eax
    jne bad_magic
    testl $1, (%ebx)                    # multiboot_info.flags: mem_lower/mem_upper valid
    jz bad_info
    cmpl $0, bss_word
    jne bad_bss
    movl $stack_top, %esp
    movl $message, %esi
next_char:
    movb (%esi), %bl
    testb %bl, %bl
    jz done
wait_thr:
    movw $COM1_LSR, %dx
    inb %dx, %al
    testb $LSR_THR_EMPTY, %al
    jz wait_thr
    movw $COM1, %dx
    movb %bl, %al
    outb %al, %dx
    incl %esi
    jmp next_char
done:
    movb $0x10, %al
exit:
    outb %al, $DEBUG_EXIT
halt:
    hlt
    jmp halt
bad_magic:
    movb $0x11, %al
    jmp exit
bad_info:
    movb $0x12, %al
    jmp exit
bad_bss:
    movb $0x13, %al
    jmp exit

    .section .rodata
message:
    .asciz "hello from multiboot\n"

    .bss
    .align 16
bss_word:
    .skip 4
stack:
    .skip 4096
stack_top:

    .section .note.GNU-stack, "", @progbits
