//! Flow control of transfers v2 (docs/PROTOCOL.md, "Flow control"): the
//! sender starts blocks only within `WINDOW` bytes of the receiver's last
//! `ack`, the receiver refuses frames past it and acks every `ACK_EVERY`
//! bytes it finished with, and a new data channel starts both afresh.

use std::collections::{HashMap, HashSet, VecDeque};

use sha2::{Digest, Sha256};
use tallow_peer::control::{
    decode_frame, encode_frame, offer_parts, parse_message, Frame, Holding, Message, OfferedFile,
    ACK_EVERY, BLOCK, MAX_PAYLOAD, WINDOW,
};
use tallow_peer::incoming::{InAction, InState, Incoming};
use tallow_peer::outgoing::{OutAction, OutState, Outgoing};

const ID: &str = "0123456789abcdef";
const MIB: u64 = 1 << 20;
const CHUNK: u64 = MAX_PAYLOAD as u64;

fn offered(size: u64) -> Vec<OfferedFile> {
    vec![OfferedFile {
        path: "big.bin".into(),
        size,
    }]
}

/// A sender whose offer of one file of `size` bytes was accepted.
fn sending(size: u64) -> Outgoing {
    let mut out = Outgoing::new(ID, &offered(size));
    assert_eq!(
        out.on_message(&Message::Accept { id: ID.into() }).unwrap(),
        vec![OutAction::Accepted]
    );
    out
}

/// A receiver that accepted an offer of one file of `size` bytes.
fn receiving(size: u64) -> Incoming {
    let mut inc = Incoming::new();
    for m in offer_parts(ID, &offered(size)).unwrap() {
        inc.on_message(&m).unwrap();
    }
    inc.accept().unwrap();
    inc
}

fn ack(bytes: u64) -> Message {
    Message::Ack {
        id: ID.into(),
        bytes,
    }
}

/// Every block `next_block` hands out now, digesting the new ones as the
/// caller does.
fn take(out: &mut Outgoing) -> Vec<u64> {
    take_up_to(out, usize::MAX)
}

fn take_up_to(out: &mut Outgoing, n: usize) -> Vec<u64> {
    let mut blocks = Vec::new();
    while blocks.len() < n {
        let Some(b) = out.next_block() else {
            break;
        };
        if b.first {
            out.digested(b.file, b.block, &format!("{:064x}", b.block))
                .unwrap();
        }
        blocks.push(b.block);
    }
    blocks
}

fn kind(r: Result<Vec<OutAction>, tallow_peer::ControlError>) -> &'static str {
    r.unwrap_err().kind()
}

