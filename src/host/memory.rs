//! `memcmp` and `bcmp` for the Wasm build, many bytes at a time ([`crate::bytes`]). These
//! definitions take the place of wasi-libc's, which the linker then leaves out: every slice
//! and string comparison in the module comes here.

/// # Safety
/// As C's `memcmp`: `a` and `b` point to at least `n` readable bytes each.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller's contract above.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, n),
            std::slice::from_raw_parts(b, n),
        )
    };
    match crate::bytes::compare(a, b) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }
}

/// # Safety
/// As `memcmp`; only equality (zero or not) is meaningful.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}
