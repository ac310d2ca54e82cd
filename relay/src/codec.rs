//! Wire formats. Control messages (Binding, Allocate, Refresh,
//! CreatePermission, ChannelBind and their responses) go through the
//! `stun_codec` crate. The data path (ChannelData, Send and Data
//! indications) is parsed and written here without allocating: those are
//! the packets a relay moves by the million, and they carry only two
//! attributes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use stun_codec::rfc5766::attributes::{
    Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayAddress,
};
use stun_codec::rfc8656::attributes::RequestedAddressFamily;
use stun_codec::{Message, MessageDecoder, MessageEncoder};

stun_codec::define_attribute_enums!(
    Attr,
    AttrDecoder,
    AttrEncoder,
    [
        Username,
        Realm,
        Nonce,
        MessageIntegrity,
        Fingerprint,
        ErrorCode,
        Software,
        UnknownAttributes,
        XorMappedAddress,
        ChannelNumber,
        Lifetime,
        XorPeerAddress,
        Data,
        XorRelayAddress,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        RequestedAddressFamily
    ]
);

pub type Msg = Message<Attr>;

/// CHANNEL-NUMBER over the whole ChannelData range. stun_codec's own type
/// refuses numbers above 0x4FFF (RFC 8656), which fails the whole ChannelBind
/// of RFC 5766 clients that pick from 0x4000-0x7FFF; the range is checked in
/// the core instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelNumber(pub u16);

impl ChannelNumber {
    pub const CODEPOINT: u16 = 0x000C;

    pub fn value(self) -> u16 {
        self.0
    }
}

impl stun_codec::Attribute for ChannelNumber {
    type Decoder = ChannelNumberDecoder;
    type Encoder = ChannelNumberEncoder;

    fn get_type(&self) -> stun_codec::AttributeType {
        stun_codec::AttributeType::new(Self::CODEPOINT)
    }
}

#[derive(Debug, Default)]
pub struct ChannelNumberDecoder(bytecodec::fixnum::U32beDecoder);

impl bytecodec::Decode for ChannelNumberDecoder {
    type Item = ChannelNumber;

    fn decode(&mut self, buf: &[u8], eos: bytecodec::Eos) -> bytecodec::Result<usize> {
        self.0.decode(buf, eos)
    }

    fn finish_decoding(&mut self) -> bytecodec::Result<ChannelNumber> {
        // The number is the high 16 bits; the rest is RFFU.
        self.0
            .finish_decoding()
            .map(|v| ChannelNumber((v >> 16) as u16))
    }

    fn requiring_bytes(&self) -> bytecodec::ByteCount {
        self.0.requiring_bytes()
    }

    fn is_idle(&self) -> bool {
        self.0.is_idle()
    }
}

impl bytecodec::TryTaggedDecode for ChannelNumberDecoder {
    type Tag = stun_codec::AttributeType;

    fn try_start_decoding(&mut self, tag: Self::Tag) -> bytecodec::Result<bool> {
        Ok(tag.as_u16() == ChannelNumber::CODEPOINT)
    }
}

#[derive(Debug, Default)]
pub struct ChannelNumberEncoder(bytecodec::fixnum::U32beEncoder);

impl bytecodec::Encode for ChannelNumberEncoder {
    type Item = ChannelNumber;

    fn encode(&mut self, buf: &mut [u8], eos: bytecodec::Eos) -> bytecodec::Result<usize> {
        self.0.encode(buf, eos)
    }

    fn start_encoding(&mut self, item: ChannelNumber) -> bytecodec::Result<()> {
        self.0.start_encoding(u32::from(item.0) << 16)
    }

    fn requiring_bytes(&self) -> bytecodec::ByteCount {
        self.0.requiring_bytes()
    }

    fn is_idle(&self) -> bool {
        self.0.is_idle()
    }
}

impl bytecodec::SizedEncode for ChannelNumberEncoder {
    fn exact_requiring_bytes(&self) -> u64 {
        self.0.exact_requiring_bytes()
    }
}

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;
const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
const ATTR_DATA: u16 = 0x0013;
/// Channel numbers a client may bind. RFC 8656 §12 narrowed the range to
/// 0x4000-0x4FFF, but RFC 5766 clients (coturn's among them) still pick up
/// to 0x7FFF, and ChannelData framing covers the whole range, so accept it.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;

/// What a datagram (or a TCP frame) from a client is, judged by its first
/// bytes only.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    ChannelData { channel: u16, data: &'a [u8] },
    Stun,
    Invalid,
}

pub fn classify(buf: &[u8]) -> Packet<'_> {
    if buf.len() < 4 {
        return Packet::Invalid;
    }
    match buf[0] >> 6 {
        0b01 => {
            let channel = u16::from_be_bytes([buf[0], buf[1]]);
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            // Padding after the data is allowed (and required over TCP).
            match buf.get(4..4 + len) {
                Some(data) => Packet::ChannelData { channel, data },
                None => Packet::Invalid,
            }
        }
        0b00 if buf.len() >= HEADER_LEN
            && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE =>
        {
            Packet::Stun
        }
        _ => Packet::Invalid,
    }
}

