# platform.S: multiboot (v1) test kernels for the PC platform: the local APIC timer, the PIT
# with port 0x61, PIT IRQ 0 through the 8259 PIC and through the I/O APIC, and an
# interrupt-driven serial port. Each runs to its own verdict on the debug-exit port: 0x10 on
# success, 0x20 + n for failed check n, 0x3e for an unexpected exception.
#
# Assembled with `as --64 --defsym TEST=n` (an ELF64 object: the 64-bit code needs 64-bit
# relocations) and linked with `ld -m elf_x86_64 -T hello.ld` (see
# guests::test_kernels::build_platform); the multiboot loader accepts ELF64. The 32-bit entry builds identity page tables (the
# first 4 MiB, and the IOAPIC and LAPIC pages uncached) and enters 64-bit long mode, which
# the kvm backend runs on every host; interrupt handlers are 64-bit interrupt gates.
#
#   TEST=1  LAPIC timer, one-shot: the current count runs down, one interrupt, then 0
#   TEST=2  LAPIC timer, periodic: five interrupts, then masked
#   TEST=3  PIT channel 2 polled through port 0x61 bit 5 (TSC calibration style), latched
#           counts, read-back status
#   TEST=4  PIT IRQ 0 through the 8259 PIC (LAPIC LINT0 in ExtINT mode)
#   TEST=5  PIT IRQ 0 through the I/O APIC (pins 0 and 2: KVM routes GSI 0 to pin 0, QEMU's
#           pc machine to pin 2)
#   TEST=6  COM1 transmit driven by its THR-empty interrupt (IRQ 4 through the I/O APIC)

    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00000003
    .set COM1, 0x3f8
    .set DEBUG_EXIT, 0xf4
    .set LAPIC, 0xfee00000
    .set IOAPIC, 0xfec00000
    .set PASS, 0x10
    .set EXCEPTION, 0x3e
    .set POLL_LIMIT, 10000000

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
    movl $stack_top, %esp
    movl $pdpt + 3, pml4
    movl $pd_low + 3, pdpt
    movl $pd_high + 3, pdpt + 24
    movl $0x00000083, pd_low            # 2 MiB pages: present, writable, PS
    movl $0x00200083, pd_low + 8
    movl $0xfec00093, pd_high + 502 * 8 # + PCD for the device pages
    movl $0xfee00093, pd_high + 503 * 8
    movl $pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax                     # PAE
    movl %eax, %cr4
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax                    # EFER.LME
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax               # PG, PE
    movl %eax, %cr0
    lgdt gdt_ptr
    ljmp $0x08, $long_entry

    .code64
long_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq $stack_top, %rsp
    call build_idt
    lidt idt_ptr
    call test
exit:
    cli
    outb %al, $DEBUG_EXIT
1:  hlt
    jmp 1b

# set_gate(%edi = vector, %rsi = handler): a present DPL0 64-bit interrupt gate.
set_gate:
    movl %edi, %eax
    shll $4, %eax
    leaq idt(%rax), %rdx
    movq %rsi, %rax
    movw %ax, (%rdx)
    movw $0x08, 2(%rdx)
    movw $0x8e00, 4(%rdx)
    shrq $16, %rax
    movw %ax, 6(%rdx)
    shrq $16, %rax
    movl %eax, 8(%rdx)
    movl $0, 12(%rdx)
    ret

build_idt:
    xorl %edi, %edi
1:  movq $fault, %rsi
    call set_gate
    incl %edi
    cmpl $32, %edi
    jb 1b
    .irp vec, 0x27, 0x2f, 0xff
    movl $\vec, %edi
    movq $spurious, %rsi
    call set_gate
    .endr
    movl $0x20, %edi
    movq $pic_tick, %rsi
    call set_gate
    .irp vec, 0x30, 0x40
    movl $\vec, %edi
    movq $apic_tick, %rsi
    call set_gate
    .endr
    movl $0x34, %edi
    movq $serial_irq, %rsi
    call set_gate
    ret

fault:
    movb $EXCEPTION, %al
    jmp exit

spurious:
    iretq

# A tick through the PIC: count it, non-specific EOI to the master.
pic_tick:
    pushq %rax
    incl ticks
    movb $0x20, %al
    outb %al, $0x20
    popq %rax
    iretq

# A tick through the local APIC (its timer, or an IOAPIC pin): count it, EOI.
apic_tick:
    pushq %rax
    incl ticks
    movl $LAPIC, %eax
    movl $0, 0xb0(%rax)
    popq %rax
    iretq

