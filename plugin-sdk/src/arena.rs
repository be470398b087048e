//! The allocator of a plugin built for wasm: a bump arena in front of the system allocator.
//!
//! hookwasm runs every event on a fresh instance and throws the instance away afterwards, so
//! freeing memory within a call rarely pays for itself: a transform allocates a few kilobytes
//! of small strings and maps and drops them all at the end. The arena hands out small blocks
//! by bumping a pointer and frees them for nothing (the latest block is taken back, so a
//! growing `String` or `Vec` extends in place). That makes allocation about a third of a
//! typical plugin's time cheaper (BENCHMARKS.md).
//!
//! Its chunks come from the system allocator (wasi-libc's dlmalloc). The first chunk is the
//! free tail of the instance's initial memory, so a plugin that stays within it never grows
//! memory (growing costs two `mprotect` calls per event in the host). Large blocks go straight
//! to the system allocator, where they can be reused; once the arena has used its budget,
//! small blocks do too. Memory a plugin can waste this way is bounded by that budget.
//!
//! Plugins get it through the `arena` feature (on by default); turn it off to use the
//! system allocator or to declare your own `#[global_allocator]`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Blocks of at least this size go to the system allocator (and can be reused there).
pub const LARGE: usize = 4 << 10;
/// The most memory the arena takes from the system allocator, all chunks together.
pub const BUDGET: usize = 4 << 20;
/// The first chunk when the initial memory has no usable tail; each later chunk doubles.
const MIN_CHUNK: usize = 16 << 10;
const MAX_CHUNKS: usize = 16;

/// Where the arena's first chunk comes from.
#[derive(Debug, Clone, Copy)]
pub enum FirstChunk {
    /// This many bytes from the system allocator (which, with wasi-libc, hands out the free
    /// tail of the initial memory first).
    Allocate(usize),
    /// This region `[start, end)`, which no allocator uses: on `wasm32-unknown-unknown`,
    /// std's allocator only ever grows memory, so the arena claims the initial memory's
    /// free tail itself.
    Region(usize, usize),
}

/// A bump arena for small blocks over `backing`. Single-threaded, as a wasm plugin is.
pub struct Arena<B> {
    backing: B,
    first_chunk: fn() -> FirstChunk,
    state: UnsafeCell<State>,
}

struct State {
    /// The bump pointer and the end of the current chunk.
    next: usize,
    end: usize,
    /// Where the current chunk starts. It and `end` repeat the last entry of `chunks` so
    /// the hot path needs no indexing, which would link a panic path into every plugin.
    chunk_start: usize,
    /// `[start, end)` of every chunk, to tell arena blocks from system blocks on free.
    chunks: [(usize, usize); MAX_CHUNKS],
    count: usize,
    taken: usize,
}

// SAFETY: a wasm plugin has one thread; the native tests use one arena per thread.
unsafe impl<B: Sync> Sync for Arena<B> {}

impl<B: GlobalAlloc> Arena<B> {
    /// An arena whose first chunk is what `first_chunk()` says (called once, on first use).
    pub const fn new(backing: B, first_chunk: fn() -> FirstChunk) -> Self {
        Arena {
            backing,
            first_chunk,
            state: UnsafeCell::new(State {
                next: 0,
                end: 0,
                chunk_start: 0,
                chunks: [(0, 0); MAX_CHUNKS],
                count: 0,
                taken: 0,
            }),
        }
    }

    /// Whether `block` of `size` bytes is the latest block bumped out of the current chunk.
    fn is_newest(state: &State, block: usize, size: usize) -> bool {
        state.count > 0 && block + size == state.next && block >= state.chunk_start
    }

    /// Whether `ptr` lies in one of the arena's chunks (the newest are checked first).
    fn owns(state: &State, ptr: usize) -> bool {
        state.chunks.iter().take(state.count).rev().any(|&(start, end)| (start..end).contains(&ptr))
    }