/// The bytes on a stream are neither STUN nor ChannelData.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream is not STUN or ChannelData")]
pub struct NotTurn;

/// Length of the complete frame at the start of a TCP stream buffer, if
/// enough of it is there to tell.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, NotTurn> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    match buf[0] >> 6 {
        0b00 => Ok(Some(HEADER_LEN + len)),
        // Over TCP, ChannelData is padded to a multiple of four bytes.
        0b01 => Ok(Some(4 + len.div_ceil(4) * 4)),
        _ => Err(NotTurn),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a STUN message at all: drop it.
    #[error("not a STUN message")]
    Garbage,
    /// A STUN message whose attributes could not be decoded; a request
    /// still deserves a 400 with this transaction id.
    #[error("malformed STUN message")]
    Broken {
        class: stun_codec::MessageClass,
        method: stun_codec::Method,
        transaction_id: stun_codec::TransactionId,
    },
}

pub fn decode(buf: &[u8]) -> Result<Msg, DecodeError> {
    match MessageDecoder::<Attr>::new().decode_from_bytes(buf) {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(broken)) => Err(DecodeError::Broken {
            class: broken.class(),
            method: broken.method(),
            transaction_id: broken.transaction_id(),
        }),
        Err(_) => Err(DecodeError::Garbage),
    }
}

pub fn encode(msg: Msg) -> Vec<u8> {
    // Encoding a message we built ourselves fails only on a bug.
    MessageEncoder::<Attr>::new()
        .encode_into_bytes(msg)
        .expect("our own STUN messages encode")
}

