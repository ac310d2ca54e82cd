//! The fuzz entry point (`fuzz/`, `cargo fuzz run stun_parser`), also
//! run over a fixed corpus by the unit tests so CI exercises it.

use std::net::SocketAddr;
use std::time::Instant;

use crate::allocation::{ClientAddr, RelayId, Transport};
use crate::codec;
use crate::config::Secret;
use crate::core::{Core, CoreConfig, Io};
use crate::metrics::RelayMetrics;

struct NullIo;

impl Io for NullIo {
    fn send_to_client(&mut self, _: &ClientAddr, _: &[u8]) {}
    fn send_to_peer(&mut self, _: RelayId, _: SocketAddr, _: &[u8]) {}
    fn open_relay(&mut self, _: &ClientAddr, _: bool, _: bool) -> Option<(RelayId, SocketAddr)> {
        Some((1, "192.0.2.1:50000".parse().expect("literal")))
    }
    fn close_relay(&mut self, _: RelayId) {}
}

/// Feed `data` to every parser and to a fresh core, as a client datagram, a
/// TCP stream and a peer datagram. Must never panic.
pub fn one_input(data: &[u8]) {
    let _ = codec::classify(data);
    let _ = codec::decode(data);
    let _ = codec::parse_send_indication(data);
    let _ = codec::frame_len(data);
    let now = Instant::now();
    let mut core = Core::new(
        CoreConfig::new("tallow", Secret::new("fuzz")),
        RelayMetrics::default(),
        now,
    );
    let mut io = NullIo;
    for transport in [Transport::Udp, Transport::Tcp] {
        let client = ClientAddr {
            transport,
            addr: "198.51.100.1:4000".parse().expect("literal"),
        };
        core.on_client(&mut io, &client, data, now);
    }
    core.on_peer(
        &mut io,
        1,
        "203.0.113.1:9".parse().expect("literal"),
        data,
        now,
    );
    core.tick(&mut io, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stand-in for the fuzzer: mutations of valid messages.
    #[test]
    fn mutated_messages_never_panic() {
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        let mut buf = Vec::new();
        codec::write_data_indication(
            &mut buf,
            &[3; 12],
            "198.51.100.2:5".parse().unwrap(),
            b"abc",
        );
        seeds.push(buf.clone());
        buf[1] = 0x16;
        seeds.push(buf.clone());
        codec::write_channel_data(&mut buf, 0x4000, b"hello", true);
        seeds.push(buf.clone());
        // An Allocate request with every attribute type the codec knows.
        seeds.push(vec![
            0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x00, 0x19, 0x00, 0x04, 0x11, 0, 0, 0,
        ]);
        let mut x = 0x9e37_79b9_u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for seed in &seeds {
            one_input(seed);
            for _ in 0..2000 {
                let mut m = seed.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = next() as usize % m.len().max(1);
                    match next() % 4 {
                        0 if !m.is_empty() => m[i] = next() as u8,
                        1 => m.truncate(i),
                        2 => m.insert(i.min(m.len()), next() as u8),
                        _ => m.extend_from_slice(&[next() as u8; 4]),
                    }
                }
                one_input(&m);
            }
        }
    }
}
