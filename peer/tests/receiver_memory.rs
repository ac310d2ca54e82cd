//! Memory a peer controls in the receiving machine, measured with a
//! counting allocator (one #[test], so nothing else allocates meanwhile).
//! Mirrors the memory tests of web/test/lying-peer.test.js.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use tallow_peer::control::{offer_parts, Message, OfferedFile, BLOCK};
use tallow_peer::incoming::Incoming;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

const ID: &str = "0123456789abcdef";
const MIB: isize = 1 << 20;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn receiving(path: &str, size: u64) -> Incoming {
    let mut inc = Incoming::new();
    for m in offer_parts(
        ID,
        &[OfferedFile {
            path: path.into(),
            size,
        }],
    )
    .unwrap()
    {
        inc.on_message(&m).unwrap();
    }
    inc.accept().unwrap();
    inc
}

fn digest(n: u64) -> String {
    format!("{n:064x}")
}

fn hashes(first: u64, n: u64) -> Message {
    Message::Hashes {
        id: ID.into(),
        file: 0,
        first,
        sha256: (first..first + n).map(digest).collect(),
    }
}

#[test]
fn digests_and_marks_of_blocks_stay_bounded() {
    // A sender announcing digests for blocks it never sends ("8 PiB", and
    // the user accepted it).
    let mut inc = receiving("huge", (1 << 53) - 1);
    let before = live();
    let mut first = 0;
    while first < 1 << 20 {
        if inc.on_message(&hashes(first, 256)).is_err() {
            break;
        }
        first += 256;
    }
    let grown = (live() - before) / MIB;
    assert!(
        grown < 16,
        "a million digests of blocks never sent held {grown} MiB"
    );
    drop(inc);

    // An honest terabyte: the sender's digests a little ahead of the data,
    // our digest of each block as it lands (not held: read back at the end).
    let blocks = 1u64 << 20;
    let mut inc = receiving("disk.img", blocks * BLOCK);
    let before = live();
    let mut first = 0;
    while first < blocks {
        inc.on_message(&hashes(first, 64)).unwrap();
        for b in first..first + 64 {
            inc.block_digest(0, b, &digest(b), None).unwrap();
        }
        first += 64;
    }
    let grown = (live() - before) / MIB;
    assert!(
        grown < 16,
        "a terabyte's blocks held {grown} MiB once verified"
    );
}