#[test]
fn a_sender_stops_at_the_window_and_goes_on_as_acks_come() {
    let mut out = sending(100 * MIB);
    assert_eq!(
        take(&mut out),
        (0..16).collect::<Vec<_>>(),
        "16 MiB without an ack"
    );
    for _ in 0..3 {
        assert_eq!(out.next_block(), None, "asked again, still nothing");
    }
    assert!(!out.drained(), "a sender held by the window is not drained");
    out.on_message(&ack(ACK_EVERY)).unwrap();
    assert_eq!(take(&mut out), (16..20).collect::<Vec<_>>());
    out.on_message(&ack(5 * MIB)).unwrap();
    assert_eq!(take(&mut out), vec![20]);
    out.on_message(&ack(5 * MIB + MIB / 2)).unwrap();
    assert_eq!(
        take(&mut out),
        Vec::<u64>::new(),
        "half a block of room is not a block"
    );
    out.on_message(&ack(6 * MIB)).unwrap();
    assert_eq!(take(&mut out), vec![21]);
    // On to the end, an ack every 4 MiB as the receiver sends them: every
    // block handed out exactly once, in order, none skipped.
    let mut all: Vec<u64> = (0..22).collect();
    let mut acked = 6 * MIB;
    while !out.drained() {
        acked += ACK_EVERY;
        out.on_message(&ack(acked.min(all.len() as u64 * MIB)))
            .unwrap();
        let more = take(&mut out);
        assert!(more.len() <= 4, "{more:?}");
        all.extend(more);
        assert!(all.len() as u64 * MIB <= acked + WINDOW);
    }
    assert_eq!(all, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_wanted_block_waits_for_the_window_and_is_not_lost() {
    let mut out = sending(20 * MIB);
    assert_eq!(take(&mut out), (0..16).collect::<Vec<_>>());
    out.on_message(&Message::Want {
        id: ID.into(),
        file: 0,
        blocks: vec![3, 5],
    })
    .unwrap();
    assert_eq!(out.next_block(), None, "a resend counts as any block");
    assert_eq!(out.next_block(), None);
    out.on_message(&ack(MIB)).unwrap();
    let b = out.next_block().unwrap();
    assert_eq!((b.block, b.first), (3, false));
    assert_eq!(out.next_block(), None);
    out.on_message(&ack(2 * MIB)).unwrap();
    assert_eq!(take(&mut out), vec![5]);
    out.on_message(&ack(3 * MIB)).unwrap();
    assert_eq!(take(&mut out), vec![16]);
    out.on_message(&ack(17 * MIB)).unwrap();
    assert_eq!(take(&mut out), vec![17, 18, 19]);
    assert!(out.drained());
}

#[test]
fn an_ack_that_goes_back_or_past_what_was_started_is_unexpected() {
    let mut out = sending(100 * MIB);
    assert_eq!(take_up_to(&mut out, 3), vec![0, 1, 2]);
    assert_eq!(kind(out.on_message(&ack(3 * MIB + 1))), "unexpected");
    assert_eq!(out.on_message(&ack(2 * MIB)), Ok(vec![]));
    assert_eq!(kind(out.on_message(&ack(2 * MIB - 1))), "unexpected");
    assert_eq!(kind(out.on_message(&ack(0))), "unexpected");
    assert_eq!(out.on_message(&ack(2 * MIB)), Ok(vec![]), "the same again");
    assert_eq!(out.on_message(&ack(3 * MIB)), Ok(vec![]), "all of it");
    // The refused acks changed nothing: the window is 3 + 16 MiB.
    assert_eq!(take(&mut out), (3..19).collect::<Vec<_>>());

    // Before the offer is answered an ack is out of turn.
    let mut unanswered = Outgoing::new(ID, &offered(MIB));
    assert_eq!(kind(unanswered.on_message(&ack(0))), "unexpected");
    // After the end, ignored as any message is.
    out.cancel("stop");
    assert_eq!(out.state(), OutState::Stopped);
    assert_eq!(out.on_message(&ack(u64::from(u32::MAX))), Ok(vec![]));
    let mut empty = sending(0);
    assert_eq!(take(&mut empty), Vec::<u64>::new());
    let sent = empty.flush_hashes();
    assert!(matches!(&sent[..], [OutAction::Send(Message::Sent { .. })]));
    let Some(OutAction::Send(Message::Sent { sha256, .. })) = sent.into_iter().next() else {
        unreachable!()
    };
    empty
        .on_message(&Message::Got {
            id: ID.into(),
            file: 0,
            ok: true,
            sha256,
        })
        .unwrap();
    assert_eq!(empty.state(), OutState::Done);
    assert_eq!(empty.on_message(&ack(5)), Ok(vec![]));

    // An ack reaching the receiving side is not for it.
    let mut inc = receiving(MIB);
    assert_eq!(inc.on_message(&ack(0)).unwrap_err().kind(), "unexpected");
    // Nor, parsed from its record, for another transfer.
    let other = parse_message(br#"{"kind":"ack","id":"ffffffffffffffff","bytes":0}"#).unwrap();
    assert_eq!(kind(out.on_message(&other)), "unexpected");
}

#[test]
fn a_new_channel_starts_the_senders_window_afresh() {
    let mut out = sending(100 * MIB);
    assert_eq!(take(&mut out), (0..16).collect::<Vec<_>>());
    out.on_message(&ack(8 * MIB)).unwrap();
    assert_eq!(take(&mut out), (16..24).collect::<Vec<_>>());
    assert_eq!(out.on_channel(), Ok(vec![]));
    assert_eq!(
        kind(out.on_message(&ack(MIB))),
        "unexpected",
        "nothing was started on the new channel"
    );
    let r = out
        .on_message(&Message::Resume {
            id: ID.into(),
            files: vec![Holding {
                file: 0,
                have: vec![[0, 20]],
            }],
        })
        .unwrap();
    assert_eq!(r.last(), Some(&OutAction::Resumed));
    // 24 MiB started and 8 acked on the old channel would leave no room;
    // the new channel has all 16 MiB.
    assert_eq!(take(&mut out), (20..36).collect::<Vec<_>>());
    // The old channel's last ack (8 MiB) is gone too: 4 MiB counts here.
    out.on_message(&ack(4 * MIB)).unwrap();
    assert_eq!(take(&mut out), (36..40).collect::<Vec<_>>());
}

/// Feeds whole 64 KiB frames `from..to` (numbered from the file's start)
/// and returns how many were taken before the first refusal.
fn frames(inc: &mut Incoming, from: u64, to: u64) -> Result<u64, String> {
    let chunk = vec![7u8; MAX_PAYLOAD];
    for n in from..to {
        let f = Frame {
            file: 0,
            offset: n * CHUNK,
            data: &chunk,
        };
        if let Err(e) = inc.on_data(&f) {
            return Err(format!("frame {n}: {}", e.kind()));
        }
    }
    Ok(to - from)
}

fn sends(actions: Vec<InAction>) -> Vec<Message> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            InAction::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn a_receiver_refuses_the_frame_past_the_window_and_acks_every_4_mib_finished() {
    let per_mib = MIB / CHUNK;
    let mut inc = receiving(100 * MIB);
    assert_eq!(frames(&mut inc, 0, 16 * per_mib), Ok(16 * per_mib));
    assert_eq!(
        frames(&mut inc, 16 * per_mib, 16 * per_mib + 1),
        Err(format!("frame {}: unexpected_data", 16 * per_mib))
    );
    // Checked before anything else: a frame that is also for no file.
    let f = Frame {
        file: 9,
        offset: 0,
        data: &[1],
    };
    assert_eq!(inc.on_data(&f).unwrap_err().kind(), "unexpected_data");
    // Finished with 64 KiB at a time: an ack at 4 MiB, not before.
    for _ in 0..4 * per_mib - 1 {
        assert_eq!(inc.consumed(CHUNK), vec![]);
    }
    assert_eq!(sends(inc.consumed(CHUNK)), vec![ack(4 * MIB)]);
    // 4 MiB more room, no more.
    assert_eq!(
        frames(&mut inc, 16 * per_mib, 20 * per_mib),
        Ok(4 * per_mib)
    );
    assert!(frames(&mut inc, 20 * per_mib, 20 * per_mib + 1).is_err());
    // The ack carries the count, whenever it grew by 4 MiB since the last.
    assert_eq!(inc.consumed(3 * MIB), vec![]);
    assert_eq!(
        sends(inc.consumed(MIB + MIB / 2)),
        vec![ack(8 * MIB + MIB / 2)]
    );
    let room = (8 * MIB + MIB / 2 + WINDOW) / CHUNK;
    assert_eq!(
        frames(&mut inc, 20 * per_mib, room),
        Ok(room - 20 * per_mib)
    );
    assert!(frames(&mut inc, room, room + 1).is_err());
    // Never more than was received.
    assert_eq!(
        sends(inc.consumed(100 * MIB)),
        vec![ack(8 * MIB + MIB / 2 + WINDOW)]
    );
    // No ack once the transfer stopped; late frames are ignored, window
    // or not.
    inc.cancel("stop");
    assert_eq!(inc.consumed(8 * MIB), vec![]);
    assert_eq!(
        frames(&mut inc, 90 * per_mib, 99 * per_mib),
        Ok(9 * per_mib)
    );
}

#[test]
fn a_new_channel_starts_the_receivers_window_and_count_afresh() {
    let per_mib = MIB / CHUNK;
    let mut inc = receiving(100 * MIB);
    assert_eq!(frames(&mut inc, 0, 16 * per_mib), Ok(16 * per_mib));
    assert_eq!(inc.consumed(3 * MIB), vec![]);
    assert!(frames(&mut inc, 16 * per_mib, 16 * per_mib + 1).is_err());
    let r = inc.on_channel();
    assert!(matches!(&r[..], [InAction::Send(Message::Resume { .. })]));
    assert_eq!(
        frames(&mut inc, 16 * per_mib, 32 * per_mib),
        Ok(16 * per_mib),
        "16 MiB on the new channel"
    );
    assert!(frames(&mut inc, 32 * per_mib, 32 * per_mib + 1).is_err());
    // The 3 MiB finished on the old channel do not count here.
    assert_eq!(inc.consumed(3 * MIB), vec![]);
    assert_eq!(sends(inc.consumed(MIB)), vec![ack(4 * MIB)]);
}

/// What travels from the sender to the receiver on the (ordered) channel.
enum Item {
    Frame(Vec<u8>),
    Msg(Message),
}

/// A block's digest as the callers give it to the machines: any function
/// of the bytes both sides compute alike does (SHA-256 is slow in a debug
/// build; the whole-file SHA-256 is real).
fn block_digest(data: &[u8]) -> String {
    let mut h = [0xcbf2_9ce4_8422_2325u64, 1, 2, 3];
    for (k, w) in data.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..w.len()].copy_from_slice(w);
        let lane = &mut h[k % 4];
        *lane = (*lane ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3);
    }
    h.iter().map(|x| format!("{x:016x}")).collect()
}

fn seal(m: &Message) -> Message {
    parse_message(m.to_json().as_bytes()).expect("what a machine sends parses")
}

/// Both machines, the channel between them and the callers, all in memory.
struct Link {
    out: Outgoing,
    inc: Incoming,
    content: Vec<u8>,
    disk: Vec<u8>,
    whole: Sha256,
    to_inc: VecDeque<Item>,
    to_out: VecDeque<Message>,
    /// The test's own count on this channel: bytes of the blocks handed
    /// out, the last ack fed to the sender, the most ever ahead.
    started: u64,
    acked: u64,
    max_ahead: u64,
    /// Blocks in the order handed out; blocks whose write was done.
    handed: Vec<u64>,
    landed: HashSet<u64>,
    corrupt: Option<u64>,
    acks: usize,
    wants: Vec<u64>,
}

impl Link {
    fn new(size: usize) -> Self {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut content = Vec::with_capacity(size + 8);
        while content.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            content.extend_from_slice(&x.to_le_bytes());
        }
        content.truncate(size);
        Link {
            out: Outgoing::new(ID, &offered(size as u64)),
            inc: Incoming::new(),
            disk: vec![0; size],
            content,
            whole: Sha256::new(),
            to_inc: VecDeque::new(),
            to_out: VecDeque::new(),
            started: 0,
            acked: 0,
            max_ahead: 0,
            handed: Vec::new(),
            landed: HashSet::new(),
            corrupt: None,
            acks: 0,
            wants: Vec::new(),
        }
    }

    fn on_out(&mut self, actions: Vec<OutAction>) {
        for a in actions {
            if let OutAction::Send(m) = a {
                self.to_inc.push_back(Item::Msg(seal(&m)));
            }
        }
    }

    fn on_in(&mut self, actions: Vec<InAction>) {
        for a in actions {
            match a {
                InAction::Send(m) => {
                    match &m {
                        Message::Ack { .. } => self.acks += 1,
                        Message::Want { blocks, .. } => self.wants.extend(blocks),
                        _ => {}
                    }
                    self.to_out.push_back(seal(&m));
                }
                InAction::Write { offset, data, .. } => {
                    let o = offset as usize;
                    self.disk[o..o + data.len()].copy_from_slice(&data);
                    self.landed.insert(offset / BLOCK);
                }
                InAction::Digest { file, block, data } => {
                    let r = self
                        .inc
                        .block_digest(file, block, &block_digest(&data), Some(data.clone()))
                        .unwrap();
                    self.on_in(r);
                }
                InAction::ReadBack { file, from } => {
                    let rest = self.disk[from as usize..].to_vec();
                    self.inc.read_back(file, &rest);
                    let r = self.inc.read_back_done(file).unwrap();
                    self.on_in(r);
                }
                _ => {}
            }
        }
    }

    /// The sender hands out every block the window allows; returns how many.
    fn pump(&mut self) -> usize {
        let mut n = 0;
        while let Some(b) = self.out.next_block() {
            n += 1;
            self.started += b.length;
            assert!(
                self.started <= self.acked + WINDOW,
                "block {} takes the sender {} bytes past the last ack",
                b.block,
                self.started - self.acked
            );
            self.max_ahead = self.max_ahead.max(self.started - self.acked);
            self.handed.push(b.block);
            let (o, l) = (b.offset as usize, b.length as usize);
            let data = self.content[o..o + l].to_vec();
            if b.first {
                let r = self
                    .out
                    .digested(b.file, b.block, &block_digest(&data))
                    .unwrap();
                self.on_out(r);
                self.whole.update(&data);
                if b.block + 1 == self.out.blocks(b.file).unwrap() {
                    let whole = hex::encode(self.whole.clone().finalize());
                    let r = self.out.whole(b.file, &whole);
                    self.on_out(r);
                }
            }
            for start in (0..l).step_by(MAX_PAYLOAD) {
                let mut chunk = data[start..(start + MAX_PAYLOAD).min(l)].to_vec();
                if self.corrupt == Some(b.block) {
                    chunk[0] ^= 1; // once
                    self.corrupt = None;
                }
                let frame = encode_frame(b.file, b.offset + start as u64, &chunk);
                self.to_inc.push_back(Item::Frame(frame));
            }
        }
        let r = self.out.flush_hashes();
        self.on_out(r);
        n
    }

    /// The receiver takes up to `k` records, finishing with each frame
    /// (written, or ignored) as it goes; returns how many.
    fn receive(&mut self, k: usize) -> usize {
        let mut n = 0;
        while n < k {
            let Some(item) = self.to_inc.pop_front() else {
                break;
            };
            n += 1;
            match item {
                Item::Frame(f) => {
                    let frame = decode_frame(&f).unwrap();
                    let r = self.inc.on_data(&frame).unwrap();
                    self.on_in(r);
                    let r = self.inc.consumed(frame.data.len() as u64);
                    self.on_in(r);
                }
                Item::Msg(m) => {
                    let r = self.inc.on_message(&m).unwrap();
                    self.on_in(r);
                }
            }
        }
        n
    }

    /// The sender takes everything the receiver sent; returns how many.
    fn answer(&mut self) -> usize {
        let mut n = 0;
        while let Some(m) = self.to_out.pop_front() {
            n += 1;
            if let Message::Ack { bytes, .. } = m {
                assert!(bytes >= self.acked && bytes <= self.started);
                self.acked = bytes;
            }
            let r = self.out.on_message(&m).unwrap();
            self.on_out(r);
        }
        n
    }

    /// The channel breaks with everything in flight lost; a new one opens,
    /// both sides are told, and the receiver's `resume` reaches the sender
    /// before it sends on (it waits for it).
    fn new_channel(&mut self) -> Vec<u64> {
        self.to_inc.clear();
        self.to_out.clear();
        let lost: Vec<u64> = self
            .handed
            .iter()
            .copied()
            .filter(|b| !self.landed.contains(b))
            .collect();
        self.started = 0;
        self.acked = 0;
        let r = self.out.on_channel().unwrap();
        self.on_out(r);
        let r = self.inc.on_channel();
        assert!(matches!(&r[..], [InAction::Send(Message::Resume { .. })]));
        self.on_in(r);
        assert_eq!(self.answer(), 1);
        lost
    }
}

