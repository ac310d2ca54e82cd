//! A lying peer against the transfer machines, with the caller's disk and
//! hash work queued (as the web client's receiving.js queues it): a
//! block's digest is known only after the frames that follow it were
//! taken. Mirrors web/test/lying-peer.test.js.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};
use tallow_peer::control::{
    decode_frame, encode_frame, offer_parts, ControlError, Holding, Message, OfferedFile, BLOCK,
};
use tallow_peer::incoming::{InAction, Incoming};
use tallow_peer::outgoing::Outgoing;

const ID: &str = "0123456789abcdef";

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

enum Job {
    Write(u32, u64, std::sync::Arc<[u8]>),
    Digest(u32, u64, std::sync::Arc<[u8]>),
    ReadBack(u32, u64),
}

struct Receiver {
    inc: Incoming,
    disk: Vec<Vec<u8>>,
    queue: VecDeque<Job>,
    done: Vec<(bool, String)>,
}

impl Receiver {
    fn new(sizes: &[u64]) -> Self {
        let mut r = Receiver {
            inc: Incoming::new(),
            disk: sizes.iter().map(|&n| vec![0; n as usize]).collect(),
            queue: VecDeque::new(),
            done: Vec::new(),
        };
        let files: Vec<OfferedFile> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| OfferedFile {
                path: format!("f{i}"),
                size,
            })
            .collect();
        for m in offer_parts(ID, &files).unwrap() {
            let a = r.inc.on_message(&m).unwrap();
            r.act(a);
        }
        let a = r.inc.accept().unwrap();
        r.act(a);
        r
    }

    fn act(&mut self, actions: Vec<InAction>) {
        for a in actions {
            match a {
                InAction::Write { file, offset, data } => {
                    self.queue.push_back(Job::Write(file, offset, data))
                }
                InAction::Digest { file, block, data } => {
                    self.queue.push_back(Job::Digest(file, block, data))
                }
                InAction::ReadBack { file, from } => {
                    self.queue.push_back(Job::ReadBack(file, from))
                }
                InAction::FileDone { ok, sha256, .. } => self.done.push((ok, sha256)),
                _ => {}
            }
        }
    }

    fn drain(&mut self) {
        while let Some(job) = self.queue.pop_front() {
            match job {
                Job::Write(file, offset, data) => {
                    let o = offset as usize;
                    self.disk[file as usize][o..o + data.len()].copy_from_slice(&data);
                }
                Job::Digest(file, block, data) => {
                    let a = self
                        .inc
                        .block_digest(file, block, &sha(&data), Some(data.clone()))
                        .unwrap();
                    self.act(a);
                }
                Job::ReadBack(file, from) => {
                    let rest = self.disk[file as usize][from as usize..].to_vec();
                    self.inc.read_back(file, &rest);
                    let a = self.inc.read_back_done(file).unwrap();
                    self.act(a);
                }
            }
        }
    }

    fn message(&mut self, m: Message) {
        let a = self.inc.on_message(&m).unwrap();
        self.act(a);
    }

    fn block(&mut self, file: u32, offset: u64, data: &[u8]) {
        for (k, chunk) in data.chunks(65536).enumerate() {
            let frame = encode_frame(file, offset + (k * 65536) as u64, chunk);
            let a = self.inc.on_data(&decode_frame(&frame).unwrap()).unwrap();
            self.act(a);
        }
    }
}

#[test]
fn a_block_sent_again_while_its_first_copy_is_hashed_cannot_replace_the_verified_bytes() {
    let good = vec![0x41u8; 1000];
    let evil = vec![0x45u8; 1000];
    let mut r = Receiver::new(&[1000]);
    r.message(Message::Hashes {
        id: ID.into(),
        file: 0,
        first: 0,
        sha256: vec![sha(&good)],
    });
    r.message(Message::Sent {
        id: ID.into(),
        file: 0,
        sha256: sha(&good),
    });
    r.block(0, 0, &good); // lands; its digest is queued
    r.block(0, 0, &evil); // the same block again, before the digest is known
    r.drain();
    let (ok, shown) = r.done.iter().find(|d| d.0).cloned().expect("verified");
    assert!(ok);
    assert_eq!(
        sha(&r.disk[0]),
        shown,
        "the file on disk is not the file whose SHA-256 was shown as verified"
    );
}

