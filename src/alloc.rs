//! The Wasm build's allocator: blocks of up to [`LARGEST`] bytes that a request frees are kept,
//! one list per size class, for the next request to take again, in front of the system
//! allocator (wasi-libc's dlmalloc). A request allocates and frees some thirty blocks of
//! much the same sizes as the one before it; taking a block from a list and putting it back
//! are a few instructions, where each trip through dlmalloc runs its bins, chunk headers and
//! coalescing: the largest single part of the module's code a new token runs (about 7 KB of
//! it, measured with `bench/v8_lines.py`), and code is what a request pays for most here (the
//! CPU's L2 is shared with Envoy's own code).
//!
//! Bounded: at most [`KEPT_BYTES`] are kept in all lists together; past that, freed blocks
//! go back to the system allocator. A block in a list is only ever handed out again for a
//! size of its own class, so the layout a block is freed with always names the class it was
//! taken from.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr;

/// The largest size kept (larger blocks go to the system allocator as they are).
pub const LARGEST: usize = 4096;
/// The most bytes kept in all lists together.
pub const KEPT_BYTES: usize = 256 * 1024;
/// Alignment every block of a class has (the system allocator's own for these sizes on
/// wasm32 and on 64-bit hosts); larger alignments are not kept.
const ALIGN: usize = 8;
/// Size classes: 8 to 64 bytes by 8, then four a doubling (80, 96, 112, 128, 160, ...) up to
/// [`LARGEST`]: a block is at most a quarter larger than what it holds.
const CLASSES: usize = 32;

/// The class of a layout, and the size of its blocks; `None` for one not kept.
fn class_of(layout: Layout) -> Option<(usize, usize)> {
    let size = layout.size();
    if layout.align() > ALIGN || size > LARGEST {
        return None;
    }
    let below = size.saturating_sub(1);
    if size <= 64 {
        let index = below >> 3;
        return Some((index, index.wrapping_add(1) << 3));
    }
    // 65 ..= 4096: `size - 1` has its top bit at `top` (6 ..= 11); the two bits below it
    // pick one of the doubling's four classes.
    let top = below.checked_ilog2()?;
    let quarter = top.wrapping_sub(2);
    let step = below.wrapping_shr(quarter); // 4 ..= 7
    let class = usize::try_from(top.wrapping_sub(6))
        .ok()?
        .wrapping_mul(4)
        .wrapping_add(step)
        .wrapping_add(4);
    Some((class, step.wrapping_add(1).wrapping_shl(quarter)))
}

/// One class's kept blocks: a list threaded through the blocks themselves.
struct List {
    head: Cell<*mut u8>,
}

/// Keeps freed small blocks for reuse, in front of `A`. Not `Sync`: one thread only (the
/// Wasm build's allocator is a static; see `host`).
pub struct Recycler<A> {
    system: A,
    lists: [List; CLASSES],
    kept_bytes: Cell<usize>,
}

impl<A> Recycler<A> {
    pub const fn new(system: A) -> Recycler<A> {
        Recycler {
            system,
            lists: [const {
                List {
                    head: Cell::new(ptr::null_mut()),
                }
            }; CLASSES],
            kept_bytes: Cell::new(0),
        }
    }

    /// How many bytes the lists hold.
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes.get()
    }

    /// A kept block of class `class` (of `size` bytes), if there is one.
    ///
    /// # Safety
    /// Every block in the lists was put there by [`Recycler::keep`].
    unsafe fn take(&self, class: usize, size: usize) -> Option<*mut u8> {
        let list = self.lists.get(class)?;
        let block = list.head.get();
        if block.is_null() {
            return None;
        }
        // SAFETY: a kept block is at least 8 bytes, aligned to 8, and its first word holds
        // the next block of the list (`keep`).
        list.head.set(unsafe { block.cast::<*mut u8>().read() });
        self.kept_bytes
            .set(self.kept_bytes.get().saturating_sub(size));
        Some(block)
    }

    /// Keeps `block` (of class `class`, `size` bytes) if the bound allows; whether it did.
    ///
    /// # Safety
    /// `block` was allocated for this class (by `system` with [`class_layout`], or taken from
    /// this list) and is no longer used.
    unsafe fn keep(&self, block: *mut u8, class: usize, size: usize) -> bool {
        let kept = self.kept_bytes.get().saturating_add(size);
        let Some(list) = self.lists.get(class) else {
            return false;
        };
        if kept > KEPT_BYTES {
            return false;
        }
        // SAFETY: the block is at least 8 bytes and aligned to 8 (its class), and unused.
        unsafe { block.cast::<*mut u8>().write(list.head.get()) };
        list.head.set(block);
        self.kept_bytes.set(kept);
        true
    }
}

