//! Memory a peer controls in the receiving machine, measured with a
//! counting allocator (one #[test], so nothing else allocates meanwhile;
//! each case reports its failure and all are checked at the end).
//! Mirrors the memory tests of web/test/lying-peer.test.js.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sha2::{Digest, Sha256};
use tallow_peer::control::{decode_frame, encode_frame, offer_parts, Message, OfferedFile, BLOCK};
use tallow_peer::incoming::{InAction, InState, Incoming};

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
    receiving_files(&[(path, size)])
}

fn receiving_files(files: &[(&str, u64)]) -> Incoming {
    let mut inc = Incoming::new();
    let files: Vec<OfferedFile> = files
        .iter()
        .map(|&(path, size)| OfferedFile {
            path: path.into(),
            size,
        })
        .collect();
    for m in offer_parts(ID, &files).unwrap() {
        inc.on_message(&m).unwrap();
    }
    inc.accept().unwrap();
    inc
}

/// One data frame, then what a shell does at once: the write is done (the
/// bytes dropped here, nothing on disk is measured), the block's digest
/// computed and given with the block to hold, and the frame's bytes
/// reported finished (whose acks open the window).
fn frame(inc: &mut Incoming, file: u32, offset: u64, data: &[u8]) {
    let f = encode_frame(file, offset, data);
    let actions = inc.on_data(&decode_frame(&f).unwrap()).unwrap();
    for a in actions {
        if let InAction::Digest { file, block, data } = a {
            let d = hex::encode(Sha256::digest(&data));
            inc.block_digest(file, block, &d, Some(data)).unwrap();
        }
    }
    inc.consumed(data.len() as u64);
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
fn memory_a_sender_controls_stays_bounded() {
    let failures: Vec<String> = [
        digests_and_marks_of_blocks_stay_bounded(),
        one_byte_frames_starting_a_block_in_many_files_do_not_allocate_a_block_per_file(),
        blocks_held_for_the_whole_file_hash_are_bounded_across_files(),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

fn digests_and_marks_of_blocks_stay_bounded() -> Result<(), String> {
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
    check(grown < 16, || {
        format!("a million digests of blocks never sent held {grown} MiB")
    })?;
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
    check(grown < 16, || {
        format!("a terabyte's blocks held {grown} MiB once verified")
    })
}

/// The window counts the bytes of frames, but a frame that starts a block
/// makes the receiver allocate the whole block: a sender spreading its
/// frames over many files must not turn a small window into a large heap.
fn one_byte_frames_starting_a_block_in_many_files_do_not_allocate_a_block_per_file(
) -> Result<(), String> {
    let files = 256u32;
    let names: Vec<String> = (0..files).map(|i| format!("f{i}")).collect();
    let offer: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), BLOCK)).collect();
    let mut inc = receiving_files(&offer);
    let before = live();
    for i in 0..files {
        frame(&mut inc, i, 0, &[0]);
    }
    let grown = (live() - before) / MIB;
    check(inc.state() == InState::Receiving, || {
        format!("the receiver stopped: {:?}", inc.state())
    })?;
    check(grown < 32, || {
        format!("{files} bytes of frames made the receiver hold {grown} MiB of partial blocks")
    })
}

/// Blocks wait for the whole-file hash in memory at most HELD (16) of all
/// files together: a sender that never sends block 0 of any file, so that
/// nothing can be hashed in order, gets no more held across 16 files than
/// in one.
fn blocks_held_for_the_whole_file_hash_are_bounded_across_files() -> Result<(), String> {
    let files = 16u32;
    let names: Vec<String> = (0..files).map(|i| format!("f{i}")).collect();
    let offer: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 17 * BLOCK)).collect();
    let mut inc = receiving_files(&offer);
    let chunk = vec![0x5au8; 65536];
    let digest = hex::encode(Sha256::digest(vec![0x5au8; BLOCK as usize]));
    let before = live();
    for i in 0..files {
        // The sender's digests of blocks 1..=16, then those blocks.
        inc.on_message(&Message::Hashes {
            id: ID.into(),
            file: i,
            first: 1,
            sha256: vec![digest.clone(); 16],
        })
        .unwrap();
        for b in 1..=16u64 {
            for o in (0..BLOCK).step_by(chunk.len()) {
                frame(&mut inc, i, b * BLOCK + o, &chunk);
            }
        }
    }
    let grown = (live() - before) / MIB;
    check(inc.state() == InState::Receiving, || {
        format!("the receiver stopped: {:?}", inc.state())
    })?;
    check(grown <= 17, || {
        format!(
            "{files} files of blocks 1..=16 made the receiver hold {grown} MiB (16 blocks at most)"
        )
    })
}