#[test]
fn a_sender_and_a_receiver_move_50_mib_through_the_window_with_a_want_and_a_new_channel() {
    // 50 MiB and a short last block: blocks 0..=50.
    let size = 50 * MIB as usize + 777;
    let mut l = Link::new(size);
    l.corrupt = Some(48);
    for m in l.out.offer().unwrap() {
        let r = l.inc.on_message(&seal(&m)).unwrap();
        l.on_in(r);
    }
    let r = l.inc.accept().unwrap();
    l.on_in(r);
    l.answer();
    assert_eq!(l.out.state(), OutState::Sending);

    let mut lost = Vec::new();
    let mut rounds = 0;
    while l.out.state() != OutState::Done || l.inc.state() != InState::Done {
        rounds += 1;
        assert!(rounds < 100_000);
        let mut moved = l.pump();
        if lost.is_empty() && l.handed.len() >= 25 {
            // A new channel mid-file, with the window full of frames.
            lost = l.new_channel();
            assert!(!lost.is_empty());
            continue;
        }
        // The receiver is slower than the sender: 1.5 MiB a round.
        moved += l.receive(24);
        moved += l.answer();
        assert!(
            moved > 0,
            "deadlock: {} blocks handed out, {} ahead of the ack, sender {:?}, receiver {:?}",
            l.handed.len(),
            l.started - l.acked,
            l.out.state(),
            l.inc.state()
        );
    }
    assert_eq!(l.disk, l.content, "the file arrived whole");
    assert_eq!(l.max_ahead, WINDOW, "the window was reached, never passed");
    assert!(l.acks >= 50 / 4, "{} acks", l.acks);
    assert_eq!(l.wants, vec![48], "the damaged block was wanted");
    // Every block handed out once, again if it was lost with the channel or
    // damaged, and no more.
    let mut count: HashMap<u64, usize> = HashMap::new();
    for b in &l.handed {
        *count.entry(*b).or_default() += 1;
    }
    for b in 0..51u64 {
        let want = 1 + usize::from(lost.contains(&b)) + usize::from(b == 48);
        assert_eq!(count.get(&b), Some(&want), "block {b}");
    }
    assert_eq!(count.len(), 51);
}
