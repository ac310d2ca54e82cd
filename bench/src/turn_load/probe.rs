//! The payload of every data packet: a marker, the sending allocation, a
//! sequence number and the send time, padded to the configured size. The
//! receiver needs nothing else to count the packet and time it.

/// Marks our probes among whatever else arrives.
const MAGIC: u32 = 0x544c_4430; // "TLD0"
pub const HEADER: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub alloc: u32,
    pub seq: u32,
    /// Nanoseconds since the run's shared start instant.
    pub sent_ns: u64,
}

/// Write `p` into the first `HEADER` bytes of `buf`, which must be at least
/// that long; the rest (padding) is left as it is.
pub fn write(buf: &mut [u8], p: Probe) {
    buf[..4].copy_from_slice(&MAGIC.to_be_bytes());
    buf[4..8].copy_from_slice(&p.alloc.to_be_bytes());
    buf[8..12].copy_from_slice(&p.seq.to_be_bytes());
    buf[12..20].copy_from_slice(&p.sent_ns.to_be_bytes());
}

pub fn read(buf: &[u8]) -> Option<Probe> {
    let b = buf.get(..HEADER)?;
    if u32::from_be_bytes(b[..4].try_into().ok()?) != MAGIC {
        return None;
    }
    Some(Probe {
        alloc: u32::from_be_bytes(b[4..8].try_into().ok()?),
        seq: u32::from_be_bytes(b[8..12].try_into().ok()?),
        sent_ns: u64::from_be_bytes(b[12..20].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let p = Probe {
            alloc: 7,
            seq: 9,
            sent_ns: 123_456_789_012,
        };
        let mut buf = [0xAAu8; 64];
        write(&mut buf, p);
        assert_eq!(read(&buf), Some(p));
        assert_eq!(read(&buf[..19]), None);
        buf[0] ^= 1;
        assert_eq!(read(&buf), None);
    }
}
