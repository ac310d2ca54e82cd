//! One seat's inbox: messages from the peer numbered from 1, kept until the
//! seat's client acknowledges them so that a resumed client can be given
//! exactly what it missed. Pure data structure.

use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub seq: u64,
    pub body: Arc<str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mailbox holds {0} unacknowledged messages")]
pub struct MailboxFull(pub usize);

#[derive(Debug)]
pub struct Mailbox {
    cap: usize,
    /// Bytes of message bodies held at most: a count alone would let a
    /// seat pin `cap` times the frame limit.
    max_bytes: usize,
    bytes: usize,
    /// Seq of the last message appended.
    last_seq: u64,
    /// Unacknowledged messages, seqs ascending and contiguous.
    queue: VecDeque<Envelope>,
}

impl Mailbox {
    pub fn new(cap: usize, max_bytes: usize) -> Self {
        Mailbox {
            cap,
            max_bytes,
            bytes: 0,
            last_seq: 0,
            queue: VecDeque::new(),
        }
    }

    pub fn push(&mut self, body: Arc<str>) -> Result<u64, MailboxFull> {
        if self.queue.len() >= self.cap || self.bytes + body.len() > self.max_bytes {
            return Err(MailboxFull(self.queue.len()));
        }
        self.bytes += body.len();
        self.last_seq += 1;
        self.queue.push_back(Envelope {
            seq: self.last_seq,
            body,
        });
        Ok(self.last_seq)
    }

    /// Up to `max` messages with seq greater than `after`, in order.
    pub fn after(&self, after: u64, max: usize) -> Vec<Envelope> {
        let first = self.queue.front().map_or(self.last_seq + 1, |e| e.seq);
        let skip = after.saturating_add(1).saturating_sub(first);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        self.queue.iter().skip(skip).take(max).cloned().collect()
    }

    /// Forget messages up to `seq`. Acks beyond what was appended are clamped.
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.last_seq);
        while self.queue.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = self.queue.pop_front() {
                self.bytes -= e.body.len();
            }
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Lowest seq still held (or the next one to be appended).
    pub fn first_held(&self) -> u64 {
        self.queue.front().map_or(self.last_seq + 1, |e| e.seq)
    }

    /// Bytes of the bodies held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(v: &[Envelope]) -> Vec<u64> {
        v.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn replays_from_any_point_and_trims_on_ack() {
        let mut m = Mailbox::new(4, 1 << 20);
        for i in 0..4 {
            assert_eq!(m.push(Arc::from(format!("m{i}"))), Ok(i + 1));
        }
        assert_eq!(m.push(Arc::from("x")), Err(MailboxFull(4)));
        assert_eq!(seqs(&m.after(0, 10)), vec![1, 2, 3, 4]);
        assert_eq!(seqs(&m.after(2, 10)), vec![3, 4]);
        assert_eq!(seqs(&m.after(1, 2)), vec![2, 3]);
        m.ack(2);
        assert_eq!(m.first_held(), 3);
        assert_eq!(seqs(&m.after(0, 10)), vec![3, 4]);
        assert_eq!(m.push(Arc::from("y")), Ok(5));
        assert_eq!(seqs(&m.after(4, 10)), vec![5]);
        m.ack(99);
        assert!(m.is_empty());
        assert_eq!(m.after(5, 10), vec![]);
        assert_eq!(m.push(Arc::from("z")), Ok(6));
    }

    #[test]
    fn bytes_are_capped_and_freed_by_acks() {
        let mut m = Mailbox::new(100, 10);
        assert_eq!(m.push(Arc::from("abcd")), Ok(1));
        assert_eq!(m.push(Arc::from("efgh")), Ok(2));
        assert_eq!(m.push(Arc::from("ijk")), Err(MailboxFull(2)));
        assert_eq!(m.push(Arc::from("ij")), Ok(3));
        assert_eq!(m.bytes(), 10);
        m.ack(1);
        assert_eq!(m.bytes(), 6);
        assert_eq!(m.push(Arc::from("klmn")), Ok(4));
        assert_eq!(m.push(Arc::from("")), Ok(5));
    }
}
