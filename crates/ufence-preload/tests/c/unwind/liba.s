# make(n): malloc(n) from a frame of 0x1008 bytes. liba.s and libb.s are the same instructions,
# byte for byte the same length, with different frame sizes: loaded one after the other at the
# same address, a stack walk through libb with liba's cached rules would go wrong.
    .text
    .globl make
    .type make, @function
make:
    .cfi_startproc
    subq $0x1008, %rsp
    .cfi_def_cfa_offset 0x1010
    call malloc@PLT
    addq $0x1008, %rsp
    .cfi_def_cfa_offset 8
    ret
    .cfi_endproc
    .size make, .-make
    .section .note.GNU-stack,"",@progbits