/// The layout a class's blocks are allocated with from the system allocator. Class sizes
/// are multiples of 8 up to [`LARGEST`], always a valid layout: `None` cannot happen, and
/// would fail the allocation (or leak the block) rather than stand in another size.
fn class_layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size, ALIGN).ok()
}

// SAFETY: blocks come from `system` with their class's layout and go back to it with the
// same; a kept block is handed out only for a layout of its own class, whose size and
// alignment it covers.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Recycler<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: blocks in the lists come from `keep`.
            Some((class, size)) => match unsafe { self.take(class, size) } {
                Some(block) => block,
                None => match class_layout(size) {
                    // SAFETY: a layout of non-zero size.
                    Some(class) => unsafe { self.system.alloc(class) },
                    None => ptr::null_mut(),
                },
            },
            // SAFETY: the caller's layout, as given.
            None => unsafe { self.system.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some((class, size)) => {
                // SAFETY: the caller frees a block it was given for this layout: one of
                // this class.
                if !unsafe { self.keep(block, class, size) } {
                    if let Some(class) = class_layout(size) {
                        // SAFETY: allocated by `system` with this class's layout.
                        unsafe { self.system.dealloc(block, class) }
                    }
                }
            }
            // SAFETY: allocated by `system` with this very layout.
            None => unsafe { self.system.dealloc(block, layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout).is_none() {
            // SAFETY: the caller's layout, as given.
            return unsafe { self.system.alloc_zeroed(layout) };
        }
        // SAFETY: as `alloc`; then `layout.size()` bytes of it are written.
        unsafe {
            let block = self.alloc(layout);
            if !block.is_null() {
                ptr::write_bytes(block, 0, layout.size());
            }
            block
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `new_size` rounded up to the alignment does not
        // overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // The block already has room: its class is the new size's too.
            (Some((old, _)), Some((new, _))) if old == new => block,
            // SAFETY: allocated by `system` with `layout`, and to be so with the new size.
            (None, None) => unsafe { self.system.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a new block for the new layout; the old one's bytes that fit are
                // copied over (the two do not overlap), then it is freed with its layout.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// The system allocator, counting what goes through it.
    #[derive(Default)]
    struct Counted {
        live: RefCell<HashMap<usize, Layout>>,
        allocs: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counted {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let block = unsafe { System.alloc(layout) };
            self.allocs.set(self.allocs.get() + 1);
            self.live.borrow_mut().insert(block as usize, layout);
            block
        }
        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            let given = self.live.borrow_mut().remove(&(block as usize));
            assert_eq!(
                given,
                Some(layout),
                "freed with the layout it was allocated with"
            );
            unsafe { System.dealloc(block, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_every_size_and_waste_at_most_a_quarter() {
        let mut last = (0, 8);
        for size in 1..=LARGEST {
            let (class, block) = class_of(layout(size, 1)).unwrap();
            assert_eq!(class_layout(block).map(|l| l.size()), Some(block));
            assert!(
                class < CLASSES && block >= size && block % ALIGN == 0,
                "{size}"
            );
            assert!(
                size <= 64 || block - size < size / 4 + 1,
                "{size} in {block}"
            );
            assert!(
                class == last.0 && block == last.1 || class == last.0 + 1,
                "{size}"
            );
            last = (class, block);
        }
        assert_eq!(last, (CLASSES - 1, LARGEST));
        assert_eq!(class_of(layout(0, 1)), Some((0, 8)));
        assert_eq!(class_of(layout(65, 8)), Some((8, 80)));
        assert_eq!(class_of(layout(129, 8)), Some((12, 160)));
        assert_eq!(class_of(layout(LARGEST + 1, 1)), None);
        assert_eq!(class_of(layout(16, 16)), None, "over-aligned");
    }

    #[test]
    fn a_freed_block_is_taken_again_by_its_class_only() {
        let r = Recycler::new(Counted::default());
        unsafe {
            let a = r.alloc(layout(700, 1));
            a.write_bytes(0xAB, 700);
            r.dealloc(a, layout(700, 1));
            assert_eq!(r.kept_bytes(), 768);
            // Another class: a new block from the system; the kept one stays.
            let b = r.alloc(layout(600, 1));
            assert_ne!(a, b);
            // The same class (641 to 768 bytes): the kept block.
            let c = r.alloc(layout(760, 8));
            assert_eq!(a, c);
            assert_eq!(r.kept_bytes(), 0);
            r.dealloc(b, layout(600, 1));
            r.dealloc(c, layout(760, 8));
            assert_eq!(r.system.allocs.get(), 2);
            assert_eq!(r.system.live.borrow().len(), 2, "kept, not freed");
        }
    }

    #[test]
    fn what_is_not_kept_goes_to_the_system_as_it_is() {
        let r = Recycler::new(Counted::default());
        unsafe {
            for l in [layout(LARGEST + 1, 1), layout(32, 16)] {
                let a = r.alloc(l);
                assert_eq!(r.system.live.borrow().get(&(a as usize)), Some(&l));
                r.dealloc(a, l);
                assert!(r.system.live.borrow().is_empty());
            }
            assert_eq!(r.kept_bytes(), 0);
        }
    }

    #[test]
    fn the_lists_hold_at_most_their_bound() {
        let r = Recycler::new(Counted::default());
        let n = KEPT_BYTES / LARGEST + 10;
        unsafe {
            let blocks: Vec<_> = (0..n).map(|_| r.alloc(layout(LARGEST, 8))).collect();
            for &b in &blocks {
                r.dealloc(b, layout(LARGEST, 8));
            }
            assert_eq!(r.kept_bytes(), KEPT_BYTES);
            assert_eq!(r.system.live.borrow().len(), KEPT_BYTES / LARGEST);
            // All taken back, each once.
            let again: std::collections::HashSet<_> = (0..KEPT_BYTES / LARGEST)
                .map(|_| r.alloc(layout(4000, 1)) as usize)
                .collect();
            assert_eq!(again.len(), KEPT_BYTES / LARGEST);
            assert_eq!(r.kept_bytes(), 0);
            assert_eq!(r.system.allocs.get(), n);
            for b in again {
                r.dealloc(b as *mut u8, layout(4000, 1));
            }
        }
    }

    #[test]
    fn realloc_keeps_the_block_within_its_class_and_the_bytes_across() {
        let r = Recycler::new(Counted::default());
        unsafe {
            let a = r.alloc(layout(65, 1));
            for i in 0..65 {
                a.add(i).write(i as u8);
            }
            assert_eq!(r.realloc(a, layout(65, 1), 80), a, "80 is 65's class");
            let b = r.realloc(a, layout(80, 1), 3000);
            assert_ne!(a, b);
            assert!((0..65).all(|i| b.add(i).read() == i as u8));
            assert_eq!(r.kept_bytes(), 80, "the old block kept");
            let c = r.realloc(b, layout(3000, 1), LARGEST * 4);
            assert!((0..65).all(|i| c.add(i).read() == i as u8));
            let d = r.realloc(c, layout(LARGEST * 4, 1), LARGEST * 8);
            assert!((0..65).all(|i| d.add(i).read() == i as u8));
            let e = r.realloc(d, layout(LARGEST * 8, 1), 10);
            assert!((0..10).all(|i| e.add(i).read() == i as u8));
            r.dealloc(e, layout(10, 1));
            let z = r.alloc_zeroed(layout(3000, 1));
            assert!(
                (0..3000).all(|i| z.add(i).read() == 0),
                "a kept block, zeroed"
            );
            r.dealloc(z, layout(3000, 1));
        }
    }

    /// Many blocks of many sizes, freed and taken in a shuffled order: no block is handed out
    /// twice at once, every byte written stays, and the system sees each block freed with the
    /// layout it gave it (`Counted` checks).
    #[test]
    fn blocks_in_use_never_overlap() {
        let r = Recycler::new(Counted::default());
        let mut next = crate::testing::xorshift(0x9E37_79B9_7F4A_7C15_u64);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        unsafe {
            for turn in 0..20_000u32 {
                if live.len() > 200 || (!live.is_empty() && next() % 3 == 0) {
                    let (b, l, fill) = live.swap_remove(next() as usize % live.len());
                    assert!((0..l.size()).all(|i| b.add(i).read() == fill), "{turn}");
                    r.dealloc(b, l);
                } else {
                    let l = layout(1 + next() as usize % (LARGEST + 600), 1 << (next() % 5));
                    let b = r.alloc(l);
                    assert_eq!(b as usize % l.align(), 0);
                    let fill = turn as u8;
                    b.write_bytes(fill, l.size());
                    live.push((b, l, fill));
                }
                assert!(r.kept_bytes() <= KEPT_BYTES);
            }
            for (b, l, _) in live {
                r.dealloc(b, l);
            }
        }
    }
}
