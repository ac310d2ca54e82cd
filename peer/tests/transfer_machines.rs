//! The sender's and the receiver's machines (peer/src/outgoing.rs,
//! peer/src/incoming.rs) driven against each other in memory, as
//! web/test/transfer-machines.test.js drives the web client's: messages go
//! through to_json and parse_message, frames through encode_frame and
//! decode_frame, and the test plays the path (it can drop, corrupt or cut)
//! and the caller.

use std::collections::VecDeque;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tallow_peer::control::{
    decode_frame, encode_frame, parse_message, Frame, Message, OfferedFile, BLOCK, MAX_PAYLOAD,
};
use tallow_peer::incoming::{InAction, InState, Incoming, Offer};
use tallow_peer::outgoing::{NextBlock, OutAction, OutState, Outgoing};

const ID: &str = "0123456789abcdef";

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Deterministic bytes (xorshift), different per seed.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn seal(m: &Message) -> Message {
    parse_message(m.to_json().as_bytes()).expect("what a machine sends parses")
}

type Corrupt = Box<dyn FnMut(&NextBlock, usize) -> bool>;

struct Wire {
    out: Outgoing,
    inc: Incoming,
    contents: Vec<Vec<u8>>,
    disk: Vec<Vec<u8>>,
    sent_bytes: usize,
    wholes: Vec<Sha256>,
    log: Vec<String>,
    to_sender: VecDeque<Message>,
    to_receiver: VecDeque<Message>,
    frames: VecDeque<Vec<u8>>,
    channel_up: bool,
    hold: bool,
    corrupt: Corrupt,
}

impl Wire {
    fn new(contents: Vec<(String, Vec<u8>)>) -> Self {
        let files: Vec<OfferedFile> = contents
            .iter()
            .map(|(path, data)| OfferedFile {
                path: path.clone(),
                size: data.len() as u64,
            })
            .collect();
        Wire {
            out: Outgoing::new(ID, &files),
            inc: Incoming::new(),
            disk: contents.iter().map(|(_, d)| vec![0; d.len()]).collect(),
            wholes: contents.iter().map(|_| Sha256::new()).collect(),
            contents: contents.into_iter().map(|(_, d)| d).collect(),
            sent_bytes: 0,
            log: Vec::new(),
            to_sender: VecDeque::new(),
            to_receiver: VecDeque::new(),
            frames: VecDeque::new(),
            channel_up: true,
            hold: true,
            corrupt: Box::new(|_, _| false),
        }
    }

    fn data(n: &[usize]) -> Self {
        Self::new(
            n.iter()
                .enumerate()
                .map(|(i, &len)| (format!("f{i}.bin"), bytes(len, i as u64 + 1)))
                .collect(),
        )
    }

    fn on_incoming(&mut self, actions: Vec<InAction>) {
        for a in actions {
            match a {
                InAction::Send(m) => {
                    self.log.push("send".into());
                    self.to_sender.push_back(seal(&m));
                }
                InAction::Write { file, offset, data } => {
                    self.log.push("write".into());
                    let o = offset as usize;
                    self.disk[file as usize][o..o + data.len()].copy_from_slice(&data);
                }
                InAction::Digest { file, block, data } => {
                    self.log.push("digest".into());
                    let held: Option<Arc<[u8]>> = self.hold.then(|| data.clone());
                    let next = self
                        .inc
                        .block_digest(file, block, &sha(&data), held)
                        .unwrap();
                    self.on_incoming(next);
                }
                InAction::ReadBack { file, from } => {
                    self.log.push("readBack".into());
                    let rest = self.disk[file as usize][from as usize..].to_vec();
                    self.inc.read_back(file, &rest);
                    let next = self.inc.read_back_done(file).unwrap();
                    self.on_incoming(next);
                }
                other => self.log.push(format!("{other:?}")),
            }
        }
    }