    /// Bumps `layout` out of the current chunk, taking a new chunk if it does not fit; null
    /// when the budget is spent or the system allocator has no more.
    unsafe fn bump(&self, state: &mut State, layout: Layout) -> *mut u8 {
        let start = align_up(state.next, layout.align());
        if state.count > 0 && start + layout.size() <= state.end {
            state.next = start + layout.size();
            return start as *mut u8;
        }
        let (chunk, size) = match state.count {
            0 => match (self.first_chunk)() {
                FirstChunk::Region(start, end) if end > align_up(start, 16) + MIN_CHUNK => {
                    let start = align_up(start, 16);
                    (start, end - start)
                }
                FirstChunk::Region(..) => (0, MIN_CHUNK),
                FirstChunk::Allocate(size) => (0, size.max(MIN_CHUNK)),
            },
            _ => (0, (state.end - state.chunk_start) * 2),
        };
        let Some(slot) = state.chunks.get_mut(state.count) else { return ptr::null_mut() };
        let chunk = if chunk != 0 {
            chunk
        } else {
            if state.taken + size > BUDGET {
                return ptr::null_mut();
            }
            // SAFETY: `size` is non-zero and 16 is a power of two.
            let chunk = unsafe { self.backing.alloc(Layout::from_size_align_unchecked(size, 16)) } as usize;
            if chunk == 0 {
                return ptr::null_mut();
            }
            chunk
        };
        *slot = (chunk, chunk + size);
        state.count += 1;
        state.taken += size;
        state.chunk_start = chunk;
        state.end = chunk + size;
        let start = align_up(chunk, layout.align());
        if start + layout.size() > state.end {
            state.next = chunk;
            return ptr::null_mut();
        }
        state.next = start + layout.size();
        start as *mut u8
    }
}

/// `value` rounded up to `align`, a power of two. (`next_multiple_of` would link a panic
/// path, and with it the standard library's stderr printing, into plugins that have none.)
fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

unsafe impl<B: GlobalAlloc> GlobalAlloc for Arena<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            return unsafe { self.backing.alloc(layout) };
        }
        // SAFETY: single-threaded, and no reference to the state outlives this call.
        let state = unsafe { &mut *self.state.get() };
        match unsafe { self.bump(state, layout) } {
            block if block.is_null() => unsafe { self.backing.alloc(layout) },
            block => block,
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if layout.size() >= LARGE {
            return unsafe { self.backing.dealloc(block, layout) };
        }
        let state = unsafe { &mut *self.state.get() };
        if Self::is_newest(state, block as usize, layout.size()) {
            state.next = block as usize;
        } else if !Self::owns(state, block as usize) {
            unsafe { self.backing.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (layout.size(), new_size);
        if old >= LARGE && new >= LARGE {
            return unsafe { self.backing.realloc(block, layout, new_size) };
        }
        let state = unsafe { &mut *self.state.get() };
        // The newest block grows or shrinks in place while it fits its chunk.
        if old < LARGE
            && new < LARGE
            && Self::is_newest(state, block as usize, old)
            && block as usize + new <= state.end
        {
            state.next = block as usize + new;
            return block;
        }
        // SAFETY: the caller guarantees `new_size` is valid for `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            unsafe {
                ptr::copy_nonoverlapping(block, moved, old.min(new));
                self.dealloc(block, layout);
            }
        }
        moved
    }
}

/// The free tail of the initial linear memory: with wasi-libc, as a size to allocate, less
/// what wasi-libc keeps for itself; without it, as the region itself.
#[cfg(all(target_arch = "wasm32", feature = "arena"))]
fn initial_memory_tail() -> FirstChunk {
    unsafe extern "C" {
        static __heap_base: u8;
    }
    let heap_base = &raw const __heap_base as usize;
    let memory_end = core::arch::wasm32::memory_size(0) * 65536;
    if cfg!(target_os = "unknown") {
        FirstChunk::Region(heap_base, memory_end)
    } else {
        /// Left in the initial memory for wasi-libc's own allocations.
        const LIBC_RESERVE: usize = 2 << 10;
        FirstChunk::Allocate(memory_end.saturating_sub(heap_base).saturating_sub(LIBC_RESERVE))
    }
}