# COM1's interrupt: on THR empty, send the next byte; after the last, disable it.
serial_irq:
    pushq %rax
    pushq %rdx
    pushq %rsi
    incl ticks
    movw $COM1 + 2, %dx
    inb %dx, %al                        # IIR (reading it acknowledges THR empty)
    andb $0x0f, %al
    cmpb $0x02, %al
    jne 2f
    movq msg_next, %rsi
    movb (%rsi), %al
    testb %al, %al
    jz 1f
    movw $COM1, %dx
    outb %al, %dx
    incq msg_next
    jmp 2f
1:  movw $COM1 + 1, %dx
    xorb %al, %al
    outb %al, %dx                       # IER = 0: done
    movl $1, done
2:  movl $LAPIC, %eax
    movl $0, 0xb0(%rax)
    popq %rsi
    popq %rdx
    popq %rax
    iretq

# lapic_write OFFSET, VALUE / lapic_read OFFSET (into %eax)
    .macro lapic_write off, val
    movl $LAPIC, %eax
    movl $\val, \off(%rax)
    .endm
    .macro lapic_read off
    movl $LAPIC, %eax
    movl \off(%rax), %eax
    .endm
    .macro ioapic_write reg, val
    movl $IOAPIC, %eax
    movl $\reg, (%rax)
    movl $\val, 0x10(%rax)
    .endm
    .macro fail n
    movb $(0x20 + \n), %al
    ret
    .endm

# Waits (halting) until `ticks` reaches %edx. The check runs with interrupts off and STI's
# shadow covers the HLT, so a tick between the check and the HLT wakes it.
wait_ticks:
1:  cli
    cmpl %edx, ticks
    jae 2f
    sti
    hlt
    jmp 1b
2:  ret

# The local APIC on, spurious vector 0xff.
lapic_enable:
    lapic_write 0xf0, 0x1ff
    ret

# Both 8259s initialised (vectors 0x20 / 0x28), all inputs masked.
pic_init:
    movb $0x11, %al
    outb %al, $0x20
    movb $0x20, %al
    outb %al, $0x21
    movb $0x04, %al
    outb %al, $0x21
    movb $0x01, %al
    outb %al, $0x21
    movb $0x11, %al
    outb %al, $0xa0
    movb $0x28, %al
    outb %al, $0xa1
    movb $0x02, %al
    outb %al, $0xa1
    movb $0x01, %al
    outb %al, $0xa1
    movb $0xff, %al
    outb %al, $0x21
    outb %al, $0xa1
    ret

# PIT channel 0, rate generator, 1 ms (1193 ticks).
pit_1ms:
    movb $0x34, %al
    outb %al, $0x43
    movb $0xa9, %al
    outb %al, $0x40
    movb $0x04, %al
    outb %al, $0x40
    ret

.if TEST == 1
test:
    call lapic_enable
    lapic_read 0x30
    cmpb $0x14, %al                     # version: integrated APIC
    jne 9f
    lapic_write 0x3e0, 0x3              # divide by 16
    lapic_write 0x320, 0x40             # one-shot, vector 0x40
    lapic_write 0x380, 62500            # 1 ms at KVM's 1 GHz bus
    lapic_read 0x390
    testl %eax, %eax
    jz 8f
    cmpl $62500, %eax
    ja 8f
    movl $1, %edx
    call wait_ticks
    lapic_read 0x390
    testl %eax, %eax
    jnz 7f
    cmpl $1, ticks
    jne 6f
    movb $PASS, %al
    ret
6:  fail 4
7:  fail 3
8:  fail 2
9:  fail 1
.endif

.if TEST == 2
test:
    call lapic_enable
    lapic_write 0x3e0, 0x3
    lapic_write 0x320, 0x20040          # periodic, vector 0x40
    lapic_write 0x380, 62500
    movl $5, %edx
    call wait_ticks
    lapic_write 0x320, 0x30040          # masked
    lapic_read 0x320
    cmpl $0x30040, %eax
    jne 8f
    lapic_read 0x390                    # still counting: periodic reloads
    testl %eax, %eax
    jz 9f
    lapic_write 0x380, 0
    movb $PASS, %al
    ret
8:  fail 2
9:  fail 1
.endif

