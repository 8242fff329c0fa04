//! The kt-loader program: the process entry point and the panic handler; everything
//! else is the `kt-loader` crate (kt-shadow/loader).

#![no_std]
#![no_main]

#[allow(unsafe_code, reason = "the process entry point is assembly")]
mod entry {
    // The kernel starts the process here, with the stack pointer at `argc`; the System V
    // ABI wants it 16-byte aligned at a call, and a zero frame pointer ends backtraces.
    // SAFETY: `start` gets `rsp` as the kernel set it, which is its contract, and never
    // returns (`ud2` traps if it did); nothing else defines `_start` (`-nostartfiles`).
    core::arch::global_asm!(
        ".globl _start",
        ".type _start, @function",
        "_start:",
        "xor ebp, ebp",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {start}",
        "ud2",
        start = sym kt_loader::start,
    );
}

#[allow(
    unsafe_code,
    reason = "the C memory functions compiled code calls, in assembly"
)]
mod mem {
    // Compiled Rust calls `memcpy`, `memmove`, `memset`, `memcmp`/`bcmp` and `strlen`
    // (`CStr::from_ptr`), which libc would provide; on this target `compiler_builtins`
    // leaves them to libc. Plain byte loops: the loader copies 64 KiB at a time, not
    // often. Each in its own section, so that the linker drops the unused ones.
    // SAFETY: each follows the System V x86_64 ABI (arguments in rdi, rsi, rdx, result
    // in rax, rcx/r8 scratch, the direction flag clear on return) and the C standard's
    // contract of its name; the callers (compiled code) uphold theirs.
    core::arch::global_asm!(
        ".section .text.memcpy,\"ax\",@progbits",
        ".globl memcpy",
        ".type memcpy, @function",
        "memcpy:",
        "mov rax, rdi",
        "mov rcx, rdx",
        "rep movsb",
        "ret",
        //
        ".section .text.memmove,\"ax\",@progbits",
        ".globl memmove",
        ".type memmove, @function",
        "memmove:",
        "mov rax, rdi",
        "mov rcx, rdx",
        // Forwards unless the destination starts inside the source.
        "cmp rdi, rsi",
        "jbe 2f",
        "lea r8, [rsi + rdx]",
        "cmp rdi, r8",
        "jae 2f",
        "lea rsi, [rsi + rdx - 1]",
        "lea rdi, [rdi + rdx - 1]",
        "std",
        "rep movsb",
        "cld",
        "ret",
        "2:",
        "rep movsb",
        "ret",
        //
        ".section .text.memset,\"ax\",@progbits",
        ".globl memset",
        ".type memset, @function",
        "memset:",
        "mov r8, rdi",
        "movzx eax, sil",
        "mov rcx, rdx",
        "rep stosb",
        "mov rax, r8",
        "ret",
        //
        ".section .text.memcmp,\"ax\",@progbits",
        ".globl memcmp",
        ".type memcmp, @function",
        ".globl bcmp",
        ".type bcmp, @function",
        "memcmp:",
        "bcmp:",
        "xor eax, eax",
        "2:",
        "test rdx, rdx",
        "jz 3f",
        "movzx eax, byte ptr [rdi]",
        "movzx ecx, byte ptr [rsi]",
        "sub eax, ecx",
        "jnz 3f",
        "inc rdi",
        "inc rsi",
        "dec rdx",
        "jmp 2b",
        "3:",
        "ret",
        //
        ".section .text.strlen,\"ax\",@progbits",
        ".globl strlen",
        ".type strlen, @function",
        "strlen:",
        "mov rax, rdi",
        "2:",
        "cmp byte ptr [rax], 0",
        "je 3f",
        "inc rax",
        "jmp 2b",
        "3:",
        "sub rax, rdi",
        "ret",
        //
        // Referenced by the unwind tables of the precompiled `core` when it is not
        // optimised away (no LTO: the dev profile); never called, as nothing unwinds.
        ".section .text.rust_eh_personality,\"ax\",@progbits",
        ".globl rust_eh_personality",
        ".type rust_eh_personality, @function",
        "rust_eh_personality:",
        "ud2",
        //
        ".text",
    );
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    kt_loader::panicked()
}