    fn on_outgoing(&mut self, actions: Vec<OutAction>) {
        for a in actions {
            match a {
                OutAction::Send(m) => {
                    self.log.push("out:send".into());
                    self.to_receiver.push_back(seal(&m));
                }
                other => self.log.push(format!("out:{other:?}")),
            }
        }
    }

    /// Sends up to `limit` blocks through the channel (if up).
    fn pump(&mut self, limit: usize) {
        for _ in 0..limit {
            let Some(b) = self.out.next_block() else {
                break;
            };
            let (o, l) = (b.offset as usize, b.length as usize);
            let data = self.contents[b.file as usize][o..o + l].to_vec();
            if b.first {
                let d = self.out.digested(b.file, b.block, &sha(&data)).unwrap();
                self.on_outgoing(d);
                self.wholes[b.file as usize].update(&data);
                if b.block + 1 == self.out.blocks(b.file).unwrap() {
                    let whole = hex::encode(self.wholes[b.file as usize].clone().finalize());
                    let d = self.out.whole(b.file, &whole);
                    self.on_outgoing(d);
                }
            }
            for start in (0..data.len()).step_by(MAX_PAYLOAD) {
                let mut chunk = data[start..(start + MAX_PAYLOAD).min(data.len())].to_vec();
                if (self.corrupt)(&b, start) {
                    chunk[0] ^= 1;
                }
                self.sent_bytes += chunk.len();
                if self.channel_up {
                    self.frames
                        .push_back(encode_frame(b.file, b.offset + start as u64, &chunk));
                }
            }
        }
        let d = self.out.flush_hashes();
        self.on_outgoing(d);
    }

    fn pump_all(&mut self) {
        self.pump(usize::MAX);
    }

    fn frames_in(&mut self) {
        while let Some(f) = self.frames.pop_front() {
            let r = self.inc.on_data(&decode_frame(&f).unwrap()).unwrap();
            self.on_incoming(r);
        }
    }

    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            while let Some(f) = self.frames.pop_front() {
                moved = true;
                let r = self.inc.on_data(&decode_frame(&f).unwrap()).unwrap();
                self.on_incoming(r);
            }
            while let Some(m) = self.to_receiver.pop_front() {
                moved = true;
                let r = self.inc.on_message(&m).unwrap();
                self.on_incoming(r);
            }
            while let Some(m) = self.to_sender.pop_front() {
                moved = true;
                let r = self.out.on_message(&m).unwrap();
                self.on_outgoing(r);
            }
            if !moved {
                break;
            }
        }
    }

    /// The channel breaks: everything in flight either way is lost; a new
    /// one opens and both sides are told.
    fn reconnect(&mut self) {
        self.frames.clear();
        self.to_sender.clear();
        self.to_receiver.clear();
        let o = self.out.on_channel().unwrap();
        self.on_outgoing(o);
        let i = self.inc.on_channel();
        self.on_incoming(i);
    }

    fn offer_and_accept(&mut self) {
        for m in self.out.offer().unwrap() {
            let r = self.inc.on_message(&seal(&m)).unwrap();
            self.on_incoming(r);
        }
        let r = self.inc.accept().unwrap();
        self.on_incoming(r);
        self.deliver();
    }

    fn total(&self) -> usize {
        self.contents.iter().map(Vec::len).sum()
    }

    fn check_disk(&self) {
        for (i, c) in self.contents.iter().enumerate() {
            assert_eq!(sha(&self.disk[i]), sha(c), "file {i}");
        }
    }
}

const B: usize = BLOCK as usize;

