//! Packet framing: 3-byte little-endian length, 1-byte sequence id, payload.
//!
//! A payload of 16 MiB − 1 bytes continues in the next packet; a payload
//! that is an exact multiple of it is followed by an empty packet. The
//! functions here never panic on short or hostile input: "need more bytes"
//! is `Ok(None)`, malformed input is an error.

use bytes::{Buf, Bytes, BytesMut};

/// Largest payload of one physical packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Size of the packet header.
pub const HEADER_LEN: usize = 4;

/// Header of one physical packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub len: usize,
    /// Sequence id.
    pub seq: u8,
}

/// Parses a header from the first 4 bytes of `buf`.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    let b = buf.get(..HEADER_LEN)?;
    Some(Header {
        len: usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16,
        seq: b[3],
    })
}

/// Appends one logical packet, split into physical packets as needed.
/// `seq` is the id of the first packet and is advanced past the last one.
pub fn put_packet(out: &mut BytesMut, seq: &mut u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.reserve(HEADER_LEN + n);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.extend_from_slice(&[*seq]);
        out.extend_from_slice(&rest[..n]);
        *seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            break;
        }
    }
}

/// Framing errors (the peer is misbehaving; the connection should be closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet out of order: expected sequence id {expected}, got {got}")]
    OutOfOrder { expected: u8, got: u8 },
    #[error("packet of {len} bytes is larger than max_allowed_packet ({max})")]
    TooLarge { len: usize, max: usize },
}

/// One logical packet as received.
#[derive(Debug, Clone)]
pub struct Logical {
    /// The physical packets exactly as received (headers included).
    pub raw: Bytes,
    /// The reassembled payload.
    pub payload: Bytes,
    /// Sequence id of the first physical packet.
    pub first_seq: u8,
    /// Sequence id the next packet of this exchange should carry.
    pub next_seq: u8,
}

/// Takes one complete logical packet from the front of `buf`, if there is one.
///
/// `expected_seq`, when given, is checked against the first packet; later
/// packets of the same logical packet must follow in order. `max` bounds the
/// reassembled payload.
pub fn take_logical(
    buf: &mut BytesMut,
    expected_seq: Option<u8>,
    max: usize,
) -> Result<Option<Logical>, FrameError> {
    // First pass: find the end without consuming.
    let mut off = 0usize;
    let mut total = 0usize;
    let mut seq = None::<u8>;
    let mut frames = 0usize;
    loop {
        let Some(h) = parse_header(&buf[off..]) else {
            return check_partial(buf, off, total, max);
        };
        let want = match seq {
            None => expected_seq,
            Some(s) => Some(s.wrapping_add(1)),
        };
        if let Some(w) = want {
            if h.seq != w {
                return Err(FrameError::OutOfOrder {
                    expected: w,
                    got: h.seq,
                });
            }
        }
        seq = Some(h.seq);
        total += h.len;
        if total > max {
            return Err(FrameError::TooLarge { len: total, max });
        }
        if buf.len() < off + HEADER_LEN + h.len {
            return Ok(None);
        }
        off += HEADER_LEN + h.len;
        frames += 1;
        if h.len < MAX_PAYLOAD {
            break;
        }
    }
    let first_seq = buf[3];
    let last_seq = seq.unwrap_or(first_seq);
    let raw = buf.split_to(off).freeze();
    let payload = if frames == 1 {
        raw.slice(HEADER_LEN..)
    } else {
        let mut p = BytesMut::with_capacity(total);
        let mut r = &raw[..];
        while r.has_remaining() {
            let Some(h) = parse_header(r) else { break };
            p.extend_from_slice(&r[HEADER_LEN..HEADER_LEN + h.len]);
            r = &r[HEADER_LEN + h.len..];
        }
        p.freeze()
    };
    Ok(Some(Logical {
        raw,
        payload,
        first_seq,
        next_seq: last_seq.wrapping_add(1),
    }))
}

