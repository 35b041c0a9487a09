//! The frame decoder: `protocol::frame::take_logical` on arbitrary bytes.
//!
//! Checks, beyond "never panics": a packet taken consumes exactly its raw
//! bytes; re-framing its payload from its first sequence id gives back those
//! bytes; "need more" consumes nothing; and feeding the same bytes in small
//! chunks yields the same packets and the same error as feeding them at once.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sqlease::protocol::frame::{put_packet, take_logical, FrameError};

#[derive(Debug, PartialEq)]
enum Step {
    Packet(Vec<u8>),
    Error(FrameError),
}

/// Takes packets until "need more" or an error; `expected` follows the
/// exchange (each packet's next_seq is the next one's expected id).
fn drain(buf: &mut BytesMut, expected: &mut Option<u8>, max: usize, out: &mut Vec<Step>) -> bool {
    loop {
        let before = buf.len();
        match take_logical(buf, *expected, max) {
            Ok(Some(l)) => {
                assert_eq!(before - buf.len(), l.raw.len());
                assert!(l.payload.len() <= max);
                assert_eq!(l.first_seq, l.raw[3]);
                if let Some(e) = *expected {
                    assert_eq!(l.first_seq, e);
                }
                let mut again = BytesMut::new();
                let mut seq = l.first_seq;
                put_packet(&mut again, &mut seq, &l.payload);
                assert_eq!(&again[..], &l.raw[..]);
                assert_eq!(seq, l.next_seq);
                if expected.is_some() {
                    *expected = Some(l.next_seq);
                }
                out.push(Step::Packet(l.raw.to_vec()));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "need-more consumed bytes");
                return true;
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "an error consumed bytes");
                match &e {
                    FrameError::OutOfOrder { expected: w, got } => assert_ne!(w, got),
                    FrameError::TooLarge { len, max: m } => {
                        assert!(len > m);
                        assert_eq!(*m, max);
                    }
                }
                out.push(Step::Error(e));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let check_seq = data[0] & 1 == 1;
    let chunk = usize::from(data[0] >> 1) + 1;
    let start = check_seq.then_some(data[1]);
    let max = match data[2] {
        0xFF => usize::MAX,
        m => usize::from(m) * 64,
    };
    let bytes = &data[3..];

    let mut whole = Vec::new();
    let mut buf = BytesMut::from(bytes);
    let mut exp = start;
    drain(&mut buf, &mut exp, max, &mut whole);

    let mut pieces = Vec::new();
    let mut buf2 = BytesMut::new();
    let mut exp2 = start;
    for c in bytes.chunks(chunk) {
        buf2.extend_from_slice(c);
        if !drain(&mut buf2, &mut exp2, max, &mut pieces) {
            break;
        }
    }
    assert_eq!(whole, pieces);
});