#[test]
fn several_files_empty_ones_too_arrive_and_are_confirmed_on_both_sides() {
    let mut w = Wire::new(
        [3 * B + 17, 0, 100, B]
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("dir/f{i}"), bytes(n, i as u64 + 7)))
            .collect(),
    );
    w.offer_and_accept();
    assert_eq!(w.out.state(), OutState::Sending);
    w.pump_all();
    w.deliver();
    assert_eq!(w.inc.state(), InState::Done);
    assert_eq!(w.out.state(), OutState::Done);
    w.check_disk();
    assert_eq!(w.sent_bytes, w.total(), "nothing sent twice");
    let p = w.inc.progress();
    assert_eq!(
        (p.done, p.total, p.files, p.count),
        (w.out.total(), w.out.total(), 4, 4)
    );
    assert_eq!(w.out.acked(), w.out.total());
}

#[test]
fn a_corrupt_chunk_is_caught_when_its_block_lands_and_only_that_block_is_sent_again() {
    let mut w = Wire::data(&[5 * B]);
    let mut once = true;
    w.corrupt = Box::new(move |b, o| {
        let hit = b.block == 2 && o == MAX_PAYLOAD * 3 && once;
        if hit {
            once = false;
        }
        hit
    });
    w.offer_and_accept();
    w.pump_all();
    w.deliver();
    w.pump_all(); // the wanted block
    w.deliver();
    assert_eq!(w.inc.state(), InState::Done);
    w.check_disk();
    assert_eq!(w.sent_bytes, 6 * B, "five blocks and one again");
}

#[test]
fn digests_after_the_data_with_blocks_no_longer_held_are_checked_by_reading_back() {
    let mut w = Wire::data(&[4 * B + 5]);
    w.hold = false;
    w.offer_and_accept();
    w.pump_all();
    // Data first, then the messages: nothing is held for the hash.
    w.frames_in();
    w.deliver();
    assert!(w.log.iter().any(|t| t == "readBack"));
    assert_eq!(w.inc.state(), InState::Done);
    assert_eq!(w.out.state(), OutState::Done);
    w.check_disk();
}

#[test]
fn a_cut_channel_resumes_from_what_landed_only_the_lost_blocks_come_again() {
    let mut w = Wire::data(&[6 * B, 2 * B]);
    w.offer_and_accept();
    w.pump(3);
    w.deliver();
    w.channel_up = false;
    w.frames.clear();
    w.pump(2); // lost on the way
    w.channel_up = true;
    let r = w.inc.on_channel();
    w.on_incoming(r);
    w.deliver();
    w.pump_all();
    w.deliver();
    assert_eq!(w.inc.state(), InState::Done);
    w.check_disk();
    assert_eq!(w.sent_bytes, 8 * B + 2 * B, "the two lost blocks, no more");
}

#[test]
fn decline_and_cancel_stop_both_sides() {
    {
        let mut w = Wire::data(&[10]);
        for m in w.out.offer().unwrap() {
            let r = w.inc.on_message(&m).unwrap();
            w.on_incoming(r);
        }
        let r = w.inc.decline().unwrap();
        w.on_incoming(r);
        w.deliver();
        assert_eq!(w.out.state(), OutState::Stopped);
        assert_eq!(w.inc.state(), InState::Stopped);
        assert_eq!(w.out.next_block(), None);
    }
    {
        let mut w = Wire::data(&[3 * B]);
        w.offer_and_accept();
        w.pump(1);
        let c = w.out.cancel("stopped by the sender");
        w.on_outgoing(c);
        w.deliver();
        assert_eq!(w.inc.state(), InState::Stopped);
        let late = encode_frame(0, BLOCK, &[0; 10]);
        assert_eq!(
            w.inc.on_data(&decode_frame(&late).unwrap()),
            Ok(vec![]),
            "late data after a cancel is dropped"
        );
    }
    {
        let mut w = Wire::data(&[2 * B]);
        w.offer_and_accept();
        let c = w.inc.cancel("stopped by the receiver");
        w.on_incoming(c);
        w.deliver();
        assert_eq!(w.out.state(), OutState::Stopped);
    }
}