fn check_partial(
    _buf: &BytesMut,
    _off: usize,
    total: usize,
    max: usize,
) -> Result<Option<Logical>, FrameError> {
    if total > max {
        return Err(FrameError::TooLarge { len: total, max });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_multiple_gets_empty_trailer() {
        let payload = vec![7u8; MAX_PAYLOAD];
        let mut out = BytesMut::new();
        let mut seq = 0;
        put_packet(&mut out, &mut seq, &payload);
        assert_eq!(seq, 2);
        assert_eq!(out.len(), 2 * HEADER_LEN + MAX_PAYLOAD);
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 1]);
        let l = take_logical(&mut out, Some(0), usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(l.payload.len(), MAX_PAYLOAD);
        assert_eq!(l.next_seq, 2);
        assert!(out.is_empty());
    }

    #[test]
    fn out_of_order_and_too_large() {
        let mut b = BytesMut::from(&[1u8, 0, 0, 5, 0x0e][..]);
        assert_eq!(
            take_logical(&mut b, Some(0), 100).unwrap_err(),
            FrameError::OutOfOrder {
                expected: 0,
                got: 5
            }
        );
        let mut b = BytesMut::from(&[0xFFu8, 0xFF, 0x0F, 0][..]);
        assert!(matches!(
            take_logical(&mut b, Some(0), 1000),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn partial_needs_more() {
        let mut b = BytesMut::from(&[3u8, 0, 0, 0, 1, 2][..]);
        assert!(take_logical(&mut b, Some(0), 100).unwrap().is_none());
        assert_eq!(b.len(), 6);
    }

    proptest! {
        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..3000), seq0 in any::<u8>()) {
            let mut out = BytesMut::new();
            let mut seq = seq0;
            put_packet(&mut out, &mut seq, &payload);
            let l = take_logical(&mut out, Some(seq0), usize::MAX).unwrap().unwrap();
            prop_assert_eq!(&l.payload[..], &payload[..]);
            prop_assert_eq!(l.next_seq, seq);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = BytesMut::from(&bytes[..]);
            let _ = take_logical(&mut b, None, 1 << 20);
        }

        /// Several packets of one exchange, fed in chunks of any size: the
        /// same payloads come out, "need more" consumes nothing.
        #[test]
        fn chunked_exchange_round_trip(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
            seq0 in any::<u8>(),
            chunk in 1usize..64,
        ) {
            let mut wire = BytesMut::new();
            let mut seq = seq0;
            for p in &payloads {
                put_packet(&mut wire, &mut seq, p);
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut expected = seq0;
            for c in wire.chunks(chunk) {
                buf.extend_from_slice(c);
                loop {
                    let before = buf.len();
                    match take_logical(&mut buf, Some(expected), 4096).unwrap() {
                        Some(l) => {
                            prop_assert_eq!(l.first_seq, expected);
                            expected = l.next_seq;
                            got.push(l.payload.to_vec());
                        }
                        None => {
                            prop_assert_eq!(buf.len(), before);
                            break;
                        }
                    }
                }
            }
            prop_assert_eq!(got, payloads);
            prop_assert_eq!(expected, seq);
            prop_assert!(buf.is_empty());
        }

        /// A packet taken from arbitrary bytes re-frames to the same bytes.
        #[test]
        fn taken_packet_reframes_identically(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut b = BytesMut::from(&bytes[..]);
            if let Ok(Some(l)) = take_logical(&mut b, None, 1 << 20) {
                let mut again = BytesMut::new();
                let mut seq = l.first_seq;
                put_packet(&mut again, &mut seq, &l.payload);
                prop_assert_eq!(&again[..], &l.raw[..]);
                prop_assert_eq!(seq, l.next_seq);
                prop_assert_eq!(l.raw.len() + b.len(), bytes.len());
            }
        }

        /// A wrong sequence id is an error whatever the payload, and
        /// consumes nothing.
        #[test]
        fn wrong_sequence_rejected(payload in proptest::collection::vec(any::<u8>(), 0..100), seq in any::<u8>(), delta in 1u8..=255) {
            let mut wire = BytesMut::new();
            let mut s = seq;
            put_packet(&mut wire, &mut s, &payload);
            let len = wire.len();
            let want = seq.wrapping_add(delta);
            prop_assert_eq!(
                take_logical(&mut wire, Some(want), 4096).unwrap_err(),
                FrameError::OutOfOrder { expected: want, got: seq }
            );
            prop_assert_eq!(wire.len(), len);
        }
    }
}