#[cfg(all(target_arch = "wasm32", feature = "arena"))]
#[global_allocator]
static ALLOCATOR: Arena<std::alloc::System> = Arena::new(std::alloc::System, initial_memory_tail);

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn arena() -> &'static Arena<System> {
        Box::leak(Box::new(Arena::new(System, || FirstChunk::Allocate(1024))))
    }

    unsafe fn fill(block: *mut u8, len: usize, byte: u8) {
        unsafe { ptr::write_bytes(block, byte, len) }
    }

    #[test]
    fn a_first_region_is_used_as_it_is_without_the_system_allocator() {
        const LEN: usize = 64 << 10;
        static mut REGION: [u8; LEN] = [0; LEN];
        fn region() -> FirstChunk {
            // Only its address is taken: the arena writes through raw pointers.
            let start = (&raw mut REGION) as usize;
            FirstChunk::Region(start, start + LEN)
        }
        let arena: &'static Arena<System> = Box::leak(Box::new(Arena::new(System, region)));
        let layout = Layout::from_size_align(100, 8).unwrap();
        let block = unsafe { arena.alloc(layout) } as usize;
        let start = (&raw mut REGION) as usize;
        assert!((start..start + LEN).contains(&block), "the block comes from the region");
        assert_eq!(block % 8, 0);
    }

    #[test]
    fn small_blocks_are_bumped_and_the_newest_is_taken_back() {
        let arena = arena();
        let small = Layout::from_size_align(24, 8).unwrap();
        unsafe {
            let a = arena.alloc(small);
            let b = arena.alloc(small);
            assert_eq!(b as usize, a as usize + 24);
            arena.dealloc(b, small);
            assert_eq!(arena.alloc(small), b, "the newest block is reused");
            fill(a, 24, 1);
        }
    }

    #[test]
    fn the_newest_block_grows_in_place_and_others_move_with_their_bytes() {
        let arena = arena();
        let layout = Layout::from_size_align(16, 1).unwrap();
        unsafe {
            let a = arena.alloc(layout);
            fill(a, 16, 7);
            let grown = arena.realloc(a, layout, 64);
            assert_eq!(grown, a);
            let b = arena.alloc(layout);
            let moved = arena.realloc(grown, Layout::from_size_align(64, 1).unwrap(), 128);
            assert_ne!(moved, grown);
            assert_eq!(std::slice::from_raw_parts(moved, 16), &[7; 16]);
            arena.dealloc(b, layout);
        }
    }

    #[test]
    fn blocks_cross_to_and_from_the_system_allocator_intact() {
        let arena = arena();
        let small = Layout::from_size_align(100, 4).unwrap();
        unsafe {
            let a = arena.alloc(small);
            fill(a, 100, 3);
            let large = arena.realloc(a, small, LARGE * 2);
            assert!(!arena.owns_block(large));
            assert_eq!(std::slice::from_raw_parts(large, 100), &[3; 100]);
            let back = arena.realloc(large, Layout::from_size_align(LARGE * 2, 4).unwrap(), 50);
            assert!(arena.owns_block(back));
            assert_eq!(std::slice::from_raw_parts(back, 50), &[3; 50]);
        }
    }

    #[test]
    fn alignment_is_respected() {
        let arena = arena();
        unsafe {
            arena.alloc(Layout::from_size_align(3, 1).unwrap());
            for align in [2, 8, 64, 1024] {
                let block = arena.alloc(Layout::from_size_align(8, align).unwrap());
                assert_eq!(block as usize % align, 0, "align {align}");
            }
        }
    }

    #[test]
    fn past_the_budget_small_blocks_come_from_the_system_and_are_freed_there() {
        let arena = arena();
        let layout = Layout::from_size_align(LARGE - 1, 1).unwrap();
        let mut blocks = Vec::new();
        unsafe {
            for _ in 0..(BUDGET / (LARGE - 1) + 64) {
                let block = arena.alloc(layout);
                assert!(!block.is_null());
                blocks.push(block);
            }
            let state = &*arena.state.get();
            assert!(state.taken <= BUDGET, "took {} bytes", state.taken);
            let outside: Vec<_> = blocks.iter().filter(|b| !arena.owns_block(**b)).collect();
            assert!(!outside.is_empty(), "some blocks come from the system allocator");
            for block in blocks {
                arena.dealloc(block, layout);
            }
        }
    }

    impl<B: GlobalAlloc> Arena<B> {
        fn owns_block(&self, block: *mut u8) -> bool {
            Self::owns(unsafe { &*self.state.get() }, block as usize)
        }
    }
}