#[test]
fn a_lying_sender_is_caught() {
    let mut w = Wire::data(&[2 * B]);
    w.offer_and_accept();
    let hashes = |d: char| Message::Hashes {
        id: ID.into(),
        file: 0,
        first: 0,
        sha256: vec![d.to_string().repeat(64)],
    };
    w.inc.on_message(&hashes('a')).unwrap();
    assert_eq!(
        w.inc.on_message(&hashes('b')).unwrap_err().kind(),
        "malformed"
    );
    let frame = |file, offset, len| Frame {
        file,
        offset,
        data: &[0u8; 10][..len],
    };
    let kind = |w: &mut Wire, f: Frame| w.inc.on_data(&f).unwrap_err().kind();
    assert_eq!(kind(&mut w, frame(0, 2 * BLOCK - 5, 10)), "size_exceeded");
    assert_eq!(kind(&mut w, frame(0, BLOCK - 5, 10)), "bad_frame");
    assert_eq!(kind(&mut w, frame(1, 0, 1)), "bad_frame");
    assert_eq!(
        kind(&mut w, frame(0, 7, 1)),
        "bad_frame",
        "not the continuation of a block"
    );
    // A `sent` before every block's digest: bytes were held back.
    let sent = Message::Sent {
        id: ID.into(),
        file: 0,
        sha256: "c".repeat(64),
    };
    assert_eq!(w.inc.on_message(&sent).unwrap_err().kind(), "size_short");
    // A message for another transfer.
    let other = Message::Accept {
        id: "ffffffffffffffff".into(),
    };
    assert_eq!(w.inc.on_message(&other).unwrap_err().kind(), "unexpected");
    assert_eq!(w.out.on_message(&other).unwrap_err().kind(), "unexpected");
}

#[test]
fn a_receiver_that_lies_is_caught_too() {
    let mut w = Wire::data(&[3 * B]);
    w.offer_and_accept();
    w.pump(1);
    let want = |blocks: Vec<u64>| Message::Want {
        id: ID.into(),
        file: 0,
        blocks,
    };
    assert_eq!(
        w.out.on_message(&want(vec![2])).unwrap_err().kind(),
        "unexpected",
        "not sent yet"
    );
    assert_eq!(
        w.out.on_message(&want(vec![3])).unwrap_err().kind(),
        "malformed",
        "past the end"
    );
    let got = Message::Got {
        id: ID.into(),
        file: 0,
        ok: true,
        sha256: "0".repeat(64),
    };
    assert_eq!(
        w.out.on_message(&got).unwrap_err().kind(),
        "unexpected",
        "before sent"
    );
    let files = Message::Files {
        id: ID.into(),
        part: 0,
        parts: 1,
        count: 1,
        total: 0,
        files: vec![OfferedFile {
            path: "x".into(),
            size: 0,
        }],
    };
    assert_eq!(w.out.on_message(&files).unwrap_err().kind(), "unexpected");
}

#[test]
fn an_offer_is_checked_whole_parts_in_order_counts_and_totals_that_add_up() {
    let files: Vec<OfferedFile> = (0..900)
        .map(|i| OfferedFile {
            path: format!("deep/{}/{i}.txt", "x".repeat(60)),
            size: i,
        })
        .collect();
    let out = Outgoing::new(ID, &files);
    let parts = out.offer().unwrap();
    assert!(parts.len() > 1, "a large offer is paged");
    for p in &parts {
        assert!(p.to_json().len() < 32 * 1024);
    }
    let mut inc = Incoming::new();
    let mut offer: Option<Offer> = None;
    for p in &parts {
        for a in inc.on_message(p).unwrap() {
            if let InAction::Offer(o) = a {
                offer = Some(o);
            }
        }
    }
    let offer = offer.unwrap();
    assert_eq!(offer.count, 900);
    assert_eq!(
        offer.files[899].parts.join("/"),
        format!("deep/{}/899.txt", "x".repeat(60))
    );
    // Lies: a total that does not add up; a part out of order.
    let one = Outgoing::new(
        ID,
        &[OfferedFile {
            path: "a".into(),
            size: 5,
        }],
    )
    .offer()
    .unwrap()
    .remove(0);
    let Message::Files {
        id,
        part,
        parts: n,
        count,
        files,
        ..
    } = one
    else {
        unreachable!()
    };
    let lie = Message::Files {
        id,
        part,
        parts: n,
        count,
        total: 6,
        files,
    };
    assert_eq!(
        Incoming::new().on_message(&lie).unwrap_err().kind(),
        "bad_size"
    );
    assert_eq!(
        Incoming::new().on_message(&parts[1]).unwrap_err().kind(),
        "unexpected"
    );
}

