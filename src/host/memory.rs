//! `memcmp` and `bcmp` for the Wasm build, many bytes at a time ([`crate::bytes`]). These
//! definitions take the place of wasi-libc's, which the linker then leaves out: every slice
//! and string comparison in the module comes here.
//!
//! And the module's allocator ([`crate::alloc`]).

use crate::alloc::Recycler;
use std::alloc::{GlobalAlloc, Layout, System};

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

/// The module's allocator: small blocks kept for reuse in front of wasi-libc's
/// ([`crate::alloc`]).
#[global_allocator]
static ALLOCATOR: OneThread = OneThread(Recycler::new(System));

/// [`Recycler`] as a `static`: its lists are plain cells, for one thread.
struct OneThread(Recycler<System>);

#[cfg(target_feature = "atomics")]
compile_error!("the allocator's lists are for one thread: build without the `atomics` feature");

// SAFETY: a wasm32 module built without the `atomics` feature (refused above) cannot start
// threads or share its memory: the VM calls it on one thread, one call at a time.
unsafe impl Sync for OneThread {}

// SAFETY: each call goes to the recycler, which upholds `GlobalAlloc`'s contract.
// Calls, not inlined: inlined into every allocation and free of the module, the recycler's
// paths made it 80 KB larger.
unsafe impl GlobalAlloc for OneThread {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(block, layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.realloc(block, layout, new_size) }
    }
}