.if TEST == 3
test:
    inb $0x61, %al
    andb $0xfc, %al
    orb $0x01, %al                      # gate 2 on, speaker off
    outb %al, $0x61
    movb $0xb0, %al                     # channel 2, lo/hi, mode 0, binary
    outb %al, $0x43
    movb $0x2a, %al                     # 298 ticks: 250 us
    outb %al, $0x42
    movb $0x01, %al
    outb %al, $0x42
    rdtsc
    shlq $32, %rdx
    orq %rax, %rdx
    movq %rdx, %r8
    inb $0x61, %al
    testb $0x20, %al                    # OUT2 low while counting
    jnz 9f
    movb $0x80, %al                     # latch channel 2
    outb %al, $0x43
    inb $0x42, %al
    movb %al, %bl
    inb $0x42, %al
    movb %al, %bh
    cmpw $0x12a, %bx
    ja 8f
    movl $POLL_LIMIT, %ecx
1:  inb $0x61, %al
    testb $0x20, %al
    jnz 2f
    decl %ecx
    jnz 1b
    fail 3
2:  rdtsc
    shlq $32, %rdx
    orq %rax, %rdx
    cmpq %r8, %rdx
    jbe 7f
    movb $0xe8, %al                     # read-back: status of channel 2
    outb %al, $0x43
    inb $0x42, %al
    andb $0xbf, %al                     # ignore null count
    cmpb $0xb0, %al                     # OUT high, lo/hi, mode 0, binary
    jne 6f
    movb $PASS, %al
    ret
6:  fail 5
7:  fail 4
8:  fail 2
9:  fail 1
.endif

.if TEST == 4
test:
    call pic_init
    call lapic_enable
    lapic_write 0x350, 0x700            # LINT0: ExtINT
    movb $0xfe, %al                     # unmask IRQ 0
    outb %al, $0x21
    call pit_1ms
    movl $3, %edx
    call wait_ticks
    movb $0xff, %al
    outb %al, $0x21
    movb $0x0b, %al                     # OCW3: read ISR
    outb %al, $0x20
    inb $0x20, %al
    testb %al, %al
    jnz 9f
    movb $PASS, %al
    ret
9:  fail 1
.endif

.if TEST == 5
test:
    call pic_init
    call lapic_enable
    lapic_write 0x350, 0x10700          # LINT0 masked: no PIC path
    ioapic_write 1, 0                   # select the version register
    movl $IOAPIC, %eax
    movl 0x10(%rax), %eax
    cmpb $0x11, %al
    jne 9f
    shrl $16, %eax
    cmpb $23, %al
    jb 9f
    ioapic_write 0x11, 0                # pin 0: APIC 0
    ioapic_write 0x10, 0x30             # fixed, edge, vector 0x30
    ioapic_write 0x15, 0                # pin 2
    ioapic_write 0x14, 0x30
    call pit_1ms
    movl $3, %edx
    call wait_ticks
    ioapic_write 0x10, 0x10030          # masked
    ioapic_write 0x14, 0x10030
    lapic_read 0x110                    # ISR bits 32..63: nothing in service
    testl %eax, %eax
    jnz 8f
    movb $PASS, %al
    ret
8:  fail 2
9:  fail 1
.endif

.if TEST == 6
test:
    call pic_init
    call lapic_enable
    lapic_write 0x350, 0x10700
    ioapic_write 0x19, 0                # pin 4: APIC 0
    ioapic_write 0x18, 0x34             # fixed, edge, vector 0x34
    movw $COM1 + 3, %dx
    movb $0x03, %al                     # 8N1
    outb %al, %dx
    movw $COM1 + 4, %dx
    movb $0x0b, %al                     # DTR, RTS, OUT2
    outb %al, %dx
    movq $message, msg_next
    movw $COM1 + 1, %dx
    movb $0x02, %al                     # IER: THR empty
    outb %al, %dx
1:  cli
    cmpl $0, done
    jne 2f
    sti
    hlt
    jmp 1b
2:  movl msg_next, %eax
    subl $message, %eax
    cmpl $message_end - message - 1, %eax
    jne 9f
    movb $PASS, %al
    ret
9:  fail 1
.endif

    .section .rodata
    .align 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff            # 64-bit code
    .quad 0x00cf92000000ffff            # data
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt
idt_ptr:
    .word 256 * 16 - 1
    .quad idt
message:
    .asciz "interrupt-driven serial ok\n"
message_end:

    .bss
    .align 4096
pml4:
    .skip 4096
pdpt:
    .skip 4096
pd_low:
    .skip 4096
pd_high:
    .skip 4096
idt:
    .skip 256 * 16
ticks:
    .skip 4
done:
    .skip 4
msg_next:
    .skip 8
    .align 16
stack:
    .skip 8192
stack_top:

    .section .note.GNU-stack, "", @progbits