#[test]
fn a_lost_accept_the_offer_goes_again_and_is_answered_again() {
    let mut w = Wire::data(&[2 * B + 3]);
    for m in w.out.offer().unwrap() {
        let r = w.inc.on_message(&seal(&m)).unwrap();
        w.on_incoming(r);
    }
    let r = w.inc.accept().unwrap();
    w.on_incoming(r);
    w.reconnect(); // the accept was in flight
    w.deliver();
    assert_eq!(w.out.state(), OutState::Sending);
    w.pump_all();
    w.deliver();
    assert_eq!(w.inc.state(), InState::Done);
    w.check_disk();
}

#[test]
fn lost_hashes_sent_and_got_are_announced_and_confirmed_again() {
    let mut w = Wire::data(&[B + 9, 3 * B]);
    w.offer_and_accept();
    w.pump(2); // the first file whole
    w.frames_in();
    // Hashes and sent reach the receiver; its got is lost.
    while let Some(m) = w.to_receiver.pop_front() {
        let r = w.inc.on_message(&m).unwrap();
        w.on_incoming(r);
    }
    assert!(w.log.iter().any(|t| t.starts_with("FileDone")));
    w.to_sender.clear();
    w.pump(1);
    w.reconnect();
    w.deliver();
    w.pump_all();
    w.deliver();
    assert_eq!(w.inc.state(), InState::Done);
    assert_eq!(w.out.state(), OutState::Done);
    w.check_disk();
}

#[test]
fn a_lost_cancel_is_said_again_on_the_new_channel() {
    let mut w = Wire::data(&[3 * B]);
    w.offer_and_accept();
    w.pump(1);
    let c = w.inc.cancel("no room");
    w.on_incoming(c);
    w.reconnect();
    w.deliver();
    assert_eq!(w.out.state(), OutState::Stopped);
    assert_eq!(w.out.next_block(), None);
}

#[test]
fn a_half_sent_offer_is_sent_again_from_its_first_part() {
    let mut w = Wire::new(
        (0..1000)
            .map(|i| (format!("{}/{i}", "p".repeat(80)), vec![1u8]))
            .collect(),
    );
    let parts = w.out.offer().unwrap();
    assert!(parts.len() > 2);
    let r = w.inc.on_message(&seal(&parts[0])).unwrap();
    w.on_incoming(r);
    w.reconnect();
    w.deliver();
    assert_eq!(w.inc.state(), InState::Offered);
    assert_eq!(w.inc.offer().unwrap().count, 1000);
}

#[test]
fn an_offer_of_huge_files_costs_nothing_until_bytes_arrive() {
    // The web client would allocate per-block arrays here; the sparse
    // bookkeeping does not.
    let files: Vec<OfferedFile> = (0..4)
        .map(|i| OfferedFile {
            path: format!("big{i}"),
            size: (1u64 << 51) - 1,
        })
        .collect();
    let mut inc = Incoming::new();
    for p in Outgoing::new(ID, &files).offer().unwrap() {
        inc.on_message(&p).unwrap();
    }
    inc.accept().unwrap();
    let r = inc.on_channel();
    assert_eq!(
        r,
        vec![InAction::Send(Message::Resume {
            id: ID.into(),
            files: vec![]
        })]
    );
}