/// The peer address and payload of a Send indication, or `None` if `buf`
/// is not a well-formed one.
pub fn parse_send_indication(buf: &[u8]) -> Option<(SocketAddr, &[u8])> {
    if buf.len() < HEADER_LEN || u16::from_be_bytes([buf[0], buf[1]]) != SEND_INDICATION {
        return None;
    }
    let body_len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE
        || !body_len.is_multiple_of(4)
        || buf.len() < HEADER_LEN + body_len
    {
        return None;
    }
    let txid = &buf[8..20];
    let mut rest = &buf[HEADER_LEN..HEADER_LEN + body_len];
    let (mut peer, mut data) = (None, None);
    while rest.len() >= 4 {
        let ty = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len)?;
        match ty {
            ATTR_XOR_PEER_ADDRESS if peer.is_none() => peer = Some(read_xor_addr(value, txid)?),
            ATTR_DATA if data.is_none() => data = Some(value),
            _ => {}
        }
        rest = rest.get(4 + len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    Some((peer?, data?))
}

fn read_xor_addr(v: &[u8], txid: &[u8]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (v[1], v.len()) {
        (1, 8) => {
            let mut a = [0u8; 4];
            for i in 0..4 {
                a[i] = v[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        (2, 20) => {
            let mut a = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                a[i] = v[4 + i] ^ k;
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

fn write_xor_addr(out: &mut Vec<u8>, addr: SocketAddr, txid: &[u8; 12]) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let xport = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&xport.to_be_bytes());
            for (b, k) in ip.octets().iter().zip(cookie) {
                out.push(b ^ k);
            }
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&[0, 2]);
            out.extend_from_slice(&xport.to_be_bytes());
            for (i, b) in ip.octets().iter().enumerate() {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                out.push(b ^ k);
            }
        }
    }
}

/// Write a Data indication carrying `data` from `peer` into `out`
/// (cleared first; its capacity is reused).
pub fn write_data_indication(out: &mut Vec<u8>, txid: &[u8; 12], peer: SocketAddr, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&DATA_INDICATION.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    write_xor_addr(out, peer, txid);
    out.extend_from_slice(&ATTR_DATA.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
    let body = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&body.to_be_bytes());
}

/// Write a ChannelData message into `out`; `pad` for stream transports.
pub fn write_channel_data(out: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) {
    out.clear();
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_codec::rfc5389::methods::BINDING;
    use stun_codec::MessageClass;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // RFC 5769 §2.1: sample request with short-term credentials.
    const SAMPLE_REQUEST: &str = "
        00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
        00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
        00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20 00 08 00 14
        9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
        80 28 00 04 e5 7a 3b cf";

    // RFC 5769 §2.2: sample IPv4 response.
    const SAMPLE_IPV4_RESPONSE: &str = "
        01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 00 20 00 08
        00 01 a1 47 e1 12 a6 43 00 08 00 14 2b 91 f5 99 fd 9e 90 c3
        8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7 80 28 00 04 c0 7d 4c 96";

    // RFC 5769 §2.3: sample IPv6 response.
    const SAMPLE_IPV6_RESPONSE: &str = "
        01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 00 20 00 14
        00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
        00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75
        bf e3 ed 41 80 28 00 04 c8 fb 0b 4c";

    // RFC 5769 §2.4: request with long-term credentials (the username is
    // "マトリックス", realm "example.org", password "TheMatrIX").
    const SAMPLE_LONG_TERM: &str = "
        00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
        00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3
        82 b9 00 00 00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36
        4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41 00 14 00 0b
        65 78 61 6d 70 6c 65 2e 6f 72 67 00 00 08 00 14 f6 70 24 65
        6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

    #[test]
    fn rfc5769_sample_request_checks_with_its_password() {
        let buf = hex(SAMPLE_REQUEST);
        assert_eq!(classify(&buf), Packet::Stun);
        let msg = decode(&buf).unwrap();
        assert_eq!(msg.class(), MessageClass::Request);
        assert_eq!(msg.method(), BINDING);
        assert_eq!(msg.get_attribute::<Username>().unwrap().name(), "evtj:h6vY");
        let mi = msg.get_attribute::<MessageIntegrity>().unwrap();
        mi.check_short_term_credential("VOkJxbRl1RmTxUk/WvJxBt")
            .unwrap();
        assert!(mi.check_short_term_credential("wrong").is_err());
    }

    #[test]
    fn rfc5769_sample_responses_carry_the_mapped_address() {
        let v4 = decode(&hex(SAMPLE_IPV4_RESPONSE)).unwrap();
        assert_eq!(
            v4.get_attribute::<XorMappedAddress>().unwrap().address(),
            "192.0.2.1:32853".parse().unwrap()
        );
        v4.get_attribute::<MessageIntegrity>()
            .unwrap()
            .check_short_term_credential("VOkJxbRl1RmTxUk/WvJxBt")
            .unwrap();
        let v6 = decode(&hex(SAMPLE_IPV6_RESPONSE)).unwrap();
        assert_eq!(
            v6.get_attribute::<XorMappedAddress>().unwrap().address(),
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        );
        v6.get_attribute::<MessageIntegrity>()
            .unwrap()
            .check_short_term_credential("VOkJxbRl1RmTxUk/WvJxBt")
            .unwrap();
    }

    #[test]
    fn rfc5769_long_term_request_checks_with_its_key() {
        let msg = decode(&hex(SAMPLE_LONG_TERM)).unwrap();
        let user = msg.get_attribute::<Username>().unwrap();
        let realm = msg.get_attribute::<Realm>().unwrap();
        assert_eq!(user.name(), "マトリックス");
        assert_eq!(realm.text(), "example.org");
        assert_eq!(
            msg.get_attribute::<Nonce>().unwrap().value(),
            "f//499k954d6OL34oL9FSTvy64sA"
        );
        let mi = msg.get_attribute::<MessageIntegrity>().unwrap();
        mi.check_long_term_credential(user, realm, "TheMatrIX")
            .unwrap();
        assert!(mi
            .check_long_term_credential(user, realm, "thematrix")
            .is_err());
    }

    #[test]
    fn corrupted_vectors_fail_the_fingerprint() {
        let mut buf = hex(SAMPLE_REQUEST);
        buf[30] ^= 1; // inside SOFTWARE
        assert!(decode(&buf).is_err());
    }

    #[test]
    fn data_indications_round_trip_through_the_send_parser() {
        let txid = [7u8; 12];
        for peer in ["198.51.100.7:4242", "[2001:db8::9]:65000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            for len in [0usize, 1, 3, 4, 1200] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut out = Vec::new();
                write_data_indication(&mut out, &txid, peer, &payload);
                assert_eq!(out.len() % 4, 0);
                // Same layout as a Send indication but for the type.
                out[1] = 0x16;
                let (p, d) = parse_send_indication(&out).unwrap();
                assert_eq!((p, d), (peer, &payload[..]));
                // And the codec agrees.
                out[1] = 0x17;
                let msg = decode(&out).unwrap();
                assert_eq!(
                    msg.get_attribute::<XorPeerAddress>().unwrap().address(),
                    peer
                );
                assert_eq!(msg.get_attribute::<Data>().unwrap().data(), &payload[..]);
            }
        }
    }

    #[test]
    fn channel_data_framing() {
        let mut out = Vec::new();
        write_channel_data(&mut out, 0x4001, b"hello", true);
        assert_eq!(out.len(), 12);
        assert_eq!(frame_len(&out), Ok(Some(12)));
        assert_eq!(
            classify(&out),
            Packet::ChannelData {
                channel: 0x4001,
                data: b"hello"
            }
        );
        write_channel_data(&mut out, 0x4001, b"hello", false);
        assert_eq!(out.len(), 9);
        assert_eq!(classify(&out[..8]), Packet::Invalid);
        assert_eq!(frame_len(&[0xff, 0, 0, 0]), Err(NotTurn));
    }

    #[test]
    fn truncated_and_garbage_inputs_are_refused() {
        assert_eq!(classify(&[]), Packet::Invalid);
        assert_eq!(classify(&[0, 1, 0]), Packet::Invalid);
        assert!(parse_send_indication(&[0, 0x16, 0, 4]).is_none());
        let mut send = Vec::new();
        write_data_indication(&mut send, &[1; 12], "1.2.3.4:5".parse().unwrap(), b"xy");
        send[1] = 0x16;
        for cut in 0..send.len() {
            let _ = parse_send_indication(&send[..cut]);
            let _ = decode(&send[..cut]);
        }
    }
}