#[test]
fn a_block_sent_again_after_it_landed_and_was_hashed_leaves_disk_and_digest_in_step() {
    let blocks: Vec<Vec<u8>> = (0..3u8).map(|k| vec![0x30 + k; BLOCK as usize]).collect();
    let mut whole = Sha256::new();
    for b in &blocks {
        whole.update(b);
    }
    let mut r = Receiver::new(&[3 * BLOCK]);
    r.block(0, 0, &blocks[0]);
    r.drain(); // written and hashed; the sender's digest is still to come
    r.block(0, 0, &vec![0x66u8; BLOCK as usize]);
    r.block(0, BLOCK, &blocks[1]);
    r.block(0, 2 * BLOCK, &blocks[2]);
    r.message(Message::Hashes {
        id: ID.into(),
        file: 0,
        first: 0,
        sha256: blocks.iter().map(|b| sha(b)).collect(),
    });
    r.message(Message::Sent {
        id: ID.into(),
        file: 0,
        sha256: hex::encode(whole.finalize()),
    });
    r.drain();
    for (_, shown) in &r.done {
        assert_eq!(
            &sha(&r.disk[0]),
            shown,
            "a file reported with a SHA-256 its disk copy does not have"
        );
    }
}

#[test]
fn a_resume_claiming_blocks_never_sent_is_unexpected() {
    let mut out = Outgoing::new(
        ID,
        &[OfferedFile {
            path: "a".into(),
            size: 8 * BLOCK,
        }],
    );
    out.on_message(&Message::Accept { id: ID.into() }).unwrap();
    let b = out.next_block().unwrap();
    out.digested(b.file, b.block, &sha(&[1])).unwrap();
    // Only block 0 went out; the peer says it holds blocks 0..8.
    let e = out
        .on_message(&Message::Resume {
            id: ID.into(),
            files: vec![Holding {
                file: 0,
                have: vec![[0, 8]],
            }],
        })
        .unwrap_err();
    assert!(matches!(e, ControlError::Unexpected(_)), "{e:?}");
}

#[test]
fn a_block_wanted_many_times_goes_again_once() {
    let mut out = Outgoing::new(
        ID,
        &[OfferedFile {
            path: "a".into(),
            size: 2 * BLOCK,
        }],
    );
    out.on_message(&Message::Accept { id: ID.into() }).unwrap();
    let b = out.next_block().unwrap();
    out.digested(b.file, b.block, &sha(&[1])).unwrap();
    for _ in 0..1000 {
        out.on_message(&Message::Want {
            id: ID.into(),
            file: 0,
            blocks: vec![0; 256],
        })
        .unwrap();
    }
    let mut sent = Vec::new();
    while let Some(n) = out.next_block() {
        sent.push(n.block);
    }
    assert_eq!(
        sent,
        vec![0, 1],
        "256 000 copies of block 0 wanted in 1000 messages: it goes again once"
    );
}

/// A lying sender's offer of 32 MB of names, sent part by part past
/// `offer_parts`'s own check, is refused once it passes 16 MiB, before the
/// receiver holds it whole; `offer_parts` refuses such an offer itself.
#[test]
fn an_offer_whose_names_pass_16_mib_is_refused_as_it_arrives() {
    use tallow_peer::control::MAX_OFFER_PATH_BYTES;
    let long = |i: usize| format!("{i:08}/{}", "x".repeat(3991));
    let mut inc = Incoming::new();
    let parts = 1000u32;
    let mut refused = None;
    for p in 0..parts {
        let files: Vec<OfferedFile> = (0..8)
            .map(|k| OfferedFile {
                path: long(p as usize * 8 + k),
                size: 1,
            })
            .collect();
        let m = Message::Files {
            id: ID.into(),
            part: p,
            parts,
            count: parts * 8,
            total: u64::from(parts) * 8,
            files,
        };
        if let Err(e) = inc.on_message(&m) {
            refused = Some((e, p));
            break;
        }
    }
    let (e, p) = refused.expect("an offer of 32 MB of names was taken");
    assert_eq!(e.kind(), "bad_name", "{e}");
    assert!(
        p as usize * 8 * 4000 <= MAX_OFFER_PATH_BYTES + 8 * 4000,
        "refused only at part {p}"
    );
    let files: Vec<OfferedFile> = (0..4200)
        .map(|i| OfferedFile {
            path: long(i),
            size: 1,
        })
        .collect();
    let e = offer_parts(ID, &files).unwrap_err();
    assert_eq!(e.kind(), "bad_name");
    assert!(e.to_string().contains("16 MiB"), "{e}");
    assert!(offer_parts(ID, &files[..4000]).is_ok());
}
